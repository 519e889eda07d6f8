"""The template priors' exact posterior mean against the sampler that uses them.

    python benchmarks/template_posterior.py --results results/validation --system SYSTEM --speech S.pt --sound S.pt

For the mixtures of a `benchmarks/small_priors.py` results folder (<results>/speech_sound/manifest.json),
the exact posterior mean E[s | y] of the two template priors (`posterior_mean_sources` in
unasdiff/models/templates.py: no diffusion, no sampling), scored like a system, beside the sampler's
scores from <results>/speech_sound/<SYSTEM>/scores.csv on the same mixtures. It asks whether the sampler
gets what exact inference with the same priors would: on stationary Gaussian sources (gaussian_oracle.py)
the samplers come close to the exact posterior mean; with the template priors they differ
(docs/record/bundled_priors_run_log.md, "Exact inference with the template priors").
Writes <results>/speech_sound/<SYSTEM>/exact_posterior_mean.csv.
"""

import argparse
import csv
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from unasdiff.config import CONFIG_DIR, REPO_ROOT  # noqa: E402
from unasdiff.data.crops import ResampledCache  # noqa: E402
from unasdiff.data.mixtures import read_manifest, render  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.files import write_text  # noqa: E402
from unasdiff.metrics import si_sdr_improvement  # noqa: E402
from unasdiff.models import SpectralTemplatePrior, load_prior  # noqa: E402
from unasdiff.models.templates import posterior_mean_sources  # noqa: E402
from unasdiff.pipeline import working_gain  # noqa: E402


def sampler_scores(path: Path) -> dict[str, tuple[float, float]]:
    if not path.is_file():
        raise UnasdiffError(f"{path} not found: run benchmarks/small_priors.py for that system first")
    return {row["id"]: (float(row["si_sdri_0"]), float(row["si_sdri_1"])) for row in csv.DictReader(path.open())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="a benchmarks/small_priors.py --results folder")
    parser.add_argument("--system", required=True, help="the sampler system to compare with (a folder of it)")
    parser.add_argument("--speech", required=True, help="the speech template prior that system used")
    parser.add_argument("--sound", required=True, help="the sound template prior that system used")
    parser.add_argument("--audio", type=Path, help="speech/ and sound/ folders of the mixtures' clips (default: "
                                                   "<results>/mixtures for validation, else data/demo/heldout)")
    parser.add_argument("--mixtures", type=int, help="the first N mixtures (default: all the system scored)")
    args = parser.parse_args()
    task = args.results / "speech_sound"
    sampler = sampler_scores(task / args.system / "scores.csv")
    audio = args.audio or (args.results / "mixtures" if (args.results / "mixtures").is_dir()
                           else REPO_ROOT / "data" / "demo" / "heldout")
    priors = [load_prior(path) for path in (args.speech, args.sound)]
    if not all(isinstance(p, SpectralTemplatePrior) for p in priors):
        raise UnasdiffError("--speech and --sound must be spectral-template priors (scripts/fit_template_prior.py)")
    entries = [e for e in read_manifest(task / "manifest.json")["mixtures"] if e["id"] in sampler][:args.mixtures]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate")  # rate, length, audio cache and working level, as evaluate.py
    roots = {"speech": audio / "speech", "sound": audio / "sound"}
    cache = ResampledCache(cfg.sample_rate, cfg.data.cache_dir)
    rows = []
    for entry in entries:
        mixture, truth = render(entry, roots, cfg.sample_rate, entry.get("seconds", cfg.recipe.seconds), cache)
        started = time.perf_counter()
        gain = working_gain(mixture, cfg.level, len(truth))
        with torch.no_grad():
            estimate = posterior_mean_sources(gain * mixture[None], *priors)[0] / gain
        exact = si_sdr_improvement(estimate, truth, mixture).tolist()
        rows.append({"id": entry["id"], "exact_speech": exact[0], "exact_sound": exact[1],
                     "sampler_speech": sampler[entry["id"]][0], "sampler_sound": sampler[entry["id"]][1],
                     "seconds": time.perf_counter() - started})
        print(f"{entry['id']}: exact {exact[0]:+.2f} / {exact[1]:+.2f}, sampler {sampler[entry['id']][0]:+.2f} / "
              f"{sampler[entry['id']][1]:+.2f} dB", flush=True)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    path = write_text(task / args.system / "exact_posterior_mean.csv", out.getvalue())

    def mean(*keys):
        return statistics.mean(row[k] for row in rows for k in keys)

    print(f"\nSI-SDRi in dB over {len(rows)} mixtures of {task} (rows: {path})")
    print("| estimate | SI-SDRi | speech | sound | s per mixture |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| exact posterior mean of the template priors | {mean('exact_speech', 'exact_sound'):+.2f} | "
          f"{mean('exact_speech'):+.2f} | {mean('exact_sound'):+.2f} | {mean('seconds'):.1f} |")
    print(f"| {args.system} | {mean('sampler_speech', 'sampler_sound'):+.2f} | {mean('sampler_speech'):+.2f} | "
          f"{mean('sampler_sound'):+.2f} | |")


if __name__ == "__main__":
    run_or_exit(main)
