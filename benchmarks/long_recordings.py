"""Long recordings of validation audio: a way of separating them (e.g. in long blocks) against another, paired.

    python benchmarks/small_priors.py --validation --task speech_sound --manifest-size 60 --systems hybrid-50-16samples
    python benchmarks/long_recordings.py --results results/validation --candidate window.block_seconds=16 window.batch=1
    python benchmarks/small_priors.py --validation --task sound_sound --manifest-size 60 --systems hybrid-50-16samples
    python benchmarks/long_recordings.py --results results/validation --task sound_sound \
        --candidate window.block_seconds=null window.batch=4
    python benchmarks/small_priors.py --validation --task speech_speech --manifest-size 40 --systems hybrid-50-16samples
    python benchmarks/long_recordings.py --results results/validation --task speech_speech \
        --candidate window.block_seconds=null window.batch=4

speech_sound: consecutive validation mixtures of <results>/speech_sound/manifest.json are joined, --join at a time
(15: 60 s recordings), and each recording is separated by the pipeline at the bundled settings (preset=bundled, with the
template priors fitted there without the validation packages) and the --baseline overrides, and again with the
--candidate overrides. Each 4 s part of a recording is scored against its own true sources. The table gives each
system's mean SI-SDRi over the parts, the paired difference candidate - baseline with its standard error, and the
seconds per recording. Each system's scores go to <results>/speech_sound/long/<overrides>-<settings id>/scores.csv
(one row per part; benchmarks/paired.py reads it), saved recording by recording, so a stopped run resumes.

sound_sound: joined as speech_sound, with no labels given: the two sounds are interchangeable and change with every
part, so each part is scored in its own best order.

speech_speech: two talkers throughout. Consecutive pairs of the validation voices (<results>/mixtures/speech-voices,
written by small_priors.py) each make one recording: each voice's streams joined (36 s), both talkers at levels
drawn from the manifest's recipe. The talkers are interchangeable, so each recording is scored in the one order of
its outputs that is best over the whole recording: a talker who moves to the other output between blocks or
windows costs that part its score, and the table gives the share of parts that the other order would score better.
"""

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from paired import mean_and_error  # noqa: E402
from sample_estimators import ROLES, fitted_priors  # noqa: E402

from unasdiff.audio import load_audio  # noqa: E402
from unasdiff.data.crops import ResampledCache  # noqa: E402
from unasdiff.data.mixtures import read_manifest, render  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.evaluate import claim_folder, scoring_settings, settings_id  # noqa: E402
from unasdiff.files import atomic_path  # noqa: E402
from unasdiff.metrics import si_sdr_improvement  # noqa: E402
from unasdiff.pipeline import Separator  # noqa: E402

PART_SECONDS = 4.0  # the validation mixtures' length
VOICES = "speech-voices"  # small_priors.py's folder of one voice per sub-folder
# how each task's outputs are ordered for scoring: the labels are not given, so two sources of one role are
# interchangeable; two talkers stay themselves over the whole recording, two sounds change with every part
ORDER = {"speech_sound": "fixed", "speech_speech": "recording", "sound_sound": "part"}


def system_folder(results: Path, task: str, separator: Separator, overrides: list[str], entries: list,
                  join: int) -> Path:
    """<results>/<task>/long/<overrides>-<settings id>, its settings.json claimed as scripts/evaluate.py
    claims its folders: named by everything that changes the scores (the preset's settings included), so that
    results of other settings are never reused."""
    settings = {**scoring_settings(separator.cfg, separator, {"mixtures": entries}), "join": join}
    folder = results / task / "long" / (("-".join(overrides) or "bundled")[:80] + f"-{settings_id(settings)}")
    claim_folder(folder, settings)
    return folder


