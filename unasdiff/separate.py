"""The separation stage: mixture files in, one folder of wavs, a spectrogram and a JSON out each.

scripts/separate.py composes the config and calls `run(cfg)`. The path of one mixture:
load_audio (mono, 16 kHz) -> level to the priors' training range -> separate_in_windows (4 s windows,
each through unasdiff.separation.separate) -> undo the level -> back to the input's rate -> files.
"""

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .audio import AUDIO_SUFFIXES, gain_to_rms, is_silent, load_audio, resample, write_audio
from .config import REPO_ROOT
from .data.labels import class_names, label_index
from .errors import UnasdiffError
from .files import writable_folder, write_text
from .metrics import score_sources
from .models import load_prior_and_config, prior_config
from .plots import plot_spectrograms
from .runtime import pick_device, tune_cpu_allocator
from .separation import separate
from .separation.alignment import interchangeable_groups
from .separation.classify import choose_labels, denoising_errors
from .separation.windows import separate_in_windows

log = logging.getLogger(__name__)


@dataclass
class Prior:
    role: str  # "speech", "sound"
    config: DictConfig
    checkpoint: Path
    net: torch.nn.Module
    fallback: bool = False  # the bundled prior, standing in for a published one that is not there

    @property
    def classes(self):
        return class_names(self.config.get("classes"))

    @property
    def role_class(self) -> int | None:
        """The label of the role, for a prior of several roles (its classes name the role); else None."""
        classes = self.classes or ()
        return classes.index(self.role) if self.role in classes else None


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
        raise UnasdiffError(f"no {role} prior at {path}: put the published file {Path(prior_cfg.checkpoint).name} there "
                            f"(see README, 'Published priors') or pass checkpoints.{role}=PATH")
    return path


def role_prior_config(cfg: DictConfig, role: str) -> tuple[DictConfig, bool]:
    """The prior config of a role and whether it is the fallback: priors.<role>, or fallback_priors.<role> (a
    bundled prior) when the former's checkpoint is not there and no checkpoint is given (scripts/separate.py)."""
    prior_cfg = prior_config(cfg.priors[role])
    fallback = (cfg.get("fallback_priors") or {}).get(role)
    if fallback and not cfg.checkpoints.get(role) and not (REPO_ROOT / prior_cfg.checkpoint).is_file():
        bundled = prior_config(fallback)
        log.warning("no published %s prior at %s: using the bundled prior %s. %s (README, 'Bundled priors')",
                    role, REPO_ROOT / prior_cfg.checkpoint, bundled.checkpoint,
                    bundled.get("measured", "A small prior, far weaker than the published one."))
        return bundled, True
    return prior_cfg, False


def load_priors(cfg: DictConfig, roles, device: torch.device) -> dict[str, Prior]:
    """One network per prior role (shared by all sources of that role); roles that load the same checkpoint
    with the same prior config (a prior of several roles) share one network, called once per step for both."""
    priors, loaded = {}, {}
    for role in dict.fromkeys(roles):
        if role not in cfg.priors:
            raise UnasdiffError(f"sources of role '{role}' need a prior; set priors.{role}=<config in configs/prior>")
        prior_cfg, fallback = role_prior_config(cfg, role)
        override = cfg.checkpoints.get(role)
        path = checkpoint_path(role, prior_cfg, override)
        # a checkpoint of our own training carries its prior config (network and class names); a published
        # one uses the role's
        key = (path.resolve(), prior_cfg.name)
        if key not in loaded:
            net, loaded_cfg = load_prior_and_config(path, None if override else prior_cfg, default_config=prior_cfg)
            loaded[key] = net.to(device), loaded_cfg
        net, prior_cfg = loaded[key]
        log.info("%s prior: %s", role, path)
        priors[role] = Prior(role, prior_cfg, path, net, fallback)
        check_role(priors[role])
    return priors


def is_unconditional(prior: Prior) -> bool:
    """A one-class prior without class names (speech, or an unlabelled sound prior): it takes no label."""
    return prior.classes is None and prior.net.num_classes == 1


