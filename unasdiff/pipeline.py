"""From a recording to its sources: one object that scripts/separate.py, scripts/evaluate.py and the API share.

    from unasdiff.pipeline import Separator
    separator = Separator.from_config(["task=speech_sound", "labels=[null,auto]"])   # configs/separate.yaml
    result = separator.separate_file("mix.wav")    # result.sources [K, L] at 16 kHz, result.at_input_rate()

The path of one mixture: load (mono, the priors' rate) -> scale to the priors' training level -> labels=auto
chosen -> separate_in_windows (windows, each through unasdiff.separation.separate) -> the level undone.
"""

import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from .audio import AudioInfo, gain_to_rms, is_silent, load_audio, resample, to_mono
from .config import REPO_ROOT, compose
from .data.labels import class_names, label_index
from .diffusion import DiffusionSchedule
from .errors import UnasdiffError
from .models import load_prior_and_config, prior_config
from .models.templates import GRADIENTS, SpectralTemplatePrior
from .runtime import pick_device, tune_cpu_allocator
from .separation import separate
from .separation.alignment import interchangeable_groups
from .separation.classify import choose_labels, denoising_errors
from .separation.grouping import SegmentGrouping
from .separation.sampler import check_start
from .separation.windows import guided_blocks, separate_in_windows

log = logging.getLogger(__name__)


@dataclass
class Prior:
    role: str  # "speech", "sound"
    config: DictConfig
    checkpoint: Path
    net: torch.nn.Module

    @property
    def classes(self):
        return class_names(self.config.get("classes"))

    @property
    def role_class(self) -> int | None:
        """The label of the role, for a prior of several roles (its classes name the role); else None."""
        classes = self.classes or ()
        return classes.index(self.role) if self.role in classes else None

    @property
    def unconditional(self) -> bool:
        """A one-class prior without class names (speech, or an unlabelled sound prior): it takes no label."""
        return self.classes is None and self.net.num_classes == 1


@dataclass
class Separation:
    """One separated recording: the mixture and its sources at the priors' rate, at the input's level."""
    mixture: torch.Tensor  # [L]
    sources: torch.Tensor  # [K, L]
    sample_rate: int
    names: list[str]
    labels: list
    auto_labels: dict
    level_gain: float
    silent: bool
    seconds: float
    input: AudioInfo  # the file (or array) as it was read: its rate, channels, length

    def at_input_rate(self) -> np.ndarray:
        """The sources [K, frames] at the input's sample rate and length."""
        return resample(self.sources.cpu().numpy(), self.sample_rate, self.input.sample_rate)[..., :self.input.frames]


def checkpoint_path(role: str, prior_cfg: DictConfig, override) -> Path:
    """The checkpoint to load: the override (relative to the working directory) or the prior
    config's own path (relative to the repository)."""
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise UnasdiffError(f"no checkpoint at {path} (checkpoints.{role})")
        return path
    path = REPO_ROOT / prior_cfg.checkpoint
    if not path.is_file():
        raise UnasdiffError(f"no {role} prior at {path}: put the published file {Path(prior_cfg.checkpoint).name} "
                            f"there (see README, 'Published priors'), pass checkpoints.{role}=PATH, or preset=bundled")
    return path


def load_priors(cfg: DictConfig, roles, device: torch.device) -> dict[str, Prior]:
    """One network per prior role (shared by all sources of that role); roles that load the same checkpoint
    with the same prior config (a prior of several roles) share one network, called once per step for both."""
    priors, loaded = {}, {}
    for role in dict.fromkeys(roles):
        if role not in cfg.priors:
            raise UnasdiffError(f"sources of role '{role}' need a prior; set priors.{role}=<config in configs/prior>")
        prior_cfg = prior_config(cfg.priors[role])
        override = cfg.checkpoints.get(role)
        path = checkpoint_path(role, prior_cfg, override)
        # a checkpoint of our own training carries its prior config (network and class names); a published
        # one uses the role's
        key = (path.resolve(), prior_cfg.name)
        if key not in loaded:
            net, loaded_cfg = load_prior_and_config(path, None if override else prior_cfg, default_config=prior_cfg)
            loaded[key] = net.to(device), loaded_cfg
        net, prior_cfg = loaded[key]
        set_template_gradient(net, cfg.template_gradient)
        log.info("%s prior: %s", role, path)
        priors[role] = Prior(role, prior_cfg, path, net)
        check_role(priors[role])
    return priors


def set_template_gradient(net: torch.nn.Module, gradient: str) -> None:
    """template_gradient for every spectral-template prior in `net` (itself, or the template of a residual prior)."""
    if gradient not in GRADIENTS:
        raise UnasdiffError(f"template_gradient must be one of {', '.join(GRADIENTS)}, not {gradient!r}")
    for module in net.modules():
        if isinstance(module, SpectralTemplatePrior):
            module.gradient = gradient


