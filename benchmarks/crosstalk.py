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

N_FFT, HOP = 1024, 256


def power(path: Path, rate: int) -> torch.Tensor:
    wave, _ = load_audio(path, rate)
    return torch.stft(wave, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True).abs().pow(2)


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
    truth = [power(p, args.rate) for p in args.true_sources]
    est = [power(p, args.rate) for p in estimates]
    frames = min(x.shape[-1] for x in truth + est)
    truth, est = [x[..., :frames] for x in truth], [x[..., :frames] for x in est]
    ratio = 10 ** (args.dominance / 10)
    print(f"{args.separated}: energy of each estimate in the bins a true source holds {args.dominance:g} dB above "
          f"the others, relative to that source's own energy there\n")
    print("| true source | its bins | estimate | energy there (dB) |")
    print("| --- | --- | --- | --- |")
    for j, own in enumerate(truth):
        bins = torch.stack([own > ratio * other for i, other in enumerate(truth) if i != j]).all(0)
        if not bins.any():
            print(f"| {args.true_sources[j].name} | none | | |")
            continue
        for k, estimate in enumerate(est):
            level = 10 * math.log10(max(float(estimate[bins].sum() / own[bins].sum()), 1e-12))
            print(f"| {args.true_sources[j].name} | {int(bins.sum())} | {estimates[k].name} | {level:+.1f} |")


if __name__ == "__main__":
    run_or_exit(main)
