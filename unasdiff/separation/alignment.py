"""The order of interchangeable sources: across posterior samples, and across windows of long audio.

Two sources with the same prior and the same label (two speakers under one speech prior, two sounds under
an unconditional sound prior) have a posterior that is unchanged by swapping them, so each sample, and each
window of a long file, separates them in an order of its own (label switching, as in Bayesian mixture
models: Stephens, 2000). Averaged as drawn, samples that disagree on the order blur both estimates towards
the same mix of the two, and windows joined as drawn swap the sources mid-file. Reordered first, each
group of interchangeable sources to agree best (SI-SDR) with a reference, they keep the sources apart. The
windows of a block (windows.py) are reordered each on its own too: a sample's order may change between them.
"""

from collections.abc import Sequence

import torch

from ..metrics import best_permutation, permute_sources


def interchangeable_groups(priors: Sequence, labels: Sequence[int | None]) -> list[list[int]]:
    """Indices of the sources that share one prior object and one label, in groups of two or more."""
    groups: dict[tuple, list[int]] = {}
    for k, (prior, label) in enumerate(zip(priors, labels)):
        groups.setdefault((id(prior), label), []).append(k)
    return [group for group in groups.values() if len(group) > 1]


def best_group_order(estimate: torch.Tensor, reference: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """For estimates and references [N, K, L], the source order [N, K] (for permute_sources) that permutes
    each group's sources to agree best with the reference's and leaves every other source in place."""
    order = torch.arange(estimate.shape[1], device=estimate.device).repeat(estimate.shape[0], 1)
    for group in groups:
        index = torch.tensor(group, device=estimate.device)
        order[:, index] = index[best_permutation(estimate[:, index], reference[:, index])]
    return order


def align_samples(samples: torch.Tensor, groups: list[list[int]], passes: int = 2,
                  reference: torch.Tensor | None = None) -> torch.Tensor:
    """samples [B, M, K, L] (M samples of each of B mixtures) with each group's sources reordered in every
    sample to agree with a reference: `reference` [B, K, L] or else the first sample, then the mean of the
    reordered samples."""
    if samples.shape[1] < 2 or not groups:
        return samples
    batch, count, k, length = samples.shape
    drawn = samples.reshape(batch * count, k, length)
    aligned = drawn
    reference = samples[:, 0] if reference is None else reference
    for _ in range(passes):
        aligned = permute_sources(drawn, best_group_order(drawn, reference.repeat_interleave(count, dim=0), groups))
        reference = aligned.view_as(samples).mean(dim=1)
    return aligned.view_as(samples)


def align_samples_by_segment(samples: torch.Tensor, groups: list[list[int]], segment: int | None) -> torch.Tensor:
    """align_samples over the whole length, then again in each `segment` samples (the windows of a block) on
    its own, to that segment of the mean of the whole-length alignment: a sample may separate a group in
    one order in one window of a block and in the other order in the next."""
    aligned = align_samples(samples, groups)
    if segment is None or segment == samples.shape[-1] or samples.shape[1] < 2 or not groups:
        return aligned
    batch = samples.shape[0]

    def by_segment(x: torch.Tensor) -> torch.Tensor:  # [B, ..., K, L] -> [B * L / segment, ..., K, segment]
        return x.unflatten(-1, (-1, segment)).movedim(-2, 1).flatten(0, 1)

    parts = align_samples(by_segment(aligned), groups, reference=by_segment(aligned.mean(dim=1)))
    return parts.unflatten(0, (batch, -1)).movedim(1, -2).flatten(-2)
