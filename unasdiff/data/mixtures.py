"""Test mixtures, written once as a manifest so that every run and every system scores the same ones.

Recipe (the reference's, made reproducible): for each source of a task draw a distinct test speaker
(VCTK) or a distinct test class (FSDKaggle2018) and one of its clips; take up to `seconds` of it
around a point of an active span; place it on a `seconds`-long canvas, the first at a random offset,
each next one starting inside the previous one (so every source overlaps the one before); scale the
placed source to an RMS drawn from U(level_dbfs); sum.
No almost-silent source, by construction: a crop is kept only if at least `min_active` of it lies in
active spans (unasdiff/data/spans.py) and its RMS is above `min_dbfs`; otherwise another clip is drawn.

A manifest entry holds everything needed to rebuild a mixture (clip paths relative to the corpus
root, crop start and length at 16 kHz, canvas offset, gain), or, for ready-made sets such as the
demo mixtures, the files themselves.
"""

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..errors import UnasdiffError
from ..files import write_text
from .corpora import folder_clips, fsd_clips, vctk_clips
from .crops import ResampledCache
from .labels import fsd_classes
from .spans import active_crop, active_spans

log = logging.getLogger(__name__)
FORMAT = 1
MAX_DRAWS = 50


class SourcePools:
    """Test clips of each role, grouped by speaker or class: VCTK's test speakers and FSDKaggle2018's test
    set, or a folder per role laid out as <folder>/<speaker or class>/<clips> (e.g. the held-out clips of
    scripts/gather_demo_audio.py), which takes the place of the corpus."""

    def __init__(self, vctk_root=None, fsd_root=None, mic: str = "mic1", speech_folder=None, sound_folder=None):
        self.roots, self.groups = {}, {}
        if speech_folder or vctk_root:
            root = Path(speech_folder or vctk_root).expanduser()
            clips = folder_groups(root) if speech_folder else group_by(vctk_clips(root, "test", mic),
                                                                       lambda c: c.path.parent.name)
            self.roots["speech"], self.groups["speech"] = root, clips
        if sound_folder or fsd_root:
            root = Path(sound_folder or fsd_root).expanduser()
            clips = folder_groups(root) if sound_folder else group_by(fsd_clips(root, "test"),
                                                                      lambda c: fsd_classes()[c.label])
            self.roots["sound"], self.groups["sound"] = root, clips

    def need(self, role: str):
        if role not in self.groups:
            what = {"speech": "data.vctk_root (VCTK 0.92) or data.speech_folder",
                    "sound": "data.fsd_root (FSDKaggle2018) or data.sound_folder"}[role]
            raise UnasdiffError(f"this task has {role} sources: set {what}")
        return self.groups[role]


def group_by(clips, key) -> dict[str, list[Path]]:
    groups = {}
    for clip in clips:
        groups.setdefault(key(clip), []).append(clip.path)
    return groups


def folder_groups(root: Path) -> dict[str, list[Path]]:
    """<root>/<group>/<audio files> -> {group: files}."""
    groups = {sub.name: [c.path for c in folder_clips(sub)] for sub in sorted(root.iterdir()) if sub.is_dir()} \
        if root.is_dir() else {}
    if not groups:
        raise UnasdiffError(f"no <group>/<audio files> folders under {root} (one folder per speaker or class)")
    return groups


def make_manifest(task: str, roles: list[str], pools: SourcePools, count: int, seed: int, sample_rate: int = 16000,
                  seconds: float = 4.0, level_dbfs=(-25.0, -20.0), min_active: float = 0.25, min_dbfs: float = -50.0,
                  cache_dir=None) -> dict:
    rng = np.random.default_rng(seed)
    cache = ResampledCache(sample_rate, cache_dir)
    canvas = int(round(seconds * sample_rate))
    mixtures = []
    for index in range(count):
        sources, used, previous = [], {role: set() for role in roles}, None
        for role in roles:
            groups = pools.need(role)
            spec = _draw_source(rng, role, groups, used[role], pools.roots[role], cache, canvas, sample_rate,
                                min_active, min_dbfs)
            used[role].add(spec["group"])
            length = spec["length"]
            if previous is None:
                offset = int(rng.integers(0, canvas - length + 1))
            else:
                low, high = max(0, previous[0]), min(previous[1], canvas - length)
                offset = int(rng.integers(low, high + 1)) if low < high else min(canvas - length, previous[0])
            previous = (offset, offset + length)
            level = float(rng.uniform(*level_dbfs))
            spec.update(offset=offset, level_dbfs=round(level, 3),
                        gain=float(f"{10 ** (level / 20) / spec.pop('rms_on_canvas'):.9g}"))
            sources.append(spec)
        mixtures.append({"id": f"{task}-{index:04d}", "sources": sources,
                         "permutation_invariant": order_is_arbitrary(roles)})
    return {"format": FORMAT, "task": task, "roles": roles, "seed": seed, "sample_rate": sample_rate,
            "seconds": seconds, "recipe": {"level_dbfs": list(level_dbfs), "min_active": min_active,
                                           "min_dbfs": min_dbfs}, "mixtures": mixtures}


def order_is_arbitrary(roles: list[str]) -> bool:
    """Speakers from one speech prior have no label to tell them apart: they are scored under the best
    permutation. Sounds carry their class label, so their order is fixed."""
    return len(set(roles)) == 1 and roles[0] == "speech"


