"""The reconstruction objective J that guidance descends.

J = ||r|| + chunk_weight * sum_c ||r_c|| + spectral_weight * || |STFT(sum_k x0_k)| - |STFT(y)| ||_F,
with r = y - sum_k x0_k split as torch.chunk(r, chunks) does (pieces of ceil(L / chunks) samples: 512
pieces at L = 64000, 456 at L = 4100, as in the reference): the first term fits the whole signal,
the second keeps quiet stretches from being ignored, the third fits the magnitude spectrogram.
"""

from dataclasses import dataclass

import torch

from ..stft import HalfOverlapSTFT, magnitude


@dataclass(frozen=True)
class ReconstructionObjective:
    chunks: int = 512
    chunk_weight: float = 0.05
    spectral_weight: float = 0.1
    n_fft: int = 512
    hop_length: int = 256

    def __call__(self, estimate: torch.Tensor, mixture: torch.Tensor,
                 mixture_spectrogram: torch.Tensor | None = None) -> torch.Tensor:
        """J for each item: estimate (the sum of the source estimates) and mixture [B, L] -> [B]. A sampler
        passes `mixture_spectrogram` (self.spectrogram(mixture)) computed once for all its steps."""
        residual = mixture - estimate
        loss = residual.norm(dim=-1)
        if self.chunk_weight:
            # torch.chunk's pieces as rows of one tensor: the last, shorter piece zero-padded (norms unchanged)
            length = residual.shape[-1]
            size = -(-length // self.chunks)
            pieces = -(-length // size)
            rows = torch.nn.functional.pad(residual, (0, pieces * size - length)).unflatten(-1, (pieces, size))
            loss = loss + self.chunk_weight * rows.norm(dim=-1).sum(-1)
        if self.spectral_weight:
            target = self.spectrogram(mixture) if mixture_spectrogram is None else mixture_spectrogram
            distance = self.spectrogram(estimate) - target
            loss = loss + self.spectral_weight * distance.flatten(1).norm(dim=-1)
        return loss

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """|STFT(x)| of signals [B, L], as the spectral term compares them."""
        window = torch.hann_window(self.n_fft, device=x.device, dtype=x.dtype)
        if 2 * self.hop_length == self.n_fft:  # the same STFT with closed-form gradients (stft.py)
            return magnitude(HalfOverlapSTFT(window).stft(x))
        return magnitude(torch.stft(x, self.n_fft, self.hop_length, window=window, center=True, return_complex=True))
