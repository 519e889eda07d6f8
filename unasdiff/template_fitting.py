"""Fitting a spectral-template prior (unasdiff.models.templates) to clean audio: EM on STFT frames.

scripts/fit_template_prior.py composes the config and calls `fit(cfg)`. The frames come from the
same training crops a network prior sees (unasdiff.data.crops: same clips, spans and levels), so the
two kinds of prior are compared on equal data. EM for the Gaussian scaled mixture: the E step gives
each frame's posterior over (shape, gain) pairs (for the Markov model, by forward-backward over each
crop), the M step sets each shape to the gain-normalised power of its frames, each weight to its share
of frames and each transition probability to its share of the expected transitions out of its shape.
Minutes on CPU for hours of audio.
"""

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from .data.crops import CropStream
from .errors import UnasdiffError
from .files import writable_folder
from .models.checkpoint import atomic_torch_save
from .models.templates import SpectralTemplatePrior

log = logging.getLogger(__name__)

# frames per E/M chunk: bounds the [frames, components] responsibility matrix (about 100 MB)
CHUNK = 65536


def frame_powers(prior: SpectralTemplatePrior, crops: torch.Tensor) -> torch.Tensor:
    """|STFT|^2 of every frame of crops [B, L] -> [B, N, F] (each crop a sequence of frames)."""
    spec = prior.stft(crops)
    return spec.real**2 + spec.imag**2


def initial_shapes(power: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Shapes from the loudest half of the frames [N, F]: the mean spectrum of `count` random groups of
    them, each scaled so that its frame energy sits at gain 1 (the loudest gain)."""
    energy = power.sum(-1)
    loud = power[energy >= energy.median()]
    order = torch.randperm(len(loud), generator=generator)
    groups = loud[order[: (len(loud) // count) * count]].reshape(count, -1, loud.shape[-1]).mean(1)
    return groups * (energy.quantile(0.99) / groups.sum(-1, keepdim=True))


def em_step(prior: SpectralTemplatePrior, power: torch.Tensor, floor: float) -> float:
    """One EM iteration over sequences of frames [S, N, F] (in place on prior's shapes, weights and, for
    the Markov model, transitions); returns the mean log-likelihood per frame and bin under the parameters
    before the update."""
    templates, gains = prior.log_weights.shape
    variances = prior.component_variances() + floor  # [C, F]
    inverse_gain = (1 / prior.gains).repeat(templates)  # [C]
    weighted = torch.zeros_like(prior.shapes)  # sum_n sum_g r P / g, per shape
    counts = torch.zeros(templates * gains)
    transitions = torch.zeros(templates, templates)
    total = 0.0
    for chunk in power.split(max(1, CHUNK // power.shape[1])):
        resp, evidence, pairs = prior.posteriors(prior.log_joint(chunk, variances), prior.markov)
        total += evidence.sum().item()
        resp, frames = resp.flatten(0, 1), chunk.flatten(0, 1)  # [n, C], [n, F]
        counts += resp.sum(0)
        weighted += ((resp * inverse_gain).T @ frames).reshape(templates, gains, -1).sum(1)
        if pairs is not None:
            transitions += pairs
    per_shape = counts.reshape(templates, gains).sum(1, keepdim=True)
    prior.shapes.copy_((weighted / per_shape.clamp_min(1e-8)).clamp_min(floor))
    frames = power.shape[0] * power.shape[1]
    prior.log_weights.copy_((counts.reshape(templates, gains) / frames).clamp_min(1e-12).log())
    if prior.markov:
        # one pseudo-transition per row, spread by the shape weights, and a floor for shapes no frame chose: no
        # transition becomes impossible (a log A of -inf makes the score's gradient NaN)
        transitions = (transitions + per_shape.T / frames).clamp_min(1e-12 * frames)
        prior.log_transitions.copy_((transitions / transitions.sum(1, keepdim=True)).log())
    return total / (frames * power.shape[-1])


def fit_templates(prior: SpectralTemplatePrior, power: torch.Tensor, iterations: int, floor: float,
                  generator: torch.Generator, progress: bool = False) -> list[float]:
    """EM on sequences of frames [S, N, F] from shapes drawn from the frames; returns the log-likelihood
    per iteration."""
    prior.shapes.copy_(initial_shapes(power.flatten(0, 1), prior.shapes.shape[0], generator).clamp_min(floor))
    history = []
    for _ in tqdm(range(iterations), desc="EM", unit="iter", disable=not progress):
        history.append(em_step(prior, power, floor))
    return history


def fit(cfg: DictConfig) -> Path:
    """Fit the template prior of cfg.prior to cfg.data's clips and write it to cfg.out."""
    from .training import training_clips

    out = writable_folder(Path(cfg.out).expanduser().parent, "out") / Path(cfg.out).name
    prior = SpectralTemplatePrior(**OmegaConf.to_container(cfg.prior.net, resolve=True))
    data = cfg.data
    stream = CropStream(training_clips(data), data.sample_rate, data.seconds, tuple(data.level_dbfs),
                        data.cache_dir, cfg.seed)
    crops = [stream[p] for p in tqdm(range(cfg.fit.crops), desc="crops", unit="crop", disable=not cfg.progress)]
    waves = torch.stack([w for w, _, valid, _ in crops if valid])
    if len(waves) == 0:
        raise UnasdiffError(f"none of the {len(crops)} crops could be read; check data")
    power = frame_powers(prior, waves)
    # the floor: a variance per coefficient of white noise at floor_dbfs, so that digital silence has a finite score
    floor = prior.noise_power * 10 ** (cfg.fit.floor_dbfs / 10)
    generator = torch.Generator().manual_seed(cfg.seed)
    history = fit_templates(prior, power, cfg.fit.iterations, floor, generator, cfg.progress)
    frames = power.shape[0] * power.shape[1]
    log.info("fitted %d x %d components to %d frames: log-likelihood %.3f -> %.3f per bin",
             *prior.log_weights.shape, frames, history[0], history[-1])
    if not all(math.isfinite(v) for v in history):
        raise UnasdiffError("EM diverged (a non-finite log-likelihood); raise fit.floor_dbfs")
    info = {"trained_by": "scripts/fit_template_prior.py", "frames": frames, "crops": len(waves),
            "log_likelihood": history,
            "data": {k: v for k, v in OmegaConf.to_container(data).items() if k != "cache_dir"}}
    atomic_torch_save({"ema": prior.state_dict(), "config": {"prior": OmegaConf.to_container(cfg.prior, resolve=True)},
                       "info": info}, out)
    return out