def check_role(prior: Prior) -> None:
    """Refuse a prior that cannot be the role's: a sound prior has the sound classes (or is an unlabelled
    one-class prior, like the bundled demo prior), a speech prior one class, unless its classes name the
    role (a prior of several roles, such as demo_two_class: a role is then that prior and its label)."""
    if prior.role == "sound" and not is_unconditional(prior) and (
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


def resolve_auto_labels(cfg: DictConfig, roles: list[str], priors: dict[str, Prior], labels: list,
                        mixture: torch.Tensor, generator: torch.Generator) -> tuple[list, dict]:
    """Replace every "auto" label by the classifier's choice (distinct classes within a prior)."""
    labels, report = list(labels), {}
    for role in dict.fromkeys(r for r, lab in zip(roles, labels) if lab == "auto"):
        prior = priors[role]
        if is_unconditional(prior):  # nothing to choose
            labels = [None if r == role and lab == "auto" else lab for r, lab in zip(roles, labels)]
            continue
        slots = [k for k, (r, lab) in enumerate(zip(roles, labels)) if r == role and lab == "auto"]
        taken = {lab for r, lab in zip(roles, labels) if r == role and lab not in (None, "auto")}
        names = prior.classes
        candidates = [c for c in range(len(names) if names else prior.net.num_classes) if c not in taken]
        errors = denoising_errors(prior.net, mixture, candidates, list(cfg.auto_label.steps), cfg.auto_label.draws,
                                  generator=generator)
        chosen = choose_labels(errors, candidates, len(slots))
        for k, c in zip(slots, chosen):
            labels[k] = c
        ranking = [(names[c] if names else c, round(errors[candidates.index(c)].item(), 5))
                   for c in choose_labels(errors, candidates, min(5, len(candidates)))]
        report[role] = {"chosen": [names[c] if names else c for c in chosen], "top5_error": ranking}
        log.info("labels=auto for %s: chose %s (lowest denoising error of %d classes)",
                 role, report[role]["chosen"], len(candidates))
    return labels, report


def source_names(roles: list[str], priors: dict[str, Prior], labels: list) -> list[str]:
    names = []
    for role, label in zip(roles, labels):
        classes = priors[role].classes
        names.append(classes[label] if classes and label is not None and label < len(classes) else role)
    return names


def separate_waveform(mixture: torch.Tensor, roles: list[str], labels: list, cfg: DictConfig,
                      priors: dict[str, Prior], generator: torch.Generator) -> torch.Tensor:
    """mixture [L] at the priors' rate, already at the working level -> sources [K, L]; interchangeable
    sources (the same prior and label) keep one order across windows."""
    sampler = cfg.sampler
    nets = [priors[role].net for role in roles]

    def separate_windows(windows):
        return separate(windows, nets, labels, method=sampler.method, steps=sampler.steps, init=sampler.init,
                        n_samples=sampler.n_samples, consistency=sampler.consistency,
                        label_guidance=sampler.label_guidance, generator=generator,
                        init_step=sampler.init_step, start_step=sampler.start_step, objective=dict(sampler.objective),
                        progress=cfg.progress, **sampler.rules[sampler.method])

    window = int(cfg.window.seconds * cfg.sample_rate)
    return separate_in_windows(mixture, separate_windows, window, cfg.window.overlap, cfg.window.batch,
                               groups=interchangeable_groups(nets, labels), progress=cfg.progress)


def arbitrary_order(declared: bool, auto_labels: bool, roles: list[str], labels: list,
                    priors: dict[str, Prior]) -> bool:
    """Whether the output order of the sources says nothing of the true sources' (so they are scored in the
    order that fits best): declared so by the task, labels the classifier handed out among sources of one
    role, or interchangeable sources (the same prior and label)."""
    return (declared or auto_labels and len(set(roles)) < len(roles)
            or bool(interchangeable_groups([priors[role].net for role in roles], labels)))


def working_gain(mixture: torch.Tensor, level: DictConfig, num_sources: int) -> float:
    """The factor that brings the mixture to the level the priors work at (see configs/separate.yaml)."""
    if level.mode == "rms":
        return gain_to_rms(mixture, level.source_dbfs + 10 * math.log10(num_sources)).item()
    if level.mode == "peak":
        return level.peak_target / mixture.abs().max().item()
    if level.mode == "none":
        return 1.0
    raise UnasdiffError(f"level.mode must be rms, peak or none, not {level.mode!r}")


def read_true_sources(paths: list[Path], length: int, sample_rate: int, roles: list[str]) -> torch.Tensor:
    """The true sources [K, L] at the priors' rate, checked against the mixture's sources and length."""
    if len(paths) != len(roles):
        raise UnasdiffError(f"true_sources names {len(paths)} files but the task has {len(roles)} sources "
                            f"({', '.join(roles)})")
    sources = []
    for path in paths:
        audio = load_audio(path, sample_rate)[0]
        if abs(audio.shape[-1] - length) > sample_rate // 100:  # more than 10 ms apart: not this mixture's
            raise UnasdiffError(f"true source {path} lasts {audio.shape[-1] / sample_rate:.2f} s but the mixture "
                                f"{length / sample_rate:.2f} s")
        sources.append(torch.nn.functional.pad(audio, (0, max(0, length - audio.shape[-1])))[:length])
    return torch.stack(sources)


def separate_file(path: Path, out_dir: Path, cfg: DictConfig, priors: dict[str, Prior], labels: list,
                  device: torch.device, true_sources: list[Path] | None = None) -> dict:
    """Separate one file into out_dir (scored against true_sources when given); returns the summary that
    is also written as separation.json."""
    started = time.perf_counter()
    generator = torch.Generator(device).manual_seed(cfg.seed)
    mixture, info = load_audio(path, cfg.sample_rate)
    mixture = mixture.to(device)
    roles = list(cfg.task.sources)
    k = len(roles)
    frame = max(p.net.n_fft for p in priors.values())
    if mixture.shape[-1] < frame:
        raise UnasdiffError(f"{path} lasts {1000 * info.frames / info.sample_rate:.1f} ms, shorter than one STFT frame "
                            f"of the priors ({frame} samples at {cfg.sample_rate} Hz)")
    # read before separating: a true source that does not fit is reported at once, not after the sampler
    truth = read_true_sources(true_sources, mixture.shape[-1], cfg.sample_rate, roles) if true_sources else None
    silent = bool(is_silent(mixture))
    gain = 1.0 if silent else working_gain(mixture, cfg.level, k)
    if silent:
        log.warning("%s is silent: its sources are silent", path)
        labels, auto = [None if lab == "auto" else lab for lab in labels], {}
        sources = torch.zeros(k, mixture.shape[-1], device=device)
    else:
        labels, auto = resolve_auto_labels(cfg, roles, priors, labels, gain * mixture, generator)
        sources = separate_waveform(gain * mixture, roles, labels, cfg, priors, generator) / gain
    names = source_names(roles, priors, labels)
    scores = None
    if truth is not None:
        arbitrary = arbitrary_order(bool(cfg.task.permutation_invariant), bool(auto), roles, labels, priors)
        metrics, order = score_sources(sources.cpu(), truth, mixture.cpu(), arbitrary)
        scores = {"order": order.tolist(), **{name: [None if math.isnan(v) else round(v, 3) for v in values.tolist()]
                                              for name, values in metrics.items()}}

    out_dir.mkdir(parents=True, exist_ok=True)
    original = resample(sources.cpu().numpy(), cfg.sample_rate, info.sample_rate)[..., :info.frames]
    files = []
    for i, (name, wave) in enumerate(zip(names, original)):
        files.append(str(write_audio(out_dir / f"source_{i}_{name}.wav", wave, info.sample_rate, cfg.write.subtype)))
    if cfg.write.spectrogram:
        panels = {"mixture": mixture.cpu()}
        for i, (name, estimate) in enumerate(zip(names, sources.cpu())):
            panels[f"source {i}: {name} (separated)"] = estimate
            if truth is not None:
                panels[f"source {i}: {name} (true)"] = truth[scores["order"].index(i)]
        files.append(str(plot_spectrograms(panels, cfg.sample_rate, out_dir / "spectrograms.png", title=path.name)))
    summary = {
        "mixture": str(path), "input": {"sample_rate": info.sample_rate, "channels": info.channels,
                                        "frames": info.frames, "subtype": info.subtype},
        "sources": names, "labels": labels, "auto_labels": auto, "scores": scores, "silent_input": silent,
        "level_gain": gain, "priors": {r: {"config": p.config.name, "checkpoint": str(p.checkpoint)}
                                       for r, p in priors.items()},
        "device": str(device), "seconds": round(time.perf_counter() - started, 2), "files": files,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_text(out_dir / "separation.json", json.dumps(summary, indent=2, default=str))
    return summary


def mixture_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise UnasdiffError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {path}")
        return files
    if not path.exists():
        raise UnasdiffError(f"mixture not found: {path}")
    return [path]


def bundled_example(cfg: DictConfig) -> tuple[Path, list[Path]]:
    """The example's mixture and true sources (true_<k>_<role>.wav, in source order)."""
    folder = REPO_ROOT / cfg.example.folder
    truth = sorted(folder.glob("true_*.wav"))
    if not (folder / "mixture.wav").is_file() or not truth:
        raise UnasdiffError(f"the bundled example is missing from {folder}; pass mixture=PATH")
    roles = [p.stem.split("_", 2)[2] for p in truth]
    if roles != list(cfg.task.sources):
        raise UnasdiffError(f"the bundled example holds {' + '.join(roles)} but task={cfg.task.name} separates "
                            f"{' + '.join(cfg.task.sources)}; pass mixture=PATH")
    return folder / "mixture.wav", truth


def print_summary(path: Path, out_dir: Path, summary: dict) -> None:
    print(f"{path.name}: {', '.join(summary['sources'])} -> {out_dir}/ ({summary['seconds']} s)")
    if summary["scores"]:
        for k, name in enumerate(summary["sources"]):
            leak = summary["scores"]["leak"][k]
            leak = "" if leak is None else f", holds {leak:.1f} dB of the other sources' own bins"
            print(f"  source {k} ({name}): SI-SDR {summary['scores']['si_sdr'][k]:.2f} dB, "
                  f"SI-SDRi {summary['scores']['si_sdri'][k]:.2f} dB against the true source{leak}")


def run(cfg: DictConfig) -> int:
    """Separate cfg.mixture (a file or a folder; the bundled example when null). In a folder a bad file is
    reported and skipped; returns the number of such failures. Errors of the set-up (config, checkpoints, a
    single file) raise."""
    device = pick_device(cfg.device)
    if device.type == "cpu":
        tune_cpu_allocator()
    true_sources = [Path(p).expanduser() for p in cfg.true_sources] if cfg.true_sources else None
    if cfg.mixture is None:
        source, true_sources = bundled_example(cfg)
        print(f"no mixture given: separating the bundled example {source.relative_to(REPO_ROOT)}")
    else:
        source = Path(cfg.mixture).expanduser()
    files = mixture_files(source)
    if true_sources and source.is_dir():
        raise UnasdiffError("true_sources go with a single mixture file, not a folder")
    out_root = writable_folder(cfg.output_dir, "output_dir")
    priors = load_priors(cfg, cfg.task.sources, device)
    for role, prior in priors.items():
        print(f"{role} prior: {prior.config.name} ({prior.checkpoint})")
    if any(p.fallback for p in priors.values()) and cfg.get("fallback_sampler"):
        cfg.sampler = OmegaConf.merge(cfg.sampler, cfg.fallback_sampler)
        init = f", mixture noised to step {cfg.sampler.init_step}" if cfg.sampler.init == "mixture" else ""
        start = "" if cfg.sampler.start_step is None else f" from step {cfg.sampler.start_step}"
        print(f"sampler for the bundled priors: {cfg.sampler.method}, {cfg.sampler.steps} steps{start}{init}, mean of "
              f"{cfg.sampler.n_samples} sample(s), consistency {cfg.sampler.consistency} "
              f"(fallback_sampler in configs/separate.yaml)")
    labels = given_labels(list(cfg.task.sources), list(cfg.labels), priors)
    if not source.is_dir():
        summary = separate_file(source, out_root, cfg, priors, labels, device, true_sources)
        print_summary(source, out_root, summary)
        return 0
    failures = 0
    for path in files:
        out_dir = out_root / path.stem
        try:
            summary = separate_file(path, out_dir, cfg, priors, labels, device)
        except UnasdiffError as err:
            failures += 1
            log.error("skipped %s: %s", path, err)
            continue
        print_summary(path, out_dir, summary)
    return failures
