"""Long recordings of validation audio: a way of separating them (e.g. in long blocks) against another, paired.

    python benchmarks/small_priors.py --validation --task speech_sound --manifest-size 60 --systems hybrid-50-16samples
    python benchmarks/long_recordings.py --results results/validation --candidate window.block_seconds=16 window.batch=1

Consecutive validation mixtures of <results>/speech_sound/manifest.json are joined, --join at a time (15: 60 s
recordings), and each recording is separated by the pipeline at the bundled settings (preset=bundled, with the
template priors fitted there without the validation packages) and the --baseline overrides, and again with the
--candidate overrides. Each 4 s part of a recording is scored against its own true sources. The table gives each
system's mean SI-SDRi over the parts, the paired difference candidate - baseline with its standard error, and the
seconds per recording. Each system's scores go to <results>/speech_sound/long/<overrides>-<settings id>/scores.csv
(one row per part; benchmarks/paired.py reads it), saved recording by recording, so a stopped run resumes.
"""

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from paired import mean_and_error  # noqa: E402
from sample_estimators import ROLES, fitted_priors  # noqa: E402

from unasdiff.data.crops import ResampledCache  # noqa: E402
from unasdiff.data.mixtures import read_manifest, render  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.evaluate import claim_folder, scoring_settings, settings_id  # noqa: E402
from unasdiff.files import atomic_path  # noqa: E402
from unasdiff.metrics import si_sdr_improvement  # noqa: E402
from unasdiff.pipeline import Separator  # noqa: E402

PART_SECONDS = 4.0  # the validation mixtures' length


def system_folder(results: Path, separator: Separator, overrides: list[str], entries: list, join: int) -> Path:
    """<results>/speech_sound/long/<overrides>-<settings id>, its settings.json claimed as scripts/evaluate.py
    claims its folders: named by everything that changes the scores (the preset's settings included), so that
    results of other settings are never reused."""
    settings = {**scoring_settings(separator.cfg, separator, {"mixtures": entries}), "join": join}
    folder = results / "speech_sound" / "long" / (("-".join(overrides) or "bundled")[:80] + f"-{settings_id(settings)}")
    claim_folder(folder, settings)
    return folder


def separate_recordings(separator: Separator, recordings: list, folder: Path) -> dict[str, dict]:
    """Each recording (id, mixture [L], sources [K, L], part ids) separated and scored part by part, cached per
    recording in `folder`: {recording id: {"seconds": s, "parts": {part id: SI-SDRi}}}."""
    done = {}
    for name, mixture, truth, parts in recordings:
        saved = folder / f"{name}.json"
        if not saved.is_file():
            started = time.perf_counter()
            sources = separator.separate_mixture(mixture, ROLES, [None, None])[0]
            seconds = time.perf_counter() - started
            part = round(PART_SECONDS * separator.cfg.sample_rate)
            scores = si_sdr_improvement(sources.unflatten(-1, (-1, part)).transpose(0, 1),
                                        truth.unflatten(-1, (-1, part)).transpose(0, 1),
                                        mixture.unflatten(-1, (-1, part))).mean(-1)
            with atomic_path(saved) as tmp:
                Path(tmp).write_text(json.dumps({"seconds": seconds,
                                                 "parts": dict(zip(parts, scores.tolist()))}))
            print(f"{folder.name}: {name} in {seconds:.1f} s", flush=True)
        done[name] = json.loads(saved.read_text())
    with atomic_path(folder / "scores.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "mean_si_sdri"])
        writer.writerows((part, score) for r in done.values() for part, score in r["parts"].items())
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="benchmarks/small_priors.py --validation --results")
    parser.add_argument("--fit", default="*", help="the fit id of the priors (<results>/priors/template_*-<fit>.pt)")
    parser.add_argument("--join", type=int, default=15, help="validation mixtures per recording (15: 60 s)")
    parser.add_argument("--baseline", nargs="*", default=[], metavar="OVERRIDE", help="default: the bundled settings")
    parser.add_argument("--candidate", nargs="+", required=True, metavar="OVERRIDE")
    args = parser.parse_args()
    task = args.results / "speech_sound"
    if not (task / "manifest.json").is_file():
        raise UnasdiffError(f"no {task / 'manifest.json'}: run benchmarks/small_priors.py --validation first")
    priors = fitted_priors(args.results, args.fit)
    common = ["preset=bundled", "progress=false"] + [f"checkpoints.{role}={path}" for role, path in priors.items()]
    roots = {role: args.results / "mixtures" / role for role in ROLES}
    manifest = read_manifest(task / "manifest.json")
    entries, rate = manifest["mixtures"], manifest["sample_rate"]
    cache = ResampledCache(rate, None)
    recordings = []
    for first in range(0, len(entries) - args.join + 1, args.join):
        group = entries[first:first + args.join]
        rendered = [render(entry, roots, rate, PART_SECONDS, cache) for entry in group]
        recordings.append((f"{group[0]['id']}+{len(group)}", torch.cat([m for m, _ in rendered]),
                           torch.cat([s for _, s in rendered], dim=-1), [entry["id"] for entry in group]))
    if not recordings:
        raise UnasdiffError(f"{len(entries)} validation mixtures make no recording of --join {args.join}")
    systems = {}
    for label, overrides in (("baseline", args.baseline), ("candidate", args.candidate)):
        separator = Separator.from_config(common + overrides)
        folder = system_folder(args.results, separator, overrides, entries[:len(recordings) * args.join], args.join)
        systems[label] = (overrides, separate_recordings(separator, recordings, folder))
    base = {p: s for r in systems["baseline"][1].values() for p, s in r["parts"].items()}
    print(f"\n{len(recordings)} recordings of {args.join} x {PART_SECONDS:g} s validation mixtures (speech + sound), "
          f"{len(base)} parts, bundled settings and the overrides; SI-SDRi in dB per part\n")
    print("| system | overrides | SI-SDRi | vs the baseline (paired) | seconds per recording |")
    print("| --- | --- | --- | --- | --- |")
    for label, (overrides, done) in systems.items():
        scores = {p: s for r in done.values() for p, s in r["parts"].items()}
        diffs = [scores[p] - base[p] for p in base]
        mean, se = mean_and_error(diffs)
        seconds = sum(r["seconds"] for r in done.values()) / len(done)
        print(f"| {label} | {' '.join(overrides) or '(bundled)'} | {sum(scores.values()) / len(scores):+.2f} | "
              f"{mean:+.2f} ± {se:.2f} | {seconds:.1f} |")


if __name__ == "__main__":
    run_or_exit(main)
