"""The evaluation stage: every mixture of a manifest separated, scored and written down as it goes.

scripts/evaluate.py composes the config and calls `run(cfg)`. Per mixture: render it from the
manifest (unasdiff.data.mixtures) -> the same separation path as scripts/separate.py -> SI-SDR,
SI-SDRi, SDR, leakage and swap share per source (in fixed order, or under the best permutation where the order is
arbitrary) -> one CSV row, flushed. A stopped run resumes and skips the mixtures already in the CSV.
Under torchrun each process takes every N-th mixture and rank 0 merges the parts. Each system's
summary.json lands in results/<task>/<system>/, and results/<task>/table.md is rebuilt from all of
them, so a Hydra multirun over samplers yields the ablation table.
"""

import csv
import hashlib
import json
import logging
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from .audio import write_audio
from .data.crops import ResampledCache
from .data.labels import label_index
from .data.mixtures import (
    SourcePools,
    demo_manifest,
    make_manifest,
    missing_files,
    read_file,
    read_manifest,
    render,
    write_manifest,
)
from .errors import UnasdiffError
from .files import atomic_path, writable_folder, write_text
from .metrics import permute_sources, score_sources
from .pipeline import Separator
from .runtime import start_processes

log = logging.getLogger(__name__)
# leak: dB of the other sources' own bins (metrics.leakage); swap: share of half-seconds that are another source's
METRICS = ("si_sdr", "si_sdri", "sdr", "leak", "swap")


def corpus_roots(cfg: DictConfig) -> dict:
    data = cfg.data
    roots = {"speech": data.speech_folder or data.vctk_root, "sound": data.sound_folder or data.fsd_root}
    if cfg.task.name == "demo":
        roots["files"] = demo_folder(cfg.demo_root)
    return roots


def demo_folder(demo_root) -> Path:
    """The demo mixtures' folder: docs/audios of a clone of the reference repository, or that folder itself."""
    if not demo_root:
        raise UnasdiffError("task=demo needs demo_root=PATH: a clone of the reference repository "
                            "(git clone https://github.com/RunwuShi/unasdiff) or its docs/audios folder")
    root = Path(demo_root).expanduser()
    return root / "docs" / "audios" if (root / "docs" / "audios").is_dir() else root


def obtain_manifest(cfg: DictConfig, roots: dict, is_main: bool) -> dict:
    """The demo set, or the task's manifest (written first when make_manifest=true)."""
    if cfg.task.name == "demo":
        return demo_manifest(roots["files"])
    path = Path(cfg.manifest)
    if cfg.make_manifest and is_main:
        if path.exists() and not cfg.overwrite_manifest:
            raise UnasdiffError(f"{path} exists: every run must score the same mixtures; set overwrite_manifest=true "
                                f"to replace it, or another manifest=PATH")
        roles = list(cfg.task.sources)
        speech, sound = "speech" in roles, "sound" in roles  # read only the corpora the task draws from
        d = cfg.data
        pools = SourcePools(d.vctk_root if speech else None, d.fsd_root if sound else None, d.mic,
                            d.speech_folder if speech else None, d.sound_folder if sound else None)
        r = cfg.recipe
        manifest = make_manifest(cfg.task.name, roles, pools, cfg.n_mixtures, cfg.manifest_seed, cfg.sample_rate,
                                 r.seconds, tuple(r.level_dbfs), r.min_active, r.min_dbfs, cfg.data.cache_dir)
        write_manifest(manifest, path)
        log.info("wrote %d mixtures to %s", len(manifest["mixtures"]), path)
    if dist.is_initialized():
        dist.barrier()
    return read_manifest(path)


def done_ids(path: Path) -> set[str]:
    """Ids already scored; a last row cut short by a kill is dropped, so it is scored again."""
    if not path.is_file():
        return set()
    text = path.read_bytes()
    if text and not text.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(text.rfind(b"\n") + 1)
    with open(path, newline="") as f:
        return {row["id"] for row in csv.DictReader(f)}


def widened_columns(columns: list[str], row: dict) -> list[str]:
    """The columns of a scores file, widened by the per-source columns of a row with more sources than the
    rows before it (<metric>_2 of a 3-source mixture after 2-source ones), each placed after the row's key
    before it. A metric the file began without (no mean_<metric> column) stays out: its mean over only the
    later mixtures would not be comparable with other systems' means."""
    columns = list(columns)
    keys = list(row)
    for i, key in enumerate(keys):
        if key not in columns and f"mean_{key.rsplit('_', 1)[0]}" in columns:
            before = keys[i - 1] if i else None
            columns.insert(columns.index(before) + 1 if before in columns else len(columns), key)
    return columns