def check_role(prior: Prior) -> None:
    """Refuse a prior that cannot be the role's: a sound prior has the sound classes (or is an unlabelled
    one-class prior, like the bundled demo prior), a speech prior one class, unless its classes name the
    role (a prior of several roles, such as demo_two_class: a role is then that prior and its label)."""
    if prior.role == "sound" and not prior.unconditional and (
            prior.classes is None or prior.net.num_classes < len(prior.classes)):
        raise UnasdiffError(f"{prior.checkpoint} has {prior.net.num_classes} class(es): not a sound prior "
                            f"(checkpoints.sound must be a prior of the {len(prior.classes or [])} sound classes "
                            f"or a one-class prior)")
    if prior.role == "speech" and prior.net.num_classes != 1 and prior.role_class is None:
        raise UnasdiffError(f"{prior.checkpoint} has {prior.net.num_classes} classes: not a speech prior "
                            f"(checkpoints.speech must be a one-class prior)")


def given_labels(roles: list[str], wanted: list, priors: dict[str, Prior]) -> list:
    """Each source's label as configured: an index, None, or "auto" (checked once, before any file). None and
    "auto" are the role's own class where the prior's classes name the role (a prior of several roles)."""
    if len(wanted) != len(roles):
        raise UnasdiffError(f"labels has {len(wanted)} entries but there are {len(roles)} sources ({', '.join(roles)})")
    wanted = [priors[r].role_class if lab in (None, "auto") and priors[r].role_class is not None else lab
              for r, lab in zip(roles, wanted)]
    return [lab if lab is None or lab == "auto" else label_index(lab, priors[r].classes, priors[r].net.num_classes)
            for r, lab in zip(roles, wanted)]


def working_gain(mixture: torch.Tensor, level: DictConfig, num_sources: int) -> float:
    """The factor that brings the mixture to the level the priors work at (see configs/separation/default.yaml)."""
    if level.mode == "rms":
        return gain_to_rms(mixture, level.source_dbfs + 10 * math.log10(num_sources)).item()
    if level.mode == "peak":
        return level.peak_target / mixture.abs().max().item()
    if level.mode == "none":
        return 1.0
    raise UnasdiffError(f"level.mode must be rms, peak or none, not {level.mode!r}")


def segment_grouping(seconds, timbre, sample_rate: int) -> SegmentGrouping | None:
    """The grouping of interchangeable speech sources that sampler.speaker_grouping (segment seconds) and
    sampler.speaker_timbre (the weight of timbre beside pitch) ask for (None: off)."""
    if seconds is None:
        return None
    try:
        return SegmentGrouping(float(seconds), sample_rate, timbre_weight=float(timbre))
    except (TypeError, ValueError) as err:
        raise UnasdiffError(f"sampler.speaker_grouping={seconds} sampler.speaker_timbre={timbre}: {err}; give "
                            f"seconds such as 0.25 (null: no grouping) and a timbre weight such as 0.5 "
                            f"(0: pitch alone)") from None


