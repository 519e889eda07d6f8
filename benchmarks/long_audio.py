"""Peak memory and time of scripts/separate.py on long recordings: memory must not grow with length.

    python benchmarks/long_audio.py [--minutes 1 10] [--sampler undiff --steps 1]

Each length runs scripts/separate.py in its own process (peak RSS read from the child's rusage),
with the tiny reference networks as priors and a gradient-free sampler at 1 step by default, so the
numbers measure the windowing (4 s windows, half overlap, 4 per batch) rather than the sampler.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
RATE = 16000


def make_recording(path: Path, minutes: float) -> None:
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE, 1, "FLOAT") as f:
        for _ in range(int(minutes * 60)):  # one second at a time: the generator itself stays small
            t = np.arange(RATE) / RATE
            f.write((0.1 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.02 * rng.standard_normal(RATE))
                    .astype(np.float32))


def separate(mixture: Path, out: Path, args) -> tuple[float, float]:
    cmd = [sys.executable, str(REPO / "scripts" / "separate.py"), f"mixture={mixture}", f"output_dir={out}",
           "priors.speech=tiny_speech", "priors.sound=tiny_sound", "labels=[null,0]", f"sampler={args.sampler}",
           f"sampler.steps={args.steps}", "progress=false", "write.spectrogram=false",
           f"hydra.run.dir={out / 'hydra'}"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"separate.py failed: {proc.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", nargs="+", type=float, default=[1, 10])
    parser.add_argument("--sampler", default="undiff")
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            mixture = Path(tmp) / f"{minutes:g}min.wav"
            make_recording(mixture, minutes)
            seconds, peak = separate(mixture, Path(tmp) / f"out{minutes:g}", args)
            rows.append((minutes, seconds, peak))
            print(f"  {minutes:g} min: {seconds:.0f} s, peak RSS {peak:.0f} MB", flush=True)
    print(f"\nscripts/separate.py, tiny priors, sampler={args.sampler}, {args.steps} step(s)\n")
    print("| recording | wall time (s) | peak RSS (MB) | RSS vs the first |")
    print("| --- | --- | --- | --- |")
    for minutes, seconds, peak in rows:
        print(f"| {minutes:g} min | {seconds:.0f} | {peak:.0f} | {peak / rows[0][2]:.2f} |")


if __name__ == "__main__":
    main()
