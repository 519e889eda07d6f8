"""Every sampler against the exact posterior of two stationary Gaussian sources.

    python benchmarks/gaussian_oracle.py [--mixtures 16] [--seconds 1.0] [--seed 0]

Sources: a low-pass and a band-pass Gaussian process at -22 dBFS RMS each, 16 kHz. Their exact
eps-predictors are the priors, so the only error left is the sampler's. Limits: the Wiener filter
(MMSE) and an exact posterior sample (twice the MMSE error, about 3 dB below Wiener).
Prints mean SI-SDR (dB) over sources and mixtures, and the spread: E||x - Wiener||^2 relative to its
value for exact posterior samples (1 = calibrated, < 1 = samples collapsed towards the mean). A
sampler can beat the exact-sample SI-SDR only by giving up spread.
"""

import argparse
import itertools
import time

import torch

from unasdiff.diffusion.gaussian import (GaussianPrior, GaussianSource, bandpass, lowpass, posterior_sample,
                                        posterior_spread, wiener)
from unasdiff.metrics import si_sdr
from unasdiff.separation import separate

LEVEL_DBFS = -22.0
SAMPLE_RATE = 16000


def oracle_sources():
    rms = 10 ** (LEVEL_DBFS / 20)
    return [GaussianSource(lowpass(1000.0), rms, SAMPLE_RATE), GaussianSource(bandpass(2500.0, 1500.0), rms, SAMPLE_RATE)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixtures", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sources = oracle_sources()
    priors = [GaussianPrior(s) for s in sources]
    g = torch.Generator().manual_seed(args.seed)
    length = int(args.seconds * SAMPLE_RATE)
    truth = torch.stack([s.draw(args.mixtures, length, g) for s in sources], dim=1)  # [B, 2, L]
    mixture = truth.sum(1)

    def scores(estimate):
        return si_sdr(estimate, truth).mean().item(), posterior_spread(estimate, mixture, sources).item()

    rows = [("mixture", "", "", "", scores(mixture[:, None].expand_as(truth))),
            ("Wiener filter (MMSE)", "", "", "", scores(wiener(mixture, sources))),
            ("exact posterior sample", "", "", "", scores(posterior_sample(mixture, sources, g)))]
    mean4 = torch.stack([posterior_sample(mixture, sources, g) for _ in range(4)]).mean(0)
    rows.append(("exact posterior, mean of 4", "", "", "", scores(mean4)))

    def run(method, steps=200, init="mixture", **kw):
        start = time.perf_counter()
        est = separate(mixture, priors, method=method, steps=steps, init=init,
                       generator=torch.Generator().manual_seed(args.seed), **kw)
        extra = ", ".join(f"{k}={v}" for k, v in kw.items())
        rows.append((method, init, steps, extra, scores(est)))
        print(f"  {method:12s} {init:8s} {steps:4d} {extra:40s} {rows[-1][-1][0]:6.2f} dB "
              f"({time.perf_counter() - start:.1f} s)", flush=True)

    for method, init, steps in itertools.product(["hybrid", "dps", "dsg", "msdm_dirac", "undiff"],
                                                 ["mixture", "noise"], [200, 50]):
        run(method, steps, init)
    # the reference noises the mixture to step 149 but starts its loop at 199; starting at 149 is consistent
    run("hybrid", start_step=149)
    for scale, floor in [(0.2, 0.002), (0.3, 0.005), (0.5, 0.005)]:  # stronger guidance than the reference's
        run("hybrid", scale=scale, floor=floor)
    run("hybrid", 50, scale=0.4, floor=0.008)
    run("hybrid", scale=0.2, n_samples=4)

    print(f"\n{args.mixtures} mixtures of {args.seconds} s, two Gaussian sources at {LEVEL_DBFS} dBFS\n")
    print("| system | init | steps | settings | SI-SDR (dB) | spread (1 = exact posterior) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, init, steps, extra, (value, spread) in rows:
        print(f"| {name} | {init} | {steps} | {extra} | {value:.2f} | {spread:.2f} |")


if __name__ == "__main__":
    main()
