"""A network that learns only what a fitted template prior misses.

    eps(x_t, t, label) = template(x_t, t) + network(x_t, t, label)

The spectral-template prior (templates.py) already denoises the way a fitted spectral model can, exactly
and at every noise level, in minutes of EM on CPU. A network trained from nothing on a few CPU cores spends
its first thousands of steps learning that same generic denoising (docs/bundled_priors.md, 'Learning
curve'). Here the template is fixed and the network, whose output starts at zero (DiT zero-init of the final
layer), fits the rest of the noise: so the untrained prior is exactly the template prior, and every training
step goes to what the template cannot express (pitch that glides, onsets, structure across frames). The
template part has no parameters, only fitted buffers, so the optimiser trains the network alone and the
checkpoint carries both.
"""

import torch
from torch import nn

from .network import TriplePathUNet
from .templates import SpectralTemplatePrior


class TemplateResidualPrior(nn.Module):
    """Noise predictor `prior(x [B, L], t [B], label [B] | None) -> eps [B, L]`: a spectral-template prior
    (settings `templates`, see SpectralTemplatePrior) plus a TriplePathUNet (settings `network`) that
    predicts the template's residual noise. The label goes to the network only."""

    def __init__(self, templates: dict, network: dict):
        super().__init__()
        self.templates = SpectralTemplatePrior(**templates)
        self.network = TriplePathUNet(**network)

    @property
    def num_classes(self) -> int:
        return self.network.num_classes

    @property
    def null_label(self) -> int:
        return self.network.null_label

    @property
    def n_fft(self) -> int:
        """The longest STFT frame of the two parts: the shortest input the prior takes."""
        return max(self.templates.n_fft, self.network.n_fft)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        # no torch.no_grad() here: guided samplers differentiate the whole prior with respect to x_t
        return self.templates(x_t, t) + self.network(x_t, t, label)
