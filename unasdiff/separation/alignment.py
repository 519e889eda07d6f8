"""Averaging posterior samples of interchangeable sources.

Two sources with the same prior and the same label (two speakers under one speech prior, two sounds under
an unconditional sound prior) have a posterior that is unchanged by swapping them, so each sample separates
them in an order of its own (label switching, as in Bayesian mixture models: Stephens, 2000). Averaged as
drawn, samples that disagree on the order blur both estimates towards the same mix of the two. Relabelled
first, each sample's interchangeable sources permuted to agree best (SI-SDR) with a reference, the average
keeps them apart: the reference is the first sample, then the mean of the relabelled samples.
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


def align_samples(samples: torch.Tensor, groups: list[list[int]], passes: int = 2) -> torch.Tensor:
    """samples [B, M, K, L] (M samples of each of B mixtures) with each group's sources reordered in every
    sample to agree with the reference; sources outside the groups are untouched."""
    if samples.shape[1] < 2 or not groups:
        return samples
    samples = samples.clone()
    batch, count, _, length = samples.shape
    for group in groups:
        part = samples[:, :, group]  # [B, M, g, L]
        reference = part[:, 0]
        for _ in range(passes):
            drawn = part.reshape(batch * count, len(group), length)
            order = best_permutation(drawn, reference.repeat_interleave(count, dim=0))
            part = permute_sources(drawn, order).view_as(part)
            reference = part.mean(dim=1)
        samples[:, :, group] = part
    return samples
