"""Stationary Gaussian sources with a known spectrum: exact priors, Wiener filter, exact posterior.

A source is white noise shaped by a power spectrum P(f) (circular, so the orthonormal real DFT
diagonalises everything): bin f of s ~ N(0, P_f). For x_t = sqrt(abar) s + sqrt(1 - abar) eps,
E[eps | x_t] is the per-bin gain sqrt(1 - abar) / (abar P_f + 1 - abar): an exact eps-predictor
with the network's call signature, so every sampler can be scored against the true posterior.
"""

from collections.abc import Callable, Sequence

import torch

from .schedule import DiffusionSchedule

Spectrum = Callable[[torch.Tensor], torch.Tensor]  # frequencies in Hz -> power (unnormalised)


def _rfft(x):
    return torch.fft.rfft(x, norm="ortho")


def _irfft(x, length):
    return torch.fft.irfft(x, n=length, norm="ortho")


class GaussianSource:
    """A stationary Gaussian process at `rms` (linear amplitude) with spectral shape `spectrum`."""

    def __init__(self, spectrum: Spectrum, rms: float, sample_rate: int = 16000):
        self.spectrum, self.rms, self.sample_rate = spectrum, rms, sample_rate

    def power(self, length: int, device=None) -> torch.Tensor:
        """Per-bin power P_f [L // 2 + 1] of the orthonormal real DFT, scaled to the RMS level."""
        freqs = torch.fft.rfftfreq(length, 1.0 / self.sample_rate, device=device, dtype=torch.float64)
        shape = self.spectrum(freqs)
        # mean power per sample = mean of P over the full (two-sided) spectrum
        two_sided = torch.cat([shape, shape[1:(length + 1) // 2].flip(0)])
        return (shape * self.rms**2 / two_sided.mean()).float()

    def draw(self, batch: int, length: int, generator=None) -> torch.Tensor:
        white = torch.randn(batch, length, generator=generator)
        return _irfft(_rfft(white) * self.power(length).sqrt(), length)


class GaussianPrior:
    """The exact eps-predictor of a GaussianSource under a DDPM schedule: `(x_t, t, label) -> eps`."""

    def __init__(self, source: GaussianSource, schedule: DiffusionSchedule | None = None):
        self.source = source
        self.schedule = schedule or DiffusionSchedule.linear()

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, label=None) -> torch.Tensor:
        steps = torch.as_tensor(t, device=x_t.device) // self.schedule.time_scale
        abar = self.schedule.alphas_cumprod.to(x_t.device)[steps]
        abar = abar.reshape(-1, 1)
        power = self.source.power(x_t.shape[-1], x_t.device)
        gain = (1 - abar).sqrt() / (abar * power + 1 - abar)
        return _irfft(_rfft(x_t) * gain, x_t.shape[-1])


def wiener(mixture: torch.Tensor, sources: Sequence[GaussianSource]) -> torch.Tensor:
    """The MMSE estimate E[s_k | y] of each source: [B, L] -> [B, K, L]."""
    length = mixture.shape[-1]
    powers = torch.stack([s.power(length, mixture.device) for s in sources])  # [K, F]
    spec = _rfft(mixture)[:, None] * (powers / powers.sum(0))
    return _irfft(spec, length)


def posterior_spread(estimate: torch.Tensor, mixture: torch.Tensor, sources: Sequence[GaussianSource]) -> torch.Tensor:
    """E||estimate - E[s | y]||^2 relative to its value for exact posterior samples (two sources):
    1 for a calibrated sampler, below 1 when samples collapse towards the mean, 0 for the mean itself."""
    length = mixture.shape[-1]
    p1, p2 = (s.power(length, mixture.device) for s in sources)
    # squared norm of a real signal from its orthonormal rfft: interior bins count twice
    weight = torch.full_like(p1, 2.0)
    weight[0] = 1.0
    if length % 2 == 0:
        weight[-1] = 1.0
    expected = (weight * p1 * p2 / (p1 + p2)).sum()
    distance = (estimate - wiener(mixture, sources)).pow(2).sum(-1)  # [B, K]
    return distance.mean() / expected


def posterior_sample(mixture: torch.Tensor, sources: Sequence[GaussianSource], generator=None) -> torch.Tensor:
    """An exact draw from p(s_1..s_K | y) for K = 2: Wiener plus noise of the posterior variance
    P_1 P_2 / (P_1 + P_2) on source 1, and source 2 = y - source 1."""
    if len(sources) != 2:
        raise ValueError("the closed-form posterior sample is implemented for two sources")
    length = mixture.shape[-1]
    p1, p2 = (s.power(length, mixture.device) for s in sources)
    white = torch.randn(mixture.shape, generator=generator).to(mixture.device)
    first = wiener(mixture, sources)[:, 0] + _irfft(_rfft(white) * (p1 * p2 / (p1 + p2)).sqrt(), length)
    return torch.stack([first, mixture - first], dim=1)


def lowpass(cutoff: float, order: int = 2) -> Spectrum:
    """Butterworth-shaped power spectrum."""
    return lambda f: 1.0 / (1.0 + (f / cutoff) ** (2 * order))


def bandpass(center: float, width: float) -> Spectrum:
    """Gaussian bump in frequency."""
    return lambda f: torch.exp(-0.5 * ((f - center) / width) ** 2) + 1e-4
