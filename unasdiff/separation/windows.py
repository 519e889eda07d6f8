"""Separating audio of any length in overlapping windows of the length the priors were trained on.

Windows are separated a batch at a time and overlap-added with a Hann cross-fade normalised by the
sum of the weights, so the joins have no seams and memory does not grow with the number of windows.
Where the source order is arbitrary (interchangeable sources: the same prior and label, alignment.py),
each window's are first reordered to agree with the previous window on their shared part.

Priors with no length limit (the spectral-template priors are frame models) can take long blocks instead
(`guided_blocks`): blocks of whole windows that cover the recording, so that only the blocks overlap; each
block's windows are guided as if separated on their own (sampler.guided_step's `segment`) while the priors
see the whole block, and a recording up to one window long is one block of its own length.
"""

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..metrics import permute_sources
from .alignment import best_group_order

SeparateFn = Callable[[torch.Tensor], torch.Tensor]  # windows [N, W] -> sources [N, K, W]


def window_starts(length: int, window: int, hop: int) -> list[int]:
    """Starts of the windows that cover [0, length); the last one may run past the end (zero-padded)."""
    if length <= window:
        return [0]
    count = -(-(length - window) // hop) + 1
    return [i * hop for i in range(count)]


def guided_blocks(length: int, window: int, overlap: float, block: int) -> tuple[int, float, int]:
    """(block length, its overlap as a fraction, guidance segment) for as few blocks of up to about `block`
    samples as cover `length`, each made of whole segments of about `window`, sharing what windows overlapping by
    the fraction `overlap` share; a recording up to `block` long is one block of its own length."""
    shared = round(overlap * window)
    count = max(1, -(-(length - shared) // (block - shared)))  # blocks
    tiled = -(-(length + (count - 1) * shared) // count)  # count * tiled - (count - 1) * shared >= length
    per_block = max(1, round(tiled / window))
    segment = -(-tiled // per_block)
    return per_block * segment, shared / (per_block * segment), segment


def window_hop(window: int, overlap: float) -> int:
    """Samples from one window's start to the next's."""
    return max(1, round(window * (1 - overlap)))


def separate_in_windows(mixture: torch.Tensor, separate_fn: SeparateFn, window: int, overlap: float,
                        batch: int = 4, groups: list[list[int]] = (), progress: bool = False) -> torch.Tensor:
    """mixture [L] -> sources [K, L]. Inputs shorter than a window are zero-padded to one window. `groups`:
    the indices of interchangeable sources, kept in one order across windows."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"window overlap must be in [0, 1), got {overlap}")
    length = mixture.shape[-1]
    hop = window_hop(window, overlap)
    starts = window_starts(length, window, hop)
    padded = torch.nn.functional.pad(mixture, (0, starts[-1] + window - length))
    fade = _crossfade(window, window - hop, mixture) if len(starts) > 1 else torch.ones(window, dtype=mixture.dtype,
                                                                                           device=mixture.device)
    total = weights = previous = None
    for first in tqdm(range(0, len(starts), batch), desc="windows", disable=not progress or len(starts) == 1,
                      leave=False):
        chunk_starts = starts[first:first + batch]
        sources = separate_fn(torch.stack([padded[s:s + window] for s in chunk_starts]))  # [N, K, W]
        if total is None:
            total = torch.zeros(sources.shape[1], padded.shape[-1], dtype=sources.dtype, device=sources.device)
            weights = torch.zeros(padded.shape[-1], dtype=sources.dtype, device=sources.device)
        for start, est in zip(chunk_starts, sources):
            if groups and previous is not None:
                shared = window - hop
                est = permute_sources(est[None], best_group_order(est[None, :, :shared], previous[None, :, hop:],
                                                                   groups))[0]
            previous = est
            total[:, start:start + window] += fade * est
            weights[start:start + window] += fade
    return (total / weights.clamp_min(1e-8))[:, :length]


def _crossfade(window: int, shared: int, like: torch.Tensor) -> torch.Tensor:
    """Flat in the middle, raised-cosine ramps over the shared parts (never exactly zero)."""
    fade = torch.ones(window, dtype=like.dtype, device=like.device)
    if shared > 0:
        position = torch.arange(shared, dtype=like.dtype, device=like.device) + 0.5
        ramp = 0.5 - 0.5 * torch.cos(torch.pi * position / shared)
        fade[:shared] = ramp
        fade[-shared:] = ramp.flip(0)
    return fade