class Separator:
    """The priors of a config, loaded once, and the settings that separate a mixture with them.

    cfg: a composed separate.yaml or evaluate.yaml (unasdiff.config.compose); roles: the source roles to load
    priors for (default: the task's)."""

    def __init__(self, cfg: DictConfig, roles: list[str] | None = None):
        if cfg.preset.name == "auto":
            raise UnasdiffError("preset=auto is decided when the config is composed: use unasdiff.config.compose "
                                "or Separator.from_config")
        check_start(cfg.sampler.init, cfg.sampler.start_step, DiffusionSchedule.linear().num_train_steps)
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        if self.device.type == "cpu":
            tune_cpu_allocator()
        self.grouping = segment_grouping(cfg.sampler.speaker_grouping, cfg.sampler.speaker_timbre,
                                         cfg.sample_rate)
        self.roles = list(cfg.task.sources or [])  # the task's sources, in output order
        self.priors = load_priors(cfg, roles or self.roles, self.device)
        limited = [role for role, p in self.priors.items() if not isinstance(p.net, SpectralTemplatePrior)]
        if cfg.window.block_seconds is not None and limited:
            log.warning("window.block_seconds gives the %s prior(s) blocks longer than window.seconds: networks "
                        "were trained on one length", ", ".join(limited))
        # evaluation passes its roles and takes each mixture's labels from the manifest
        self.labels = given_labels(self.roles, list(cfg.labels), self.priors) if roles is None and self.roles else None

    @classmethod
    def from_config(cls, overrides=(), config_name: str = "separate") -> "Separator":
        """A separator of configs/<config_name>.yaml with command-line style overrides."""
        return cls(compose(config_name, overrides))

    def describe(self) -> list[str]:
        """What separates, in a few lines: the preset, the priors, the sampler."""
        cfg, s = self.cfg, self.cfg.sampler
        lines = [f"preset: {cfg.preset.name}" + (f" ({cfg.preset.chosen_by})" if cfg.preset.chosen_by else "")]
        lines += [f"{role} prior: {p.config.name} ({p.checkpoint})" for role, p in self.priors.items()]
        init = f"the mixture noised to step {s.init_step}" if s.init == "mixture" else f"init {s.init}"
        start = "the last step" if s.start_step is None else f"step {s.start_step}"
        lines.append(f"sampler: {s.method}, {s.steps} steps from {start}, {init}, mean of {s.n_samples} sample(s), "
                     f"consistency {s.consistency}"
                     + ("" if s.speaker_grouping is None
                        else ", talkers grouped by pitch" + (f" and timbre (weight {s.speaker_timbre:g})"
                                                              if s.speaker_timbre else "")
                        + f" per {s.speaker_grouping:g} s"))
        templates = any(isinstance(m, SpectralTemplatePrior) for p in self.priors.values() for m in p.net.modules())
        blocks = "" if cfg.window.block_seconds is None else f" in blocks of up to {cfg.window.block_seconds:g} s"
        lines.append(f"windows: {cfg.window.seconds:g} s{blocks}, overlap {cfg.window.overlap:g}, "
                     f"{cfg.window.batch} per batch"
                     + (f"; template gradient {cfg.template_gradient}" if templates else ""))
        return lines

    def separate_file(self, path, labels: list | None = None) -> Separation:
        """Separate an audio file (any rate, channels, wav/flac/ogg/mp3)."""
        return self.separate_loaded(*load_audio(Path(path), self.cfg.sample_rate), labels)

    def separate_array(self, audio, sample_rate: int, labels: list | None = None) -> Separation:
        """Separate audio [L] or [channels, L] (numpy or torch, any rate)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim not in (1, 2) or audio.shape[-1] == 0:
            raise UnasdiffError(f"audio must be [L] or [channels, L] with L > 0, got shape {audio.shape}")
        info = AudioInfo("array", sample_rate, 1 if audio.ndim == 1 else audio.shape[0], audio.shape[-1], "float")
        mono = to_mono(audio) if audio.ndim == 2 else audio
        return self.separate_loaded(torch.from_numpy(resample(mono, sample_rate, self.cfg.sample_rate)), info, labels)

    def separate_loaded(self, mixture: torch.Tensor, info: AudioInfo, labels: list | None = None) -> Separation:
        """Separate a mixture [L] already at the priors' rate (load_audio's output); `info` is the input's."""
        started = time.perf_counter()
        if not self.roles or self.labels is None:
            raise UnasdiffError(f"task={self.cfg.task.name} names no sources to separate a recording into; "
                                f"pass a task such as task=speech_sound")
        labels = self.labels if labels is None else given_labels(self.roles, list(labels), self.priors)
        frame = max(p.net.n_fft for p in self.priors.values())
        if mixture.shape[-1] < frame:
            raise UnasdiffError(f"{info.path} lasts {1000 * info.frames / info.sample_rate:.1f} ms, shorter than "
                                f"one STFT frame of the priors ({frame} samples at {self.cfg.sample_rate} Hz)")
        mixture = mixture.float().to(self.device)
        sources, labels, auto, gain, silent = self.separate_mixture(mixture, self.roles, labels)
        return Separation(mixture, sources, self.cfg.sample_rate, self.source_names(self.roles, labels), labels,
                          auto, gain, silent, round(time.perf_counter() - started, 2), info)

    def separate_mixture(self, mixture: torch.Tensor, roles: list[str], labels: list):
        """mixture [L] at the priors' rate -> (sources [K, L] at its level, labels with "auto" chosen, the
        classifier's report, the working gain, whether it was silent). The seed restarts for every mixture."""
        generator = torch.Generator(self.device).manual_seed(self.cfg.seed)
        if is_silent(mixture):
            log.warning("the mixture is silent: its sources are silent")
            labels = [None if lab == "auto" else lab for lab in labels]
            return torch.zeros(len(roles), mixture.shape[-1], device=mixture.device), labels, {}, 1.0, True
        gain = working_gain(mixture, self.cfg.level, len(roles))
        labels, auto = self.resolve_auto_labels(roles, labels, gain * mixture, generator)
        return self.separate_at_level(gain * mixture, roles, labels, generator) / gain, labels, auto, gain, False

    def resolve_auto_labels(self, roles: list[str], labels: list, mixture: torch.Tensor,
                            generator: torch.Generator) -> tuple[list, dict]:
        """Replace every "auto" label by the classifier's choice (distinct classes within a prior)."""
        labels, report = list(labels), {}
        for role in dict.fromkeys(r for r, lab in zip(roles, labels) if lab == "auto"):
            prior = self.priors[role]
            if prior.unconditional:  # nothing to choose
                labels = [None if r == role and lab == "auto" else lab for r, lab in zip(roles, labels)]
                continue
            slots = [k for k, (r, lab) in enumerate(zip(roles, labels)) if r == role and lab == "auto"]
            taken = {lab for r, lab in zip(roles, labels) if r == role and lab not in (None, "auto")}
            names = prior.classes
            candidates = [c for c in range(len(names) if names else prior.net.num_classes) if c not in taken]
            errors = denoising_errors(prior.net, mixture, candidates, list(self.cfg.auto_label.steps),
                                      self.cfg.auto_label.draws, generator=generator)
            chosen = choose_labels(errors, candidates, len(slots))
            for k, c in zip(slots, chosen):
                labels[k] = c
            ranking = [(names[c] if names else c, round(errors[candidates.index(c)].item(), 5))
                       for c in choose_labels(errors, candidates, min(5, len(candidates)))]
            report[role] = {"chosen": [names[c] if names else c for c in chosen], "top5_error": ranking}
            log.info("labels=auto for %s: chose %s (lowest denoising error of %d classes)",
                     role, report[role]["chosen"], len(candidates))
        return labels, report

    def separate_at_level(self, mixture: torch.Tensor, roles: list[str], labels: list,
                          generator: torch.Generator) -> torch.Tensor:
        """mixture [L] at the priors' rate, already at the working level -> sources [K, L]; interchangeable
        sources (the same prior and label) keep one order across windows, and with sampler.speaker_grouping
        interchangeable talkers keep one voice each, segment by segment (grouping.py)."""
        cfg = self.cfg
        nets = [self.priors[role].net for role in roles]
        window, overlap = int(cfg.window.seconds * cfg.sample_rate), cfg.window.overlap
        groups = interchangeable_groups(nets, labels)
        separate_fn = partial(self.separate_windows, roles=roles, labels=labels, generator=generator)
        if cfg.window.block_seconds is not None:
            window, overlap, segment = guided_blocks(mixture.shape[-1], window, overlap,
                                                     int(cfg.window.block_seconds * cfg.sample_rate))
            separate_fn = partial(separate_fn, segment=segment)
        sources = separate_in_windows(mixture, separate_fn, window, overlap, cfg.window.batch, groups=groups,
                                      progress=cfg.progress)
        talkers = [group for group in groups if all(roles[k] == "speech" for k in group)]
        if self.grouping is None or not talkers:  # pitch tells talkers apart, not sounds (docs/two_speakers.md)
            return sources
        return self.grouping(sources[None], talkers)[0]  # over the whole recording: one voice per output

    def separate_windows(self, windows: torch.Tensor, roles: list[str], labels: list, generator: torch.Generator,
                         **changes):
        """Windows [N, W] at the working level -> sources [N, K, W], by the sampler of the config; `changes` are
        `separate`'s arguments to set otherwise (e.g. consistency="none", return_samples=True)."""
        sampler = self.cfg.sampler
        settings = dict(method=sampler.method, steps=sampler.steps, init=sampler.init, n_samples=sampler.n_samples,
                        consistency=sampler.consistency, label_guidance=sampler.label_guidance,
                        init_step=sampler.init_step, start_step=sampler.start_step,
                        objective=dict(sampler.objective), progress=self.cfg.progress,
                        **sampler.rules[sampler.method])
        return separate(windows, [self.priors[role].net for role in roles], labels, generator=generator,
                        **{**settings, **changes})

    def arbitrary_order(self, declared: bool, auto_labels: bool, roles: list[str], labels: list) -> bool:
        """Whether the output order of the sources says nothing of the true sources' (so they are scored in the
        order that fits best): declared so by the task, labels the classifier handed out among sources of one
        role, or interchangeable sources (the same prior and label)."""
        return (declared or auto_labels and len(set(roles)) < len(roles)
                or bool(interchangeable_groups([self.priors[role].net for role in roles], labels)))

    def source_names(self, roles: list[str], labels: list) -> list[str]:
        names = []
        for role, label in zip(roles, labels):
            classes = self.priors[role].classes
            names.append(classes[label] if classes and label is not None and label < len(classes) else role)
        return names
