"""labels=auto: choose a sound class for a source whose class the user does not know.

Diffusion-classifier rule (Li et al., 2023; Clark & Jaini, 2023): noise the mixture to a few steps
and ask the conditional prior to predict that noise under every candidate label; the class whose
prior predicts it best (lowest mean squared error, the same noise draws for every class) explains
the audio best. The mixture also holds the other sources, so this ranks how well each class
explains the whole mixture; with one sound source among speech that is the sound's class.
"""

import torch

from ..diffusion import DiffusionSchedule


@torch.no_grad()
def denoising_errors(prior, audio: torch.Tensor, candidates: list[int], steps: list[int], draws: int,
                     schedule: DiffusionSchedule | None = None, generator: torch.Generator | None = None,
                     batch: int = 8) -> torch.Tensor:
    """Mean squared noise-prediction error of each candidate label on audio [L] -> [C]."""
    schedule = schedule or DiffusionSchedule.linear()
    labels = torch.tensor(candidates, device=audio.device)
    errors = torch.zeros(len(candidates), device=audio.device)
    for step in steps:
        for _ in range(draws):
            noise = torch.randn(audio.shape, generator=generator, device=audio.device)
            x_t = schedule.noised(audio, step, noise)
            for first in range(0, len(candidates), batch):
                lab = labels[first:first + batch]
                t = torch.full((len(lab),), schedule.time_input(step), device=audio.device)
                eps = prior(x_t.expand(len(lab), -1), t, lab)
                errors[first:first + batch] += (eps - noise).pow(2).mean(-1)
    return errors / (len(steps) * draws)


def choose_labels(errors: torch.Tensor, candidates: list[int], count: int) -> list[int]:
    """The `count` best distinct classes, best first."""
    order = torch.argsort(errors)[:count]
    return [candidates[i] for i in order.tolist()]
