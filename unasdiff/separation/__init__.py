"""Separation of a mixture with diffusion source priors.

    from unasdiff.separation import separate
    sources = separate(mixture, [speech_net, sound_net], labels=[None, 23])   # [B, L] -> [B, K, L]
"""

from collections.abc import Mapping, Sequence

import torch

from ..audio import is_silent
from ..diffusion import DiffusionSchedule
from .alignment import align_samples_by_segment, interchangeable_groups
from .consistency import CONSISTENCY, mixture_consistent
from .guidance import RULES, make_rule
from .objective import ReconstructionObjective
from .priors import Prior, SourcePriors
from .sampler import INITS, guided_step, sample

__all__ = ["separate", "SourcePriors", "ReconstructionObjective", "DiffusionSchedule", "RULES", "INITS",
           "CONSISTENCY", "guided_step", "sample", "make_rule", "mixture_consistent"]


def separate(
    mixture: torch.Tensor,
    priors: Sequence[Prior],
    labels: Sequence[int | None] | None = None,
    *,
    method: str = "hybrid",
    steps: int = 200,
    init: str = "mixture",
    n_samples: int = 1,
    consistency: str = "none",
    label_guidance: float = 0.0,
    generator: torch.Generator | None = None,
    init_step: int = 149,
    start_step: int | None = None,
    objective: ReconstructionObjective | Mapping | None = None,
    schedule: DiffusionSchedule | None = None,
    return_samples: bool = False,
    progress: bool = False,
    segment: int | None = None,
    **rule_params,
):
    """Separate mixtures [B, L] (or [L]) into K = len(priors) sources -> [B, K, L] (or [K, L]).

    priors: callables `(x_t [B, L], t [B], label [B] | None) -> eps [B, L]`, t = 5 x step index;
        the same object may serve several sources (one batched call).
    labels: one class index (or None) per source.
    method: "hybrid" (the paper), "dps", "dsg", "msdm_dirac", "undiff", or "none"; `rule_params` are
        that rule's settings (e.g. floor=0.002 for hybrid, zeta=1.0 for dps).
    steps: network calls per source (a respaced subsequence of the 200-step schedule).
    init: "mixture" (y noised to `init_step`), "noise" or "raw_mixture"; the loop starts at
        `start_step` (default the last step, as in the reference).
    n_samples: posterior samples per mixture; the result is their average (the Monte-Carlo posterior
        mean), and `return_samples=True` also returns them all as [B, M, K, L]. Sources that share a
        prior and a label are interchangeable: each sample's are reordered to agree before the average,
        in each `segment` on its own (alignment.py).
    consistency: "none" (as the reference), "equal" or "wiener": hand the part of the mixture the
        estimate leaves out back to the sources, so that they sum to it; "mask": filter the mixture with
        the estimates' powers (consistency.py); the returned samples get no consistency step.
    label_guidance: classifier-free guidance weight w for the sources with a label (priors.py); 0: none.
    segment: guide each `segment` samples (L a multiple of it) as a mixture of its own (sampler.guided_step).
    Silent mixtures give silent sources.
    """
    squeeze = mixture.dim() == 1
    mixture = mixture[None] if squeeze else mixture
    if mixture.dim() != 2:
        raise ValueError(f"mixture must be [B, L] or [L], got shape {tuple(mixture.shape)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if consistency not in CONSISTENCY:
        raise ValueError(f"unknown consistency {consistency!r}; choose one of {', '.join(CONSISTENCY)}")
    full = schedule or DiffusionSchedule.linear()
    schedule = full.respaced(steps)
    if not isinstance(objective, ReconstructionObjective):
        objective = ReconstructionObjective(**(objective or {}))
    rule = make_rule(method, stride=len(full) / len(schedule), **rule_params)
    source_priors = SourcePriors(priors, labels, label_guidance)
    batch, length = mixture.shape
    k = len(source_priors)

    samples = torch.zeros(batch, n_samples, k, length, device=mixture.device, dtype=mixture.dtype)
    active = ~is_silent(mixture)
    if active.any():
        repeated = mixture[active].repeat_interleave(n_samples, dim=0)  # the M samples of a mixture are adjacent
        out = sample(source_priors, repeated, schedule, rule, objective, init=init, init_step=init_step,
                     start_step=start_step, generator=generator, progress=progress, segment=segment)
        samples[active] = align_samples_by_segment(out.view(-1, n_samples, k, length),
                                                   interchangeable_groups(source_priors.priors, source_priors.labels),
                                                   segment)
    estimate = samples.mean(dim=1)
    if active.any():
        estimate[active] = mixture_consistent(estimate[active], mixture[active], consistency)
    if squeeze:
        estimate, samples = estimate[0], samples[0]
    return (estimate, samples) if return_samples else estimate
