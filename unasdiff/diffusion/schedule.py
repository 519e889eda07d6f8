"""The DDPM schedule of the published priors (T = 200, linear betas, eps-prediction).

Computed in float32 as the reference does (linspace, 1 - beta, cumulative product): that is what
reproduces its sampler to 5e-7, and it makes the posterior-mean coefficient at step 0 0.99983
rather than 1. A schedule can be respaced to fewer steps (a subsequence of the same alphas-bar,
as in improved-diffusion), in which case `timesteps` maps each position to its original step.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DiffusionSchedule:
    betas: torch.Tensor  # [N] float32
    timesteps: torch.Tensor  # [N] original step index of each position (0..T-1)
    num_train_steps: int  # T of the schedule the prior was trained with

    @classmethod
    def linear(cls, num_steps: int = 200, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DiffusionSchedule":
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float32)
        return cls(betas, torch.arange(num_steps), num_steps)

    def __len__(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        return torch.cat([torch.ones(1), self.alphas_cumprod[:-1]])

    @property
    def posterior_variance(self) -> torch.Tensor:
        """Variance of q(x_{t-1} | x_t, x_0): beta_t (1 - abar_{t-1}) / (1 - abar_t)."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def posterior_mean_coefs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_x0, c_xt) with mean = c_x0 * x_0 + c_xt * x_t."""
        abar, abar_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        c_x0 = self.betas * torch.sqrt(abar_prev) / (1.0 - abar)
        c_xt = (1.0 - abar_prev) * torch.sqrt(1.0 - self.betas) / (1.0 - abar)
        return c_x0, c_xt

    @property
    def time_scale(self) -> int:
        """Steps to the network's time input, which runs over 0..999 (5 for T = 200)."""
        return 1000 // self.num_train_steps

    def time_input(self, position: int) -> int:
        """The network's time input at a position: the original step scaled to 0..999 (5 x step for T = 200)."""
        return int(self.timesteps[position]) * self.time_scale

    def _signal_and_noise_scales(self, position, like: torch.Tensor):
        """(sqrt(abar), sqrt(1 - abar)) at an int position (floats) or positions [B] (broadcast over like)."""
        if isinstance(position, int):
            abar = self.alphas_cumprod[position].item()
            return abar**0.5, (1 - abar) ** 0.5
        abar = self.alphas_cumprod.to(like.device)[position].reshape(-1, *[1] * (like.dim() - 1))
        return abar.sqrt(), (1 - abar).sqrt()

    def noised(self, x0: torch.Tensor, position, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar) x0 + sqrt(1 - abar) noise (the forward process)."""
        signal, spread = self._signal_and_noise_scales(position, x0)
        return signal * x0 + spread * noise

    def denoised(self, x_t: torch.Tensor, position, eps: torch.Tensor) -> torch.Tensor:
        """x0 = clamp((x_t - sqrt(1 - abar) eps) / sqrt(abar), -1, 1): the estimate from predicted noise."""
        signal, spread = self._signal_and_noise_scales(position, x_t)
        return ((x_t - spread * eps) / signal).clamp(-1.0, 1.0)

    def respaced(self, steps: int) -> "DiffusionSchedule":
        """A schedule of `steps` evenly spaced original steps (always including the last one)."""
        if not 1 <= steps <= len(self):
            raise ValueError(f"steps must be in 1..{len(self)}, got {steps}")
        if steps == len(self):
            return self
        keep = torch.linspace(0, len(self) - 1, steps).round().long()
        abar = self.alphas_cumprod[keep]
        abar_prev = torch.cat([torch.ones(1), abar[:-1]])
        return DiffusionSchedule(1.0 - abar / abar_prev, self.timesteps[keep], self.num_train_steps)

    def position_of_step(self, step: int) -> int:
        """The last position whose original step is <= `step` (where a loop starting at `step` begins)."""
        below = (self.timesteps <= step).nonzero()
        if len(below) == 0:
            raise ValueError(f"no step of this schedule is <= {step}")
        return int(below[-1])
