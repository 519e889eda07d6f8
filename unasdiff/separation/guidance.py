"""Guidance rules: how a reverse step is pulled towards sum_k x_k = y.

Every rule has four hooks, called by the sampler (`sampler.guided_step`) in this order:
  constrain(x_t, y, abar)          -> x_t     gradient-free rules that tie the noisy sources to y
  correct_eps(eps)                 -> eps     ... or change the priors' noise predictions
  correct_x0(x0, y)                -> x0      ... or act on the denoised estimates
  update(mean, noise, grad, sigma) -> x_{t-1} gradient rules move the ancestral sample
                                              x' = mean + noise against grad = dJ/dx_t
Norms are per source over the samples, shapes [B, K, L] (sigma is the posterior std, a float).
After the last step the sampler calls constrain(x, y, 1.0).
"""

import math
from dataclasses import dataclass

import torch

GRAD_EPS = 1e-8


def _unit(g: torch.Tensor) -> torch.Tensor:
    return g / (g.norm(dim=-1, keepdim=True) + GRAD_EPS)


@dataclass(frozen=True)
class NoGuidance:
    """Each prior samples on its own (useful to check a prior; not a separator)."""

    uses_gradient = False

    def constrain(self, x_t, mixture, abar):
        return x_t

    def correct_eps(self, eps):
        return eps

    def correct_x0(self, x0, mixture):
        return x0

    def update(self, mean, noise, grad, sigma):
        return mean + noise


@dataclass(frozen=True)
class Hybrid(NoGuidance):
    """The paper's rule: a normalised gradient step of radius sqrt(L) * smoothmax(scale * sigma, floor).

    The step shrinks with the posterior std like DSG's, but never below `floor` (per sample), so the
    last steps, where sigma -> 0, still enforce the mixture; `sharpness` is k of the smooth max
    log(exp(k a) + exp(k b)) / k."""

    scale: float = 0.09
    floor: float = 0.002
    sharpness: float = 1000.0
    stride: float = 1.0
    uses_gradient = True

    def strength(self, sigma: float) -> float:
        """smoothmax(scale * sigma, floor) per step of the 200-step schedule. A respaced step spans `stride`
        of those, and the pulls of the steps it replaces add up: the floor term stride times, the scale term
        sqrt(stride) times because sigma of the respaced step already grows as sqrt(stride) (its beta is about
        stride betas). So the constants mean the same at any step count; stride 1 is the reference's rule."""
        k = self.sharpness
        return float(torch.logaddexp(torch.tensor(k * self.scale * self.stride**0.5 * sigma, dtype=torch.float64),
                                     torch.tensor(k * self.floor * self.stride, dtype=torch.float64))) / k

    def update(self, mean, noise, grad, sigma):
        radius = math.sqrt(mean.shape[-1]) * self.strength(sigma)
        # mean + noise - radius * _unit(grad), in two passes over the samples instead of four
        return (mean + noise).addcmul_(grad, -radius / (grad.norm(dim=-1, keepdim=True) + GRAD_EPS))


@dataclass(frozen=True)
class DPS(NoGuidance):
    """Diffusion posterior sampling (Chung et al., 2023): the raw gradient times a fixed step zeta."""

    zeta: float = 1.0
    stride: float = 1.0
    uses_gradient = True

    def update(self, mean, noise, grad, sigma):
        # zeta per step of the 200-step schedule. A respaced step's ancestral noise grows as sqrt(stride), and so
        # does its pull: stride times (the pulls of the steps it replaces, added up) overshoots and diverges on
        # the Gaussian oracle at 25 steps (benchmarks/gaussian_oracle.py)
        return mean + noise - self.zeta * self.stride**0.5 * grad


@dataclass(frozen=True)
class DSG(NoGuidance):
    """Spherical Gaussian constraint (Yang et al., 2024): the step stays on the sphere of radius
    sqrt(L) * sigma around the mean, turned from the noise direction towards -grad by `rate`;
    no floor, so guidance fades out as sigma -> 0."""

    rate: float = 0.2
    uses_gradient = True

    def update(self, mean, noise, grad, sigma):
        radius = math.sqrt(mean.shape[-1]) * sigma
        direction = noise + self.rate * (-radius * _unit(grad) - noise)
        return mean + radius * _unit(direction)


@dataclass(frozen=True)
class MSDMDirac(NoGuidance):
    """MSDM's Dirac-delta likelihood (Mariani et al., 2024), gradient-free, in VP form: the last source
    is not sampled but fixed by the mixture, x_K = sqrt(abar) y - sum_{k<K} x_k, and each free source
    follows the score of the constrained joint, s_k(x_k) - s_K(x_K), i.e. eps_k - eps_K."""

    def constrain(self, x_t, mixture, abar):
        last = abar**0.5 * mixture - x_t[:, :-1].sum(dim=1)
        return torch.cat([x_t[:, :-1], last[:, None]], dim=1)

    def correct_eps(self, eps):
        return torch.cat([eps[:, :-1] - eps[:, -1:], eps[:, -1:]], dim=1)


@dataclass(frozen=True)
class UndiffProjection(NoGuidance):
    """Undiff-style projection (Iashchenko et al., 2023): the residual y - sum_k x0_k is shared equally
    among the sources, so the estimates always sum to the mixture."""

    def correct_x0(self, x0, mixture):
        residual = mixture - x0.sum(dim=1)
        return x0 + residual[:, None] / x0.shape[1]


RULES = {"hybrid": Hybrid, "dps": DPS, "dsg": DSG, "msdm_dirac": MSDMDirac, "undiff": UndiffProjection,
         "none": NoGuidance}


def make_rule(method: str, stride: float = 1.0, **params) -> NoGuidance:
    """The rule `method` with its settings; `stride` (original steps per sampler step, set by the sampler
    from the respacing, not a user setting) goes to the rules whose step size is per step."""
    if method not in RULES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(RULES)}")
    cls = RULES[method]
    known = set(cls.__dataclass_fields__) - {"stride"}
    unknown = set(params) - known
    if unknown:
        raise TypeError(f"method {method!r} takes {sorted(known) or 'no parameters'}, not {sorted(unknown)}")
    return cls(**params, stride=stride) if "stride" in cls.__dataclass_fields__ else cls(**params)
