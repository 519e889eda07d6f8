"""Every sampler against the exact posterior of two stationary Gaussian sources, at every step count.

    python benchmarks/gaussian_oracle.py [--mixtures 8] [--seconds 1.0] [--seed 0]

Two pairs of sources at -22 dBFS RMS each, 16 kHz: a low-pass and a band-pass process, and
a harder one (a harmonic comb at 200 Hz and a pink-like process that overlaps it everywhere). Their exact
eps-predictors are the priors, so the only error left is the sampler's. Limits: the Wiener filter (MMSE)
and an exact posterior sample (twice the MMSE error, about 3 dB below Wiener).

Table 1, quality against network calls: mean SI-SDR (dB) of each method with its default constants at
200, 100, 50, 25 and 10 steps, and the mean of 2 or 4 samples at the same total number of calls.
Table 2, the spread of single samples: E||x - Wiener||^2 relative to its value for exact posterior samples
(1 = calibrated, < 1 = collapsed towards the mean); a sampler beats the exact-sample SI-SDR only by giving
up spread.
"""

import argparse
import time

import torch

from unasdiff.diffusion.gaussian import (
    GaussianPrior,
    GaussianSource,
    bandpass,
    lowpass,
    posterior_sample,
    posterior_spread,
    wiener,
)
from unasdiff.metrics import si_sdr
from unasdiff.separation import separate

LEVEL_DBFS = -22.0
SAMPLE_RATE = 16000
STEPS = (200, 100, 50, 25, 10)
METHODS = ("hybrid", "dps", "dsg", "msdm_dirac", "undiff")
# (samples, steps): the same calls as one sample at samples x steps
AVERAGES = ((2, 50), (4, 50), (2, 25))


def harmonic_comb(f0: float = 200.0, width: float = 15.0, harmonics: int = 30):
    return lambda f: sum(torch.exp(-0.5 * ((f - f0 * h) / width) ** 2) for h in range(1, harmonics + 1)) + 1e-3


def pink_like(corner: float = 100.0):
    return lambda f: 1.0 / (1.0 + f / corner)


def source_pairs():
    rms = 10 ** (LEVEL_DBFS / 20)
    return {"low-pass + band-pass": [lowpass(1000.0), bandpass(2500.0, 1500.0)],
            "harmonic comb + pink-like": [harmonic_comb(), pink_like()]}, rms


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixtures", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs, rms = source_pairs()
    length = int(args.seconds * SAMPLE_RATE)
    for pair, spectra in pairs.items():
        sources = [GaussianSource(s, rms, SAMPLE_RATE) for s in spectra]
        priors = [GaussianPrior(s) for s in sources]
        g = torch.Generator().manual_seed(args.seed)
        truth = torch.stack([s.draw(args.mixtures, length, g) for s in sources], dim=1)  # [B, 2, L]
        mixture = truth.sum(1)

        def score(estimate, truth=truth):
            return si_sdr(estimate, truth).mean().item()

        def run(method, steps, samples=1, mixture=mixture, priors=priors, pair=pair):
            start = time.perf_counter()
            est = separate(mixture, priors, method=method, steps=steps, n_samples=samples,
                           generator=torch.Generator().manual_seed(args.seed))
            seconds = time.perf_counter() - start
            print(f"  {pair}: {method} {samples} x {steps} steps: {score(est):.2f} dB ({seconds:.1f} s)", flush=True)
            return est

        limits = {"mixture": score(mixture[:, None].expand_as(truth)), "Wiener (MMSE)": score(wiener(mixture, sources)),
                  "exact posterior sample": score(posterior_sample(mixture, sources, g))}
        table, spread = {}, {}
        for method in METHODS:
            for steps in STEPS:
                est = run(method, steps)
                table[method, 1, steps] = score(est)
                if steps == 200:
                    spread[method] = posterior_spread(est, mixture, sources).item()
            for samples, steps in AVERAGES:
                table[method, samples, steps] = score(run(method, steps, samples))

        print(f"\n{pair}: {args.mixtures} mixtures of {args.seconds} s at {LEVEL_DBFS} dBFS per source; "
              + ", ".join(f"{k} {v:.2f} dB" for k, v in limits.items()) + "\n")
        columns = [(1, s) for s in STEPS] + list(AVERAGES)
        print("| method | " + " | ".join(f"{s} steps" if m == 1 else f"{m} x {s}" for m, s in columns)
              + " | spread at 200 |")
        print("| --- " * (len(columns) + 2) + "|")
        print("| network calls per source | " + " | ".join(str(m * s) for m, s in columns) + " | |")
        for method in METHODS:
            print(f"| {method} | " + " | ".join(f"{table[method, m, s]:.2f}" for m, s in columns)
                  + f" | {spread[method]:.2f} |")
        print()


if __name__ == "__main__":
    main()