def _draw_source(rng, role, groups, used, root, cache, canvas, sample_rate, min_active, min_dbfs) -> dict:
    names = sorted(g for g in groups if g not in used)
    if not names:
        raise UnasdiffError(f"not enough distinct {'speakers' if role == 'speech' else 'classes'} in the test set")
    tried = set()
    for _ in range(MAX_DRAWS):
        group = names[int(rng.integers(len(names)))]
        tried.add(group)
        files = groups[group]
        path = files[int(rng.integers(len(files)))]
        audio = cache.load(path)
        length = min(len(audio), canvas)
        spans = active_spans(audio, sample_rate)
        if not spans:
            continue
        start, crop = active_crop(audio, length, sample_rate, rng, spans)
        rms = float(np.sqrt(np.mean(crop.astype(np.float64) ** 2)))
        if rms <= 0 or 20 * math.log10(rms) < min_dbfs:
            continue
        active = sum(min(e, length / sample_rate) - max(s, 0) for s, e in active_spans(crop, sample_rate)
                     if e > 0) / (length / sample_rate)
        if active < min_active:
            continue
        return {"role": role, "group": group, "label": group if role == "sound" else None,
                "path": str(Path(path).relative_to(root)), "crop_start": start, "length": length,
                "rms_on_canvas": rms * math.sqrt(length / canvas)}
    raise UnasdiffError(f"no {role} crop with at least {min_active:.0%} active audio above {min_dbfs} dBFS after "
                        f"{MAX_DRAWS} draws from {', '.join(sorted(tried))}")


def write_manifest(manifest: dict, path) -> Path:
    return write_text(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def read_manifest(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UnasdiffError(f"no manifest at {path}; write one with make_manifest=true")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UnasdiffError(f"{path} is not a manifest (invalid JSON: {err})") from None
    if manifest.get("format") != FORMAT or "mixtures" not in manifest:
        raise UnasdiffError(f"{path} is not a unasdiff manifest of format {FORMAT}")
    return manifest


def demo_manifest(root) -> dict:
    """The paper's demo mixtures (<root>/<nn_task>/<nn>/mix.wav, real_<k>.wav, sepa_<k>.wav) as a manifest
    of ready files; source 0 is speech where a task has speech; the sounds' classes are unknown."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UnasdiffError(f"demo folder not found: {root} (set demo_root)")
    mixtures = []
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        words = task_dir.name.split("_")[1:]  # e.g. 1speech 2sound
        roles = []
        for word in words:
            count, role = int(word[0]), word[1:]
            roles += [role] * count
        for mix_dir in sorted(p for p in task_dir.iterdir() if p.is_dir()):
            folder = f"{task_dir.name}/{mix_dir.name}"
            sources = [{"role": r, "label": None, "file": f"{folder}/real_{k}.wav",
                        "reference_output": f"{folder}/sepa_{k}.wav"} for k, r in enumerate(roles)]
            mixtures.append({"id": f"{task_dir.name}-{mix_dir.name}", "group": task_dir.name, "sources": sources,
                             "mixture_file": f"{task_dir.name}/{mix_dir.name}/mix.wav",
                             "permutation_invariant": order_is_arbitrary(roles)})
    if not mixtures:
        raise UnasdiffError(f"no demo mixtures under {root}")
    return {"format": FORMAT, "task": "demo", "seed": None, "sample_rate": 16000, "mixtures": mixtures}


def render(entry: dict, roots: dict, sample_rate: int, seconds: float | None, cache: ResampledCache):
    """(mixture [L], sources [K, L]) of a manifest entry; roots maps role -> corpus root (or the demo root)."""
    sources = []
    for src in entry["sources"]:
        root = roots.get("files" if "file" in src else src["role"])
        if root is None:
            raise UnasdiffError(f"mixture {entry['id']} needs the {src['role']} corpus root")
        if "file" in src:
            sources.append(read_file(Path(root) / src["file"], sample_rate))
            continue
        path = Path(root) / src["path"]
        if not path.is_file():
            raise UnasdiffError(f"mixture {entry['id']}: source file missing: {path}")
        audio = cache.load(path)
        canvas = np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)
        crop = audio[src["crop_start"]:src["crop_start"] + src["length"]]
        canvas[src["offset"]:src["offset"] + len(crop)] = crop * src["gain"]
        sources.append(torch.from_numpy(canvas))
    stacked = torch.stack(sources)
    if "mixture_file" in entry:
        return read_file(Path(roots["files"]) / entry["mixture_file"], sample_rate), stacked
    return stacked.sum(0), stacked


def read_file(path: Path, sample_rate: int) -> torch.Tensor:
    """A file a manifest names, mono at the model rate."""
    if not path.is_file():
        raise UnasdiffError(f"manifest file missing: {path}")
    return load_audio(path, sample_rate)[0]


def missing_files(manifest: dict, roots: dict) -> list[str]:
    """Every file a manifest names that is not on disk (checked before a long evaluation starts)."""
    missing = []
    for entry in manifest["mixtures"]:
        names = [("files", entry["mixture_file"])] if "mixture_file" in entry else []
        for src in entry["sources"]:
            names.append(("files", src["file"]) if "file" in src else (src["role"], src["path"]))
        for role, name in names:
            root = roots.get(role)
            if root is None or not (Path(root) / name).is_file():
                missing.append(str(Path(root or f"<{role} root>") / name))
    return missing

