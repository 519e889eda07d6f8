"""Mixture consistency: make the estimated sources add up to the mixture.

The exact posterior mean satisfies sum_k E[s_k | y] = y, but a sampler's estimate need not: where
neither prior can explain part of the mixture (a sound unlike anything it was trained on), guidance
lets that energy fall away and no source receives it. Projecting onto {sum_k s_k = y} hands the
residual r = y - sum_k s_k back to the sources (Wisdom et al., ICASSP 2019, "Differentiable
consistency constraints for improved deep speech enhancement"):

    equal:  s_k + r / K                            (the Euclidean projection)
    wiener: s_k + iSTFT(|S_k|^2 / sum_j |S_j|^2 * R)   (each bin's residual in proportion to each
                                                    source's estimated power there)
    mask:   iSTFT(|S_k|^2 / sum_j |S_j|^2 * Y)       (the Wiener filter of the mixture, with the
                                                    estimates' powers as the sources' powers)

"wiener" keeps each estimate and adds to it; "mask" keeps only the estimates' powers and filters the
mixture with them, as the exact posterior mean of Gaussian sources of known power would: a bin that one
estimate holds 10x more strongly than the other is shared 100:1, so faint copies of one source left in
the other estimate (a sustained harmonic that both priors can explain) are pushed down further.
"""

import torch

CONSISTENCY = ("none", "equal", "wiener", "mask")


def mixture_consistent(sources: torch.Tensor, mixture: torch.Tensor, mode: str, n_fft: int = 1024,
                       hop_length: int = 256) -> torch.Tensor:
    """sources [B, K, L], mixture [B, L] -> sources [B, K, L] that sum to the mixture (mode "none":
    unchanged); `n_fft`/`hop_length` set the STFT of the "wiener" and "mask" splits."""
    if mode not in CONSISTENCY:
        raise ValueError(f"unknown consistency {mode!r}; choose one of {', '.join(CONSISTENCY)}")
    if mode == "none":
        return sources
    residual = mixture - sources.sum(dim=1)
    if mode == "equal":
        return sources + residual[:, None] / sources.shape[1]
    batch, k, length = sources.shape
    window = torch.hann_window(n_fft, device=sources.device, dtype=sources.dtype)

    def stft(x):
        return torch.stft(x, n_fft, hop_length, window=window, return_complex=True)

    power = stft(sources.reshape(batch * k, length)).abs().pow(2).reshape(batch, k, n_fft // 2 + 1, -1)
    share = power / power.sum(dim=1, keepdim=True).clamp_min(torch.finfo(sources.dtype).tiny)
    share = torch.where(power.sum(dim=1, keepdim=True) > 0, share, 1 / k)  # bins no source holds: split evenly
    split = stft(residual if mode == "wiener" else mixture)
    parts = (share * split[:, None]).reshape(batch * k, n_fft // 2 + 1, -1)
    parts = torch.istft(parts, n_fft, hop_length, window=window, length=length).reshape(batch, k, length)
    # the STFT round trip is exact only up to rounding and the edges: fix the remainder with the equal split
    return mixture_consistent(sources + parts if mode == "wiener" else parts, mixture, "equal")
