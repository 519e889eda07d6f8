"""Reduce a training checkpoint to a prior file for separation: EMA (or raw) weights in fp16 plus the prior config.

    python scripts/export_prior.py runs/demo_speech/checkpoints/last.pt checkpoints/demo/speech.pt

The bundled demo priors (checkpoints/demo/) are made this way; the file loads with
`unasdiff.models.load_prior(path)` and in `scripts/separate.py checkpoints.speech=PATH`.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from unasdiff.errors import run_or_exit  # noqa: E402
from unasdiff.models.checkpoint import export_prior  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by scripts/train_prior.py")
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    parser.add_argument("--weights", choices=("ema", "model"), default="ema",
                        help="model: the raw weights (for a run whose EMA has not caught up)")
    args = parser.parse_args()
    info = export_prior(args.checkpoint, args.out, getattr(torch, args.dtype), args.weights)
    size = args.out.stat().st_size / 2**20
    print(f"{args.out}: {args.weights} weights of step {info['step']} ({args.dtype}, {size:.1f} MiB)")


if __name__ == "__main__":
    run_or_exit(main)
