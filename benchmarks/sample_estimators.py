"""How a mixture's posterior samples become its estimate: the mean (the default) against other estimators, 16 against 8.

    python benchmarks/small_priors.py --validation --task speech_sound --manifest-size 60 --systems hybrid-50-16samples
    python benchmarks/sample_estimators.py --results results/validation     # the folder small_priors.py wrote

Each validation mixture of <results>/speech_sound/manifest.json is separated once at the bundled settings
(preset=bundled) with the template priors fitted there without the validation packages, and all its samples are
kept (<results>/speech_sound/samples/, so a stopped run resumes). Every estimator is then scored on the same
samples: all 16, and each half of 8. The table gives the mean SI-SDRi and the paired difference to the mean of
16 (the default) with its standard error; the per-mixture scores go to <results>/speech_sound/estimators.csv.
"""

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from paired import mean_and_error  # noqa: E402

from unasdiff.data.crops import ResampledCache  # noqa: E402
from unasdiff.data.mixtures import read_manifest, render  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.files import atomic_path  # noqa: E402
from unasdiff.metrics import si_sdr_improvement  # noqa: E402
from unasdiff.pipeline import Separator, working_gain  # noqa: E402
from unasdiff.separation import mixture_consistent  # noqa: E402
from unasdiff.stft import power  # noqa: E402

ROLES = ["speech", "sound"]
TRIMMED = 0.75  # share of the samples the trimmed means keep
MASK_FFT, MASK_HOP = 1024, 256  # the STFT of the mean-power mask (that of consistency.py)


def fitted_priors(results: Path, fit: str) -> dict[str, Path]:
    found = {role: sorted((results / "priors").glob(f"template_{role}-{fit}.pt")) for role in ROLES}
    if any(len(paths) != 1 for paths in found.values()):
        raise UnasdiffError(f"need one fitted template prior per role matching template_<role>-{fit}.pt in "
                            f"{results / 'priors'}, found {sum(map(len, found.values()))}: run "
                            f"benchmarks/small_priors.py --validation first, or name the fit with --fit")
    return {role: paths[0] for role, paths in found.items()}


def log_likelihoods(separator: Separator, samples: torch.Tensor) -> torch.Tensor:
    """log p(s_1) + log p(s_2) of every sample [M, K, L] at the working level, under the two priors at the
    schedule's first noise level: [M]."""
    total = 0
    for k, role in enumerate(ROLES):
        net = separator.priors[role].net
        abar = net.schedule.alphas_cumprod[0]
        variances = abar * net.component_variances() + (1 - abar) * net.noise_power
        total = total + net.posteriors(net.log_joint(power(net.stft(samples[:, k])), variances))[1]
    return total


def trimmed_mean(samples: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    keep = score.argsort(descending=True)[:max(1, round(TRIMMED * len(score)))]
    return samples[keep].mean(0)


def mean_power_mask(samples: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """The Wiener filter of the mixture with each source's power averaged over the samples (not the power of the
    averaged sample)."""
    window = torch.hann_window(MASK_FFT)
    m, k, length = samples.shape
    spectra = torch.stft(samples.reshape(m * k, length), MASK_FFT, MASK_HOP, window=window, return_complex=True)
    mean_power = power(spectra).unflatten(0, (m, k)).mean(0)
    share = mean_power / mean_power.sum(0, keepdim=True).clamp_min(torch.finfo(mean_power.dtype).tiny)
    spec = torch.stft(mixture, MASK_FFT, MASK_HOP, window=window, return_complex=True)
    return torch.istft(share * spec, MASK_FFT, MASK_HOP, window=window, length=length)


def estimates(samples: torch.Tensor, mixture: torch.Tensor, residual: torch.Tensor, likelihood: torch.Tensor
              ) -> dict[str, torch.Tensor]:
    """Every estimator's estimate [K, L] from samples [M, K, L] with their residuals and likelihoods [M]."""
    consistent = lambda e: mixture_consistent(e[None], mixture[None], "wiener")[0]  # noqa: E731
    return {"mean (default)": consistent(samples.mean(0)),
            "mean-power mask": mean_power_mask(samples, mixture),
            f"best {TRIMMED:.0%} by residual": consistent(trimmed_mean(samples, -residual)),
            f"best {TRIMMED:.0%} by prior likelihood": consistent(trimmed_mean(samples, likelihood))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="benchmarks/small_priors.py --validation --results")
    parser.add_argument("--fit", default="*", help="the fit id of the priors (<results>/priors/template_*-<fit>.pt)")
    parser.add_argument("--samples", type=int, default=16, help="samples per mixture (halves are scored too)")
    args = parser.parse_args()
    task = args.results / "speech_sound"
    if not (task / "manifest.json").is_file():
        raise UnasdiffError(f"no {task / 'manifest.json'}: run benchmarks/small_priors.py --validation first")
    priors = fitted_priors(args.results, args.fit)
    separator = Separator.from_config(["preset=bundled", "progress=false"]
                                      + [f"checkpoints.{role}={path}" for role, path in priors.items()])
    roots = {role: args.results / "mixtures" / role for role in ROLES}
    cache, half = ResampledCache(separator.cfg.sample_rate, None), args.samples // 2
    subsets = {f"{args.samples}": slice(None), f"first {half}": slice(0, half), f"last {half}": slice(half, None)}
    rows = []
    for entry in read_manifest(task / "manifest.json")["mixtures"]:
        mixture, truth = render(entry, roots, separator.cfg.sample_rate, 4.0, cache)
        gain = working_gain(mixture, separator.cfg.level, len(ROLES))
        saved = task / "samples" / f"{entry['id']}-{args.samples}.pt"
        if saved.is_file():
            samples = torch.load(saved, weights_only=True)
        else:  # the pipeline's own sampler call, every sample kept and no consistency step
            generator = torch.Generator().manual_seed(separator.cfg.seed)
            samples = separator.separate_windows(gain * mixture[None], ROLES, [None, None], generator,
                                                 n_samples=args.samples, consistency="none", progress=False,
                                                 return_samples=True)[1][0] / gain
            with atomic_path(saved) as tmp:
                torch.save(samples, tmp)
        residual = (mixture - samples.sum(1)).norm(dim=-1)
        with torch.no_grad():
            likelihood = log_likelihoods(separator, gain * samples)
        for subset, pick in subsets.items():
            for name, estimate in estimates(samples[pick], mixture, residual[pick], likelihood[pick]).items():
                rows.append({"id": entry["id"], "samples": subset, "estimator": name,
                             "si_sdri": si_sdr_improvement(estimate, truth, mixture).mean().item()})
        print(entry["id"], "done", flush=True)
    with atomic_path(task / "estimators.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    base = {r["id"]: r["si_sdri"] for r in rows
            if r["samples"] == f"{args.samples}" and r["estimator"] == "mean (default)"}
    print(f"\n{len(base)} validation mixtures (speech + sound), bundled settings, SI-SDRi in dB\n")
    print(f"| samples | estimator | SI-SDRi | vs the mean of {args.samples} (paired) |")
    print("| --- | --- | --- | --- |")
    for subset in subsets:
        for name in dict.fromkeys(r["estimator"] for r in rows):
            values = {r["id"]: r["si_sdri"] for r in rows if r["samples"] == subset and r["estimator"] == name}
            diffs = [values[i] - base[i] for i in base]
            mean, se = mean_and_error(diffs)
            print(f"| {subset} | {name} | {sum(values.values()) / len(values):+.2f} | {mean:+.2f} ± {se:.2f} |")


if __name__ == "__main__":
    run_or_exit(main)
