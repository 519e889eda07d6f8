"""The separation command: mixture files in, one folder of wavs, a spectrogram and a JSON out each.

scripts/separate.py composes the config and calls `run(cfg)`; the separation itself is
unasdiff.pipeline.Separator (the same object the API and evaluation use). This module reads the inputs,
scores against true sources when given, and writes the files.
"""

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .audio import AUDIO_SUFFIXES, load_audio, write_audio
from .config import REPO_ROOT
from .errors import UnasdiffError
from .files import writable_folder, write_text
from .metrics import score_sources
from .pipeline import Separation, Separator
from .plots import plot_spectrograms

log = logging.getLogger(__name__)


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


def score(separator: Separator, result: Separation, truth: torch.Tensor) -> dict:
    """SI-SDR, SI-SDRi, SDR, leakage and swap share of each source, in the order that fits where the order is
    arbitrary."""
    roles = separator.roles
    arbitrary = separator.arbitrary_order(bool(separator.cfg.task.permutation_invariant), bool(result.auto_labels),
                                          roles, result.labels)
    metrics, order = score_sources(result.sources.cpu(), truth, result.mixture.cpu(), arbitrary, result.sample_rate)
    return {"order": order.tolist(), **{name: [None if math.isnan(v) else round(v, 3) for v in values.tolist()]
                                        for name, values in metrics.items()}}


def separate_file(separator: Separator, path: Path, out_dir: Path, true_sources: list[Path] | None = None) -> dict:
    """Separate one file into out_dir (scored against true_sources when given); returns the summary that
    is also written as separation.json."""
    cfg = separator.cfg
    mixture, info = load_audio(path, cfg.sample_rate)
    # read before separating: a true source that does not fit is reported at once, not after the sampler
    truth = (read_true_sources(true_sources, mixture.shape[-1], cfg.sample_rate, separator.roles)
             if true_sources else None)
    result = separator.separate_loaded(mixture, info)
    scores = None if truth is None else score(separator, result, truth)

    out_dir.mkdir(parents=True, exist_ok=True)
    files = [str(write_audio(out_dir / f"source_{i}_{name}.wav", wave, info.sample_rate, cfg.write.subtype))
             for i, (name, wave) in enumerate(zip(result.names, result.at_input_rate()))]
    if cfg.write.spectrogram:
        panels = {"mixture": result.mixture.cpu()}
        for i, (name, estimate) in enumerate(zip(result.names, result.sources.cpu())):
            panels[f"source {i}: {name} (separated)"] = estimate
            if truth is not None:
                panels[f"source {i}: {name} (true)"] = truth[scores["order"].index(i)]
        files.append(str(plot_spectrograms(panels, cfg.sample_rate, out_dir / "spectrograms.png", title=path.name)))
    summary = {
        "mixture": str(path), "input": {k: v for k, v in asdict(info).items() if k != "path"},
        "sources": result.names, "labels": result.labels,
        "auto_labels": result.auto_labels, "scores": scores, "silent_input": result.silent,
        "level_gain": result.level_gain, "preset": OmegaConf.to_container(cfg.preset),
        "priors": {r: {"config": p.config.name, "checkpoint": str(p.checkpoint)} for r, p in separator.priors.items()},
        "device": str(separator.device), "seconds": result.seconds, "files": files,
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
    if roles != list(cfg.task.sources or []):
        raise UnasdiffError(f"the bundled example holds {' + '.join(roles)} but task={cfg.task.name} separates "
                            f"{' + '.join(cfg.task.sources or ['no sources'])}; pass mixture=PATH")
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
    separator = Separator(cfg)
    for line in separator.describe():
        print(line)
    if not source.is_dir():
        summary = separate_file(separator, source, out_root, true_sources)
        print_summary(source, out_root, summary)
        return 0
    failures = 0
    for path in files:
        out_dir = out_root / path.stem
        try:
            summary = separate_file(separator, path, out_dir)
        except UnasdiffError as err:
            failures += 1
            log.error("skipped %s: %s", path, err)
            continue
        print_summary(path, out_dir, summary)
    return failures
