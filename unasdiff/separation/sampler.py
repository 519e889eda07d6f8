"""Posterior sampling of K sources from a mixture with one diffusion prior per source.

Every source runs its prior's reverse (ancestral DDPM) process; each step is pulled towards
sum_k x0_k = y by a guidance rule (guidance.py) acting on the reconstruction objective
(objective.py). Tensors are [B, K, L].
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..diffusion import DiffusionSchedule
from ..errors import UnasdiffError
from .guidance import NoGuidance
from .objective import ReconstructionObjective
from .priors import SourcePriors

INITS = ("mixture", "noise", "raw_mixture")


@dataclass
class StepResult:
    x_next: torch.Tensor  # [B, K, L]
    x0: torch.Tensor  # denoised estimates, clamped to [-1, 1] (after any x0 correction)
    mean: torch.Tensor  # posterior mean of q(x_{t-1} | x_t, x0)
    loss: torch.Tensor | None  # J per item [B] for gradient rules


def predict_x0(priors: SourcePriors, schedule: DiffusionSchedule, position: int, x_t: torch.Tensor,
               rule: NoGuidance = NoGuidance()) -> torch.Tensor:
    """x0 = clamp((x_t - sqrt(1 - abar) eps) / sqrt(abar), -1, 1), eps as the rule corrects it."""
    eps = rule.correct_eps(priors.eps(x_t, schedule.time_input(position)))
    return schedule.denoised(x_t, position, eps)


def guided_step(priors: SourcePriors, schedule: DiffusionSchedule, position: int, x_t: torch.Tensor,
                mixture: torch.Tensor, noise: torch.Tensor, rule: NoGuidance,
                objective: ReconstructionObjective, mixture_spectrogram: torch.Tensor | None = None,
                segment: int | None = None) -> StepResult:
    """One reverse step from schedule position `position`; `noise` [B, K, L] is the ancestral noise z;
    `mixture_spectrogram` (objective.spectrogram(segments(mixture, segment))), where given, spares recomputing it.
    With `segment`, guidance treats each `segment` samples (L a multiple of it) as a window of its own: J is the
    sum of the segments' objectives and the rule's step is sized per segment; the priors see the whole length."""
    sigma = schedule.posterior_variance[position].clamp_min(0).sqrt().item()
    c_x0, c_xt = (c[position].item() for c in schedule.posterior_mean_coefs)
    x_t = rule.constrain(x_t.detach(), mixture, schedule.alphas_cumprod[position].item())
    with torch.enable_grad() if rule.uses_gradient else torch.no_grad():
        x_t = x_t.requires_grad_(rule.uses_gradient)
        x0 = rule.correct_x0(predict_x0(priors, schedule, position, x_t, rule), mixture)
        loss = grad = None
        if rule.uses_gradient:
            loss = objective(segments(x0.sum(dim=1), segment), segments(mixture, segment), mixture_spectrogram)
            loss = loss.view(len(mixture), -1).sum(-1)
            # the weights are frozen: one backward, to x_t only
            (grad,) = torch.autograd.grad(loss.sum(), x_t)
    x0, x_t = x0.detach(), x_t.detach()
    mean = torch.add(c_x0 * x0, x_t, alpha=c_xt)  # c_x0 x0 + c_xt x_t
    if segment is None:
        x_next = rule.update(mean, sigma * noise, grad, sigma)
    else:  # the rules act along the last dimension
        x_next = rule.update(*(v.unflatten(-1, (-1, segment)) for v in (mean, sigma * noise, grad)), sigma).flatten(-2)
    return StepResult(x_next, x0, mean, None if loss is None else loss.detach())


def segments(x: torch.Tensor, segment: int | None) -> torch.Tensor:
    """[B, L] -> [B * L / segment, segment]: the segments as items (x itself without `segment`)."""
    if segment is None:
        return x
    if x.shape[-1] % segment:
        raise ValueError(f"the length {x.shape[-1]} is not a multiple of the guidance segment {segment}")
    return x.unflatten(-1, (-1, segment)).flatten(0, 1)


def initial_state(mixture: torch.Tensor, num_sources: int, init: str, schedule: DiffusionSchedule,
                  init_step: int, generator: torch.Generator | None) -> torch.Tensor:
    """Starting point [B, K, L]: "mixture" noises y to `init_step` (one shared noise for all sources),
    "noise" is pure N(0, I) per source, "raw_mixture" is y itself."""
    batch, length = mixture.shape
    shape = (batch, num_sources, length)
    if init == "noise":
        return _randn(shape, mixture, generator)
    if init == "raw_mixture":
        return mixture[:, None].expand(shape).clone()
    if init == "mixture":
        full = DiffusionSchedule.linear(schedule.num_train_steps)
        eps = _randn((batch, 1, length), mixture, generator)
        return full.noised(mixture[:, None], init_step, eps).expand(shape).clone()
    raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")


def check_start(init: str, start_step: int | None, num_train_steps: int) -> None:
    """Refuse a pure-noise start at a step below the last: N(0, I) is the state of the last step only."""
    if init == "noise" and start_step is not None and start_step != num_train_steps - 1:
        raise UnasdiffError(f"sampler.init=noise starts from N(0, I), the state of the last step "
                            f"({num_train_steps - 1}), but sampler.start_step={start_step}: set "
                            f"sampler.start_step=null, or sampler.init=mixture to start from the noised mixture")


def _randn(shape, like: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def sample(priors: SourcePriors, mixture: torch.Tensor, schedule: DiffusionSchedule, rule: NoGuidance,
           objective: ReconstructionObjective, *, init: str = "mixture", init_step: int = 149,
           start_step: int | None = None, generator: torch.Generator | None = None,
           progress: bool = False, on_step: Callable[[int, StepResult], None] | None = None,
           segment: int | None = None) -> torch.Tensor:
    """Run the reverse process from `start_step` (default: the last step, as the reference does,
    whatever `init_step` the mixture was noised to) down to step 0. mixture [B, L] -> [B, K, L]; `segment`: see
    guided_step."""
    check_start(init, start_step, schedule.num_train_steps)
    first = len(schedule) - 1 if start_step is None else schedule.position_of_step(start_step)
    x = initial_state(mixture, len(priors), init, schedule, init_step, generator)
    # the mixture's magnitude spectrogram is the same at every step
    target = (objective.spectrogram(segments(mixture, segment)) if rule.uses_gradient and objective.spectral_weight
              else None)
    # the first step whose result is not finite, kept on the device: checked once, after the loop, so that no
    # step waits for the device
    first_bad = torch.full((), -1, device=x.device)
    for position in tqdm(range(first, -1, -1), desc="separating", unit="step", disable=not progress, leave=False):
        noise = _randn(x.shape, x, generator)
        result = guided_step(priors, schedule, position, x, mixture, noise, rule, objective, target, segment)
        # a NaN or inf anywhere makes the sum non-finite: one reduction instead of a test of every element
        bad = (first_bad < 0) & ~torch.isfinite(result.x_next.sum())
        first_bad = torch.where(bad, schedule.timesteps[position].to(x.device), first_bad)
        x = result.x_next
        if on_step is not None:
            on_step(position, result)
    if first_bad.item() >= 0:
        raise UnasdiffError(f"the sampler produced NaN/inf at step {first_bad.item()} "
                            f"(method {type(rule).__name__}); lower the guidance strength or check the priors")
    return rule.constrain(x, mixture, 1.0)