def separate_recordings(separator: Separator, recordings: list, folder: Path, order: str) -> dict:
    """Each recording (id, mixture [L], sources [K, L], part ids) separated and scored part by part, cached per
    recording in `folder`: {recording id: {"seconds": s, "parts": {part id: SI-SDRi}, "other_order": [bool]}}.
    `order` (ORDER): the outputs scored in their own order, in the order best over the whole recording, or in
    each part's best order; "other_order" marks the parts that another order would score better."""
    done = {}
    roles = separator.roles
    for name, mixture, truth, parts in recordings:
        saved = folder / f"{name}.json"
        if not saved.is_file():
            started = time.perf_counter()
            sources = separator.separate_mixture(mixture, roles, [None] * len(roles))[0]
            seconds = time.perf_counter() - started
            part = round(PART_SECONDS * separator.cfg.sample_rate)
            orders = list(itertools.permutations(range(len(roles)))) if order != "fixed" else [tuple(range(len(roles)))]
            scores = torch.stack([si_sdr_improvement(sources[list(outputs)].unflatten(-1, (-1, part)).transpose(0, 1),
                                                     truth.unflatten(-1, (-1, part)).transpose(0, 1),
                                                     mixture.unflatten(-1, (-1, part))).mean(-1)
                                  for outputs in orders])  # [orders, parts]
            best = scores.amax(0) if order == "part" else scores[int(scores.sum(-1).argmax())]
            with atomic_path(saved) as tmp:
                Path(tmp).write_text(json.dumps({"seconds": seconds, "parts": dict(zip(parts, best.tolist())),
                                                 "other_order": (scores.amax(0) > best).tolist()}))
            print(f"{folder.name}: {name} in {seconds:.1f} s", flush=True)
        done[name] = json.loads(saved.read_text())
    with atomic_path(folder / "scores.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "mean_si_sdri"])
        writer.writerows((part, score) for r in done.values() for part, score in r["parts"].items())
    return done


def joined_mixtures(results: Path, manifest: dict, join: int) -> tuple[list, list]:
    """speech_sound, sound_sound: the validation mixtures joined `join` at a time -> (recordings, their manifest
    entries)."""
    entries, rate = manifest["mixtures"], manifest["sample_rate"]
    roots = {role: results / "mixtures" / role for role in ROLES}
    cache = ResampledCache(rate, None)
    recordings = []
    for first in range(0, len(entries) - join + 1, join):
        group = entries[first:first + join]
        rendered = [render(entry, roots, rate, PART_SECONDS, cache) for entry in group]
        recordings.append((f"{group[0]['id']}+{len(group)}", torch.cat([m for m, _ in rendered]),
                           torch.cat([s for _, s in rendered], dim=-1), [entry["id"] for entry in group]))
    if not recordings:
        raise UnasdiffError(f"{len(entries)} validation mixtures make no recording of --join {join}")
    return recordings, entries[:len(recordings) * join]


def talker_recordings(results: Path, manifest: dict) -> tuple[list, list]:
    """speech_speech: one recording per consecutive pair of validation voices, each voice's streams joined and
    cut to whole parts of the shorter, at levels drawn from the recipe -> (recordings, their descriptions)."""
    folder = results / "mixtures" / VOICES
    voices = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if len(voices) < 2:
        raise UnasdiffError(f"no voices in {folder}: run benchmarks/small_priors.py "
                            f"--validation --task speech_speech first")
    rate, (low, high) = manifest["sample_rate"], manifest["recipe"]["level_dbfs"]
    part = round(PART_SECONDS * rate)
    generator = torch.Generator().manual_seed(manifest["seed"])
    recordings, described = [], []
    for first, second in zip(voices[::2], voices[1::2]):
        streams = [torch.cat([load_audio(f, rate)[0] for f in sorted(voice.glob("*.wav"), key=lambda f: int(f.stem))])
                   for voice in (first, second)]
        length = min(len(x) for x in streams) // part * part
        levels = (low + (high - low) * torch.rand(2, generator=generator)).tolist()
        truth = torch.stack([x[:length] * 10 ** (level / 20) / x[:length].pow(2).mean().sqrt().clamp_min(1e-12)
                             for x, level in zip(streams, levels)])
        name = f"{first.name}+{second.name}"
        recordings.append((name, truth.sum(0), truth, [f"{name}/{n}" for n in range(length // part)]))
        described.append({"id": name, "voices": [first.name, second.name], "levels_dbfs": levels, "length": length})
    return recordings, described


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="benchmarks/small_priors.py --validation --results")
    parser.add_argument("--fit", default="*", help="the fit id of the priors (<results>/priors/template_*-<fit>.pt)")
    parser.add_argument("--task", choices=list(ORDER), default="speech_sound")
    parser.add_argument("--join", type=int, default=15, help="joined tasks: mixtures per recording (15: 60 s)")
    parser.add_argument("--baseline", nargs="*", default=[], metavar="OVERRIDE", help="default: the bundled settings")
    parser.add_argument("--candidate", nargs="+", required=True, metavar="OVERRIDE")
    args = parser.parse_args()
    task = args.results / args.task
    if not (task / "manifest.json").is_file():
        raise UnasdiffError(f"no {task / 'manifest.json'}: run benchmarks/small_priors.py --validation "
                            f"--task {args.task} first")
    manifest = read_manifest(task / "manifest.json")
    priors = fitted_priors(args.results, args.fit)
    common = ["preset=bundled", "progress=false", f"task={args.task}"]
    common += [f"checkpoints.{role}={path}" for role, path in priors.items()]
    talkers = ORDER[args.task] == "recording"
    recordings, described = (talker_recordings(args.results, manifest) if talkers
                             else joined_mixtures(args.results, manifest, args.join))
    systems = {}
    for label, overrides in (("baseline", args.baseline), ("candidate", args.candidate)):
        separator = Separator.from_config(common + overrides)
        folder = system_folder(args.results, args.task, separator, overrides, described, 0 if talkers else args.join)
        systems[label] = (overrides, separate_recordings(separator, recordings, folder, ORDER[args.task]))
    base = {p: s for r in systems["baseline"][1].values() for p, s in r["parts"].items()}
    what = (f"two validation voices each, {len(base)} parts of {PART_SECONDS:g} s, scored in each recording's best "
            f"order" if talkers else
            f"{args.join} x {PART_SECONDS:g} s validation mixtures ({args.task}), {len(base)} parts"
            + (", each scored in its best order" if ORDER[args.task] == "part" else ""))
    print(f"\n{len(recordings)} recordings of {what}; bundled settings and the overrides; SI-SDRi in dB per part\n")
    print("| system | overrides | SI-SDRi | vs the baseline (paired) | parts in the other order | s per recording |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, (overrides, done) in systems.items():
        scores = {p: s for r in done.values() for p, s in r["parts"].items()}
        diffs = [scores[p] - base[p] for p in base]
        mean, se = mean_and_error(diffs)
        other = [flag for r in done.values() for flag in r.get("other_order", [])]
        seconds = sum(r["seconds"] for r in done.values()) / len(done)
        print(f"| {label} | {' '.join(overrides) or '(bundled)'} | {sum(scores.values()) / len(scores):+.2f} | "
              f"{mean:+.2f} ± {se:.2f} | {sum(other) / len(other) if other else 0:.2f} | {seconds:.1f} |")


if __name__ == "__main__":
    run_or_exit(main)
