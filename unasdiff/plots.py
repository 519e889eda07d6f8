"""Spectrogram figures: every signal on one page with one shared colour scale."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .files import atomic_path  # noqa: E402

DYNAMIC_RANGE_DB = 80.0


def log_spectrogram(x: torch.Tensor, sample_rate: int, n_fft: int = 1024) -> torch.Tensor:
    hop = n_fft // 4
    spec = torch.stft(x.float().cpu(), n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    return 20 * torch.log10(spec + 1e-8)


def plot_spectrograms(signals: dict[str, torch.Tensor], sample_rate: int, path, title: str = "",
                      columns: int = 1) -> Path:
    """One panel per named signal [L] (time in s, frequency in kHz), colours in dB on a shared scale."""
    n_fft = 1024 if sample_rate >= 16000 else 512
    specs = {name: log_spectrogram(x, sample_rate, n_fft) for name, x in signals.items()}
    top = max(s.max().item() for s in specs.values())
    rows = -(-len(specs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 2.2 * rows + 0.6), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    image = None
    for ax, (name, spec) in zip(axes.flat, specs.items()):
        duration = (spec.shape[-1] - 1) * (n_fft // 4) / sample_rate
        image = ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma",
                          vmin=top - DYNAMIC_RANGE_DB, vmax=top,
                          extent=(0, duration, 0, sample_rate / 2000))
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("frequency (kHz)")
    for ax in axes.flat[len(specs):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.colorbar(image, ax=axes, label="level (dB)", shrink=0.9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