def write_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    """A whole scores file, atomically; cells a row does not have are left empty."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def append_row(path: Path, row: dict) -> None:
    """One row, flushed to disk before the next mixture starts (a killed run keeps every finished row).
    A file begun before a metric existed keeps its columns; one whose rows had fewer sources is widened."""
    header = None
    if path.is_file():
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if header and (wider := widened_columns(header, row)) != header:  # rare: only then are the rows read
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            header = wider
            write_rows(path, header, rows)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header or list(row), restval="", extrasaction="ignore")
        if not header:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def evaluate_mixture(entry: dict, separator: Separator, roots, cache, given_labels: bool):
    """Separate and score one manifest entry -> (CSV row, mixture, truth, estimate)."""
    started = time.perf_counter()
    cfg, priors, device = separator.cfg, separator.priors, separator.device
    mixture, truth = render(entry, roots, cfg.sample_rate, entry.get("seconds", cfg.recipe.seconds), cache)
    mixture, truth = mixture.to(device), truth.to(device)
    roles = [src["role"] for src in entry["sources"]]
    labels = []
    for role, src in zip(roles, entry["sources"]):
        if priors[role].role_class is not None:  # a prior of several roles: the role is its label
            labels.append(priors[role].role_class)
        elif role != "sound" or priors[role].unconditional:
            labels.append(None)
        elif given_labels and src.get("label") is not None:
            labels.append(label_index(src["label"], priors[role].classes, priors[role].net.num_classes))
        else:
            labels.append("auto")
    estimate, labels, _, _, _ = separator.separate_mixture(mixture, roles, labels)
    auto = not given_labels or any(src.get("label") is None and src["role"] == "sound" for src in entry["sources"])
    permutation_invariant = separator.arbitrary_order(bool(entry.get("permutation_invariant")), auto, roles, labels)
    metrics, order = score_sources(estimate.cpu(), truth.cpu(), mixture.cpu(), permutation_invariant,
                                   cfg.sample_rate)
    row = {"id": entry["id"], "group": entry.get("group", cfg.task.name), "roles": " ".join(roles),
           "labels": " ".join("-" if lab is None else str(lab) for lab in labels),
           "order": " ".join(map(str, order.tolist()))}
    row.update(metric_columns(metrics))
    row["seconds"] = f"{time.perf_counter() - started:.1f}"
    return row, mixture.cpu(), truth.cpu(), permute_sources(estimate.cpu()[None], order[None])[0]


def metric_columns(metrics: dict) -> dict:
    """CSV columns of score_sources' metrics: <metric>_<k> per source and mean_<metric> (NaN leakage, where
    no other source has bins of its own, is left out of the mean)."""
    columns = {}
    for name in METRICS:
        for k, value in enumerate(metrics[name].tolist()):
            columns[f"{name}_{k}"] = f"{value:.4f}"
        columns[f"mean_{name}"] = f"{metrics[name].nanmean().item():.4f}"
    return columns


def summarise(rows: list[dict]) -> dict:
    """mean, std and median of each metric, over all sources and per source role and per group."""
    def stats(values):
        return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "median": statistics.median(values),
                "count": len(values)}

    buckets: dict[str, dict[str, list]] = {}
    for row in rows:
        roles = row["roles"].split()
        for k, role in enumerate(roles):
            for bucket in ("all", f"role:{role}", f"group:{row['group']}"):
                for name in METRICS:
                    # rows of a results file written before a metric existed lack its columns
                    value = float(row.get(f"{name}_{k}") or "nan")
                    if math.isfinite(value):
                        buckets.setdefault(bucket, {}).setdefault(name, []).append(value)
    return {bucket: {name: stats(v) for name, v in metrics.items()} for bucket, metrics in buckets.items()}


def write_summary(out_dir: Path, system: str, rows: list[dict], extra: dict) -> dict:
    summary = {"system": system, "mixtures": len(rows), "scores": summarise(rows), **extra}
    write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    return summary


def write_table(task_dir: Path) -> Path:
    """results/<task>/table.md: one row per system (every summary.json below task_dir), SI-SDR mean ± std."""
    summaries = [json.loads(p.read_text()) for p in sorted(task_dir.glob("*/summary.json"))]
    buckets = sorted({b for s in summaries for b in s["scores"] if b != "all"})
    lines = ["| system | mixtures | SI-SDR | SI-SDRi | SDR | leakage | swap share | "
             + " | ".join(f"SI-SDR {b.split(':', 1)[1]}" for b in buckets) + " |",
             "| --- " * (2 + len(METRICS) + len(buckets)) + "|"]
    for s in summaries:
        a = s["scores"]["all"]
        cells = [f"{s['system']}", str(s["mixtures"])] + [f"{a[m]['mean']:.2f} ± {a[m]['std']:.2f}" if m in a else ""
                                                          for m in METRICS]
        cells += [f"{s['scores'][b]['si_sdr']['mean']:.2f}" if b in s["scores"] else "" for b in buckets]
        lines.append("| " + " | ".join(cells) + " |")
    return write_text(task_dir / "table.md", "\n".join(lines) + "\n")


def score_reference_outputs(manifest: dict, roots: dict, cfg: DictConfig, task_dir: Path) -> None:
    """The reference system's published separations (demo set) scored as a system of the same table."""
    rows = []
    cache = ResampledCache(cfg.sample_rate, None)
    for entry in manifest["mixtures"]:
        mixture, truth = render(entry, roots, cfg.sample_rate, None, cache)
        estimate = torch.stack([read_file(Path(roots["files"]) / s["reference_output"], cfg.sample_rate)
                                for s in entry["sources"]])
        metrics, order = score_sources(estimate, truth, mixture, True, cfg.sample_rate)
        row = {"id": entry["id"], "group": entry["group"], "roles": " ".join(s["role"] for s in entry["sources"])}
        rows.append({**row, **metric_columns(metrics)})
    out = task_dir / "reference-published-outputs"
    out.mkdir(parents=True, exist_ok=True)
    write_summary(out, "reference (published outputs)", rows, {"note": "sepa_*.wav of the demo set, best permutation"})


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scoring_settings(cfg: DictConfig, separator: Separator, manifest: dict) -> dict:
    """Everything that changes a system's scores: the test set, the priors (config and checkpoint content),
    the sampler with every rule constant, labels, level, windows, the classifier, the seed and the device
    type (CPU and GPU draw different noise). Two runs share a results folder only if these are equal."""
    mixtures = json.dumps(manifest["mixtures"], sort_keys=True).encode()
    return {
        "task": cfg.task.name, "test_set": hashlib.sha256(mixtures).hexdigest(),
        "priors": {role: {"config": OmegaConf.to_container(p.config, resolve=True), "checkpoint": str(p.checkpoint),
                          "sha256": file_digest(p.checkpoint)} for role, p in sorted(separator.priors.items())},
        **{key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("sampler", "level", "window", "auto_label")},
        "labels": OmegaConf.to_container(cfg.labels) if OmegaConf.is_config(cfg.labels) else cfg.labels,
        "seed": cfg.seed, "sample_rate": cfg.sample_rate, "device": separator.device.type,
        "template_gradient": cfg.template_gradient,
    }


