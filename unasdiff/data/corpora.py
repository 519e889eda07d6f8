"""The clips of each corpus, read from its real on-disk layout.

VCTK 0.92:      <root>/wav48_silence_trimmed/<speaker>/<speaker>_<nnn>_mic1.flac (and mic2), 48 kHz;
                a fixed speaker split (vctk_split.json: 100 train, 10 test speakers).
FSDKaggle2018:  <root>/FSDKaggle2018.audio_train/<fname>, <root>/FSDKaggle2018.audio_test/<fname>,
                <root>/FSDKaggle2018.meta/train_post_competition.csv (fname,label,manually_verified,...)
                and test_post_competition_scoring_clips.csv (fname,label,usage,...); 41 classes.
folder:         every audio file under a folder (a user's own speech or sounds), one class.
folders:        several such folders, class k = the k-th folder (one conditional prior for several roles).
A clip is (path, label index or None).
"""

import csv
import json
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ..audio import AUDIO_SUFFIXES
from ..errors import UnasdiffError
from .labels import fsd_classes

log = logging.getLogger(__name__)

VCTK_AUDIO = "wav48_silence_trimmed"
FSD_AUDIO = {"train": "FSDKaggle2018.audio_train", "test": "FSDKaggle2018.audio_test"}
FSD_META = {"train": "FSDKaggle2018.meta/train_post_competition.csv",
            "test": "FSDKaggle2018.meta/test_post_competition_scoring_clips.csv"}


@dataclass(frozen=True)
class Clip:
    path: Path
    label: int | None = None


@cache
def vctk_split() -> dict:
    return json.loads(resources.files("unasdiff.data").joinpath("vctk_split.json").read_text())


def vctk_clips(root, split: str = "train", mic: str = "mic1") -> list[Clip]:
    """The utterances of the split's speakers recorded with `mic` ("mic1", "mic2" or "both")."""
    audio = Path(root).expanduser() / VCTK_AUDIO
    if not audio.is_dir():
        raise UnasdiffError(f"{root} is not a VCTK 0.92 root: expected {audio}/<speaker>/<speaker>_<nnn>_mic1.flac "
                            f"(set data.vctk_root to the folder that holds {VCTK_AUDIO})")
    if split not in ("train", "test", "all"):
        raise UnasdiffError(f"VCTK split must be train, test or all, not {split!r}")
    if mic not in ("mic1", "mic2", "both"):
        raise UnasdiffError(f"VCTK mic must be mic1, mic2 or both, not {mic!r}")
    speakers = vctk_split()["train"] + vctk_split()["test"] if split == "all" else vctk_split()[split]
    pattern = "*_mic[12].flac" if mic == "both" else f"*_{mic}.flac"
    clips, missing = [], []
    for speaker in speakers:
        files = sorted((audio / speaker).glob(pattern))
        if not files:
            missing.append(speaker)
        clips.extend(Clip(f) for f in files)
    if missing:
        log.warning("VCTK %s: no %s files for %d of %d speakers (%s)", split, mic, len(missing), len(speakers),
                    ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    if not clips:
        raise UnasdiffError(f"no VCTK {split} utterances ({pattern}) under {audio}")
    return clips


def fsd_clips(root, split: str = "train", verified_only: bool = True) -> list[Clip]:
    """FSDKaggle2018 clips of a split with their label index in the published order. The test set
    is all manually verified; `verified_only` drops the train clips whose label was not verified."""
    root = Path(root).expanduser()
    if split not in FSD_AUDIO:
        raise UnasdiffError(f"FSDKaggle2018 split must be train or test, not {split!r}")
    meta, audio = root / FSD_META[split], root / FSD_AUDIO[split]
    for needed in (meta, audio):
        if not needed.exists():
            raise UnasdiffError(f"{root} is not an FSDKaggle2018 root: {needed} is missing (set data.fsd_root to "
                                f"the folder that holds {FSD_AUDIO[split]} and FSDKaggle2018.meta)")
    names = fsd_classes()
    clips, missing, unverified = [], [], 0
    with open(meta, newline="") as f:
        for row in csv.DictReader(f):
            if row["label"] not in names:
                raise UnasdiffError(f"{meta}: unknown class {row['label']!r} for {row['fname']}")
            if verified_only and row.get("manually_verified", "1") != "1":
                unverified += 1
                continue
            path = audio / row["fname"]
            if not path.is_file():
                missing.append(row["fname"])
                continue
            clips.append(Clip(path, names.index(row["label"])))
    if missing:
        raise UnasdiffError(f"{meta} names {len(missing)} files missing from {audio}: "
                            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unverified:
        log.info("FSDKaggle2018 %s: left out %d clips whose label was not manually verified", split, unverified)
    return clips


def folder_clips(root, label: int | None = None, exclude=()) -> list[Clip]:
    """Every audio file under `root` (recursively), all with the same label, except those in the
    sub-folders of `root` named in `exclude` (a validation split, for instance)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UnasdiffError(f"audio folder not found: {root}")
    missing = sorted(name for name in exclude if not (root / name).is_dir())
    if missing:
        raise UnasdiffError(f"cannot exclude {', '.join(missing)}: no such sub-folder of {root}")
    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in AUDIO_SUFFIXES and p.relative_to(root).parts[0] not in exclude)
    if not files:
        raise UnasdiffError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}"
                            + (f" outside {', '.join(exclude)}" if exclude else ""))
    return [Clip(p, label) for p in files]


def class_folder_clips(roots, exclude=()) -> list[Clip]:
    """Every audio file under each of `roots`, labelled by the root's position (class k = roots[k]); a name in
    `exclude` leaves out that sub-folder of whichever roots have it, and must name one of some root."""
    roots = [Path(root).expanduser() for root in roots]
    if not roots:
        raise UnasdiffError("data.folders is empty: list one folder per class")
    unknown = sorted(name for name in exclude if not any((root / name).is_dir() for root in roots))
    if unknown:
        raise UnasdiffError(f"cannot exclude {', '.join(unknown)}: no such sub-folder of {', '.join(map(str, roots))}")
    return [clip for label, root in enumerate(roots)
            for clip in folder_clips(root, label, tuple(name for name in exclude if (root / name).is_dir()))]
