"""Pack training crops of each role into one small file, for a machine that has nothing but the working tree.

    python scripts/build_training_pack.py                        # data/demo/train -> packs/demo_train.npz
    python scripts/build_training_pack.py --minutes 2 --out packs/small.npz

The crops are the training recipe's own (unasdiff.data.crops.CropStream: 4 s around a point of an active span,
at a level drawn from -25..-20 dBFS), drawn with a seed from every clip of <train>/<role>/ (the output of
scripts/gather_demo_audio.py), stored as 16-bit samples: `<role>` [N, L] arrays, and `sources` naming the
packages each role's crops come from. Their origins and licences: checkpoints/demo/SOURCES.md.
benchmarks/gpu_check.py trains from such a pack (unpack_pack writes its crops as one folder of wavs per role).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from unasdiff.config import REPO_ROOT  # noqa: E402
from unasdiff.data.corpora import folder_clips  # noqa: E402
from unasdiff.data.crops import CropStream  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.files import atomic_path  # noqa: E402

ROLES = ("speech", "sound")
SAMPLE_RATE = 16000


def build_pack(train: Path, out: Path, minutes: float, seconds: float = 4.0, seed: int = 0) -> dict:
    """Write minutes of crops per role from train/<role>/ to `out` (.npz); returns what it holds."""
    arrays, sources = {}, {}
    count = max(1, int(round(minutes * 60 / seconds)))
    for role in ROLES:
        clips = folder_clips(train / role)
        stream = CropStream(clips, SAMPLE_RATE, seconds, (-25.0, -20.0), None, seed)
        crops = []
        for position in range(len(stream)):
            wave, _, valid, _ = stream[position]
            if valid:
                crops.append(np.round(wave.numpy() * 32767).clip(-32768, 32767).astype(np.int16))
            if len(crops) == count:
                break
        if not crops:
            raise UnasdiffError(f"no usable clip under {train / role}")
        arrays[role] = np.stack(crops)
        sources[role] = sorted({c.path.relative_to(train / role).parts[0] for c in clips})
    info = {"sample_rate": SAMPLE_RATE, "seconds": seconds, "seed": seed, "sources": sources,
            "licences": "checkpoints/demo/SOURCES.md", "crops": {r: int(a.shape[0]) for r, a in arrays.items()}}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, info=np.array(json.dumps(info)), **arrays)
    return info


def unpack_pack(pack: Path, folder: Path) -> dict[str, Path]:
    """The pack's crops as <folder>/<role>/<nnnn>.wav; returns role -> folder."""
    with np.load(pack) as data:
        info = json.loads(str(data["info"]))
        folders = {}
        for role in ROLES:
            folders[role] = folder / role
            folders[role].mkdir(parents=True, exist_ok=True)
            for i, crop in enumerate(data[role]):
                sf.write(folders[role] / f"{i:04d}.wav", crop, info["sample_rate"], subtype="PCM_16")
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=REPO_ROOT / "data" / "demo" / "train",
                        help="<train>/speech and <train>/sound (scripts/gather_demo_audio.py --out .../train)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "packs" / "demo_train.npz")
    parser.add_argument("--minutes", type=float, default=18.0, help="of crops per role (18: about 22 MiB)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = build_pack(args.train, args.out, args.minutes, seed=args.seed)
    size = args.out.stat().st_size / 2**20
    print(f"{args.out}: {info['crops']} crops of {info['seconds']} s ({size:.1f} MiB); "
          f"sources: {json.dumps(info['sources'])}")


if __name__ == "__main__":
    run_or_exit(main)