def settings_id(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def differences(old, new, prefix="") -> list[str]:
    """The dotted keys whose values differ between two nested settings."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new))
                for d in differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def claim_folder(out_dir: Path, settings: dict) -> None:
    """Record the settings in out_dir/settings.json, or check that the folder's scores are of these settings:
    a folder with other settings, or with scores and no record of theirs, is refused (never reused silently)."""
    record = out_dir / "settings.json"
    if record.is_file():
        stored = json.loads(record.read_text())
        if stored != settings:
            changed = differences(stored, settings)
            raise UnasdiffError(f"{out_dir} holds scores of other settings (differing: {', '.join(changed[:4])}"
                                f"{' ...' if len(changed) > 4 else ''}): leave output_dir unset (each set of settings "
                                f"gets its own folder) or name a new one")
        return
    if (out_dir / "scores.csv").is_file() or list(out_dir.glob("scores.rank*.csv")):
        raise UnasdiffError(f"{out_dir} holds scores but no settings.json saying what they are of: move it away, "
                            f"or name a new output_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(record, json.dumps(settings, indent=1, sort_keys=True))


def run(cfg: DictConfig) -> Path:
    """Evaluate one system on one manifest; returns its results folder (results/<task>/<system>-<settings id>/,
    beside results/<task>/table.md)."""
    proc = start_processes(cfg.device)
    if proc.is_main:
        writable_folder(cfg.results_root if cfg.output_dir is None else cfg.output_dir, "results_root (or output_dir)")
    roots = corpus_roots(cfg)
    manifest = obtain_manifest(cfg, roots, proc.is_main)
    if cfg.labels not in ("given", "auto"):
        raise UnasdiffError(f"labels must be given or auto for evaluation, not {cfg.labels!r}")
    roles = sorted({src["role"] for entry in manifest["mixtures"] for src in entry["sources"]})
    separator = Separator(cfg, roles)
    settings = scoring_settings(cfg, separator, manifest)  # of the whole test set: max_mixtures only stops early
    system = f"{cfg.system}-{settings_id(settings)}"
    out_dir = Path(cfg.output_dir) if cfg.output_dir else Path(cfg.results_root) / cfg.task.name / system
    task_dir = out_dir.parent
    if cfg.max_mixtures is not None:
        manifest = {**manifest, "mixtures": manifest["mixtures"][:cfg.max_mixtures]}
    missing = missing_files(manifest, roots)
    if missing:
        raise UnasdiffError(f"the manifest names {len(missing)} missing file(s): {', '.join(missing[:3])}"
                            f"{' ...' if len(missing) > 3 else ''} (check data.vctk_root / data.fsd_root / demo_root)")
    if proc.is_main:
        claim_folder(out_dir, settings)
        print(f"results: {out_dir}")
    if proc.world > 1:
        dist.barrier()
    part = out_dir / (f"scores.rank{proc.rank}.csv" if proc.world > 1 else "scores.csv")
    finished = done_ids(part)
    if finished and proc.is_main:
        log.info("resuming: %d of %d mixtures already scored in %s", len(finished), len(manifest["mixtures"]), part)
    cache = ResampledCache(cfg.sample_rate, cfg.data.cache_dir)
    mine = [e for i, e in enumerate(manifest["mixtures"]) if i % proc.world == proc.rank]
    for index, entry in enumerate(tqdm(mine, desc="mixtures", disable=not (cfg.progress and proc.is_main))):
        if entry["id"] in finished:
            continue
        row, mixture, truth, estimate = evaluate_mixture(entry, separator, roots, cache, cfg.labels == "given")
        append_row(part, row)
        if index * proc.world + proc.rank < cfg.write_wavs:
            folder = out_dir / "wavs" / entry["id"]
            write_audio(folder / "mix.wav", mixture, cfg.sample_rate, "float")
            for k in range(truth.shape[0]):
                write_audio(folder / f"true_{k}.wav", truth[k], cfg.sample_rate, "float")
                write_audio(folder / f"separated_{k}.wav", estimate[k], cfg.sample_rate, "float")
    if proc.world > 1:
        dist.barrier()
    if proc.is_main:
        rows = merged_rows(out_dir, proc.world, manifest)
        write_summary(out_dir, system, rows, {"manifest": str(cfg.manifest) if cfg.task.name != "demo" else "demo",
                                              "config": OmegaConf.to_container(cfg, resolve=True)})
        if cfg.task.name == "demo" and cfg.score_reference:
            score_reference_outputs(manifest, roots, cfg, task_dir)
        print(write_table(task_dir).read_text())
    if proc.world > 1:
        dist.destroy_process_group()
    return out_dir


def merged_rows(out_dir: Path, world: int, manifest: dict) -> list[dict]:
    """All rows in manifest order; with several processes, their parts merged into scores.csv."""
    parts = [out_dir / "scores.csv"] if world == 1 else [out_dir / f"scores.rank{r}.csv" for r in range(world)]
    rows = {}
    for part in parts:
        if part.is_file():
            with open(part, newline="") as f:
                rows.update({row["id"]: row for row in csv.DictReader(f)})
    ordered = [rows[e["id"]] for e in manifest["mixtures"] if e["id"] in rows]
    if world > 1 and ordered:
        columns = list(ordered[0])
        for row in ordered[1:]:
            columns = widened_columns(columns, row)
        write_rows(out_dir / "scores.csv", columns, ordered)
    return ordered
