"""Cross-talk of a separation: how much of what belongs to one source each other estimate holds.

    python scripts/separate.py output_dir=separated          # the bundled example, or any separation
    python benchmarks/crosstalk.py separated examples/speech_sound/true_0_speech.wav \
        examples/speech_sound/true_1_sound.wav

The time-frequency bins that true source j holds at least `--dominance` dB above every other true source
are j's own bins (the rooster's harmonics in the example). For each estimate k the table gives the energy
of estimate k in those bins relative to source j's own energy there, in dB: near 0 for k = j (j recovered),
and for another estimate -13 dB means faint copies of j's features remain in it; below about -30 dB they
are not visible in spectrograms.png, which shares one colour scale. SI-SDR summarises the same errors in
one number; this says where they are.
"""

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from unasdiff.audio import load_audio  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.metrics import own_bin_energies  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("separated", type=Path, help="a separation's folder (source_<k>_<name>.wav)")
    parser.add_argument("true_sources", type=Path, nargs="+", help="the true sources, in source order")
    parser.add_argument("--dominance", type=float, default=20.0, help="dB above the other true sources (default 20)")
    parser.add_argument("--rate", type=int, default=16000)
    args = parser.parse_args()
    estimates = sorted(args.separated.glob("source_*.wav"))
    if len(estimates) != len(args.true_sources):
        raise UnasdiffError(f"{args.separated} has {len(estimates)} source_*.wav files but {len(args.true_sources)} "
                            f"true sources were given: give one per estimate, in source order")
    waves = [load_audio(p, args.rate)[0] for p in args.true_sources + estimates]
    length = min(w.shape[-1] for w in waves)
    waves = torch.stack([w[..., :length] for w in waves])
    truth, estimate = waves[: len(estimates)], waves[len(estimates):]
    in_own, own = own_bin_energies(estimate, truth, args.dominance)
    print(f"{args.separated}: energy of each estimate in the bins a true source holds {args.dominance:g} dB above "
          f"the others, relative to that source's own energy there\n")
    print("| true source | estimate | energy there (dB) |")
    print("| --- | --- | --- |")
    for j, name in enumerate(args.true_sources):
        if own[j] == 0:
            print(f"| {name.name} | (no bins of its own) | |")
            continue
        for k, path in enumerate(estimates):
            level = 10 * math.log10(max(float(in_own[j, k] / own[j]), 1e-12))
            print(f"| {name.name} | {path.name} | {level:+.1f} |")


if __name__ == "__main__":
    run_or_exit(main)
