"""Separation scores on torch tensors [..., K, L] (sources on axis -2), batched.

SI-SDR is computed on zero-mean signals (Le Roux et al., 2019). SDR is the BSS-eval v4 source-to-
distortion ratio with a 512-tap distortion filter per source, from fast_bss_eval. Leakage says where the
errors are: how much of the other sources' own time-frequency bins an estimate holds. The swap share says
whether an estimate follows one source: the share of half-second segments in which it is another's.
"""

import itertools
import math

import fast_bss_eval
import torch

EPS = 1e-8
SWAP_SEGMENT_SECONDS = 0.5


def _zero_mean(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=-1, keepdim=True)


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB over the last axis (zero-mean signals)."""
    estimate, reference = _zero_mean(estimate.double()), _zero_mean(reference.double())
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + EPS)
    target = scale * reference
    noise = estimate - target
    ratio = (target.pow(2).sum(-1) + EPS) / (noise.pow(2).sum(-1) + EPS)
    return (10 * torch.log10(ratio)).float()


def si_sdr_improvement(estimate: torch.Tensor, reference: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """SI-SDR of the estimate minus SI-SDR of the mixture, per source: estimate/reference [..., K, L],
    mixture [..., L]."""
    return si_sdr(estimate, reference) - si_sdr(mixture.unsqueeze(-2).expand_as(reference), reference)


def sdr(estimate: torch.Tensor, reference: torch.Tensor, filter_length: int = 512) -> torch.Tensor:
    """BSS-eval SDR in dB: target = the estimate's projection on its own reference through a
    `filter_length`-tap filter, distortion = everything else. Shapes [..., K, L] -> [..., K]."""
    return fast_bss_eval.sdr(reference.double(), estimate.double(), filter_length=filter_length).float()


def own_bin_energies(estimate: torch.Tensor, truth: torch.Tensor, dominance_db: float = 20.0, n_fft: int = 1024,
                     hop_length: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy of each estimate in each true source's own bins, and each true source's energy there, for
    estimate/truth [K, L]: source j's own bins are the STFT bins it holds at least `dominance_db` above every
    other true source (a rooster's harmonics beside speech). -> ([J, K] estimate k in j's bins, [J])."""
    window = torch.hann_window(n_fft, dtype=torch.float64)
    power = torch.stft(torch.cat([truth, estimate]).double(), n_fft, hop_length, window=window,
                       return_complex=True).abs().pow(2)
    true_power, estimate_power = power[: len(truth)], power[len(truth):]
    ratio = 10 ** (dominance_db / 10)
    others = torch.stack([torch.cat([true_power[:j], true_power[j + 1:]]).amax(0) for j in range(len(truth))])
    own = (true_power > ratio * others).double()  # [J, F, N]
    in_own = torch.einsum("jfn,kfn->jk", own, estimate_power)
    return in_own, (own * true_power).sum((1, 2))


def leakage(estimate: torch.Tensor, truth: torch.Tensor, dominance_db: float = 20.0) -> torch.Tensor:
    """Per estimate k [K], in dB: its energy in the other true sources' own bins (own_bin_energies) relative
    to those sources' energy there. Near 0 dB: the other sources' features are copied whole into estimate k;
    -13 dB: faint copies remain, visible in a spectrogram; below about -30 dB: not visible. NaN where no
    other source has bins of its own (silence, or two sources alike everywhere)."""
    in_own, own = own_bin_energies(estimate, truth, dominance_db)
    others = 1 - torch.eye(len(truth), dtype=in_own.dtype)
    held, total = (others * in_own).sum(0), (others * own[:, None]).sum(0)
    return torch.where(total > 0, 10 * torch.log10(held.clamp_min(1e-30) / total.clamp_min(1e-30)),
                       math.nan).float()


def swap_share(estimate: torch.Tensor, truth: torch.Tensor, segment: int, active_db: float = -30.0) -> torch.Tensor:
    """Per estimate k [K] of estimates and truth [K, L]: the share of the segments (of `segment` samples) where
    true source k is active (within `active_db` of its loudest segment) in which estimate k projects more
    energy onto another true source than onto source k. 0: it follows its source throughout; about
    (K - 1) / K: it wanders between sources at random. NaN where source k is never active."""
    k, length = truth.shape
    count = math.ceil(length / segment)
    pad = count * segment - length
    est = torch.nn.functional.pad(estimate, (0, pad)).reshape(k, count, segment)
    ref = torch.nn.functional.pad(truth, (0, pad)).reshape(k, count, segment)
    energy = ref.pow(2).sum(-1)  # [K, S]
    projected = torch.einsum("isl,jsl->ijs", est, ref).pow(2) / energy.clamp_min(EPS)  # [K_est, K_true, S]
    swapped = projected.argmax(1) != torch.arange(k, device=truth.device)[:, None]
    active = energy > energy.amax(-1, keepdim=True) * 10 ** (active_db / 10)
    counted = active.sum(-1)
    return torch.where(counted > 0, (swapped & active).sum(-1) / counted.clamp_min(1), math.nan).float()


def best_permutation(estimate: torch.Tensor, reference: torch.Tensor, metric=si_sdr) -> torch.Tensor:
    """For each item of a batch [B, K, L], the permutation p maximising mean_k metric(estimate[p[k]], reference[k])."""
    k = reference.shape[-2]
    # Score every (estimate i, reference j) pair once: [B, K_est, K_ref].
    pairwise = metric(estimate.unsqueeze(-2), reference.unsqueeze(-3))
    perms = torch.tensor(list(itertools.permutations(range(k))), device=pairwise.device)  # [P, K]
    totals = pairwise[..., perms, torch.arange(k, device=pairwise.device)].sum(-1)  # [B, P]
    return perms[totals.argmax(-1)]


def permute_sources(estimate: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """estimate [B, K, L] reordered so that source k is estimate[permutation[k]]."""
    return torch.gather(estimate, -2, permutation[..., None].expand_as(estimate))


def score_sources(estimate: torch.Tensor, truth: torch.Tensor, mixture: torch.Tensor, permutation_invariant: bool,
                  sample_rate: int):
    """SI-SDR, SI-SDRi, SDR, leakage and swap share per source ([K] each) of estimate [K, L] against truth [K, L],
    and the order used (estimate order[k] is scored against truth k): fixed, or the best permutation where it is
    arbitrary."""
    order = torch.arange(truth.shape[0])
    if permutation_invariant:
        order = best_permutation(estimate[None], truth[None])[0]
        estimate = permute_sources(estimate[None], order[None])[0]
    return {"si_sdr": si_sdr(estimate, truth), "si_sdri": si_sdr_improvement(estimate, truth, mixture),
            "sdr": sdr(estimate, truth), "leak": leakage(estimate, truth),
            "swap": swap_share(estimate, truth, round(SWAP_SEGMENT_SECONDS * sample_rate))}, order
