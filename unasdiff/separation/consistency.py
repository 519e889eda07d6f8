"""Mixture consistency: make the estimated sources add up to the mixture.

The exact posterior mean satisfies sum_k E[s_k | y] = y, but a sampler's estimate need not: where
neither prior can explain part of the mixture (a sound unlike anything it was trained on), guidance
lets that energy fall away and no source receives it. Projecting onto {sum_k s_k = y} hands the
residual r = y - sum_k s_k back to the sources (Wisdom et al., ICASSP 2019, "Differentiable
consistency constraints for improved deep speech enhancement"):

    equal:  s_k + r / K                            (the Euclidean projection)
    wiener: s_k + iSTFT(|S_k|^2 / sum_j |S_j|^2 * R)   (each bin's residual in proportion to each
                                                    source's estimated power there)
"""

import torch

CONSISTENCY = ("none", "equal", "wiener")


def mixture_consistent(sources: torch.Tensor, mixture: torch.Tensor, mode: str, n_fft: int = 1024,
                       hop_length: int = 256) -> torch.Tensor:
    """sources [B, K, L], mixture [B, L] -> sources [B, K, L] that sum to the mixture (mode "none":
    unchanged); `n_fft`/`hop_length` set the STFT of the "wiener" split."""
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
    parts = (share * stft(residual)[:, None]).reshape(batch * k, n_fft // 2 + 1, -1)
    parts = torch.istft(parts, n_fft, hop_length, window=window, length=length).reshape(batch, k, length)
    # the STFT round trip is exact only up to rounding and the edges: fix the remainder with the equal split
    return mixture_consistent(sources + parts, mixture, "equal")
