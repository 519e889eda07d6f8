"""The bundled demo priors on held-out real audio: the paper's ablation at small scale.

    python scripts/gather_demo_audio.py                       # once: data/demo/heldout (VCTK + FSDKaggle2018 clips)
    python benchmarks/small_priors.py                         # every system, 30 held-out speech + sound mixtures
    python benchmarks/small_priors.py --systems hybrid-50 undiff-50 --mixtures 8
    python benchmarks/small_priors.py --demo --systems hybrid-200   # the paper's 28 demo mixtures, beside the reference
    python benchmarks/small_priors.py --demo --mixtures 5 --systems hybrid-50   # its 5 speech + sound mixtures

Each system is one `scripts/evaluate.py` run (the same code path, so a stopped benchmark resumes where
it stopped): the test mixtures follow the paper's recipe (4 s, a VCTK speaker and an FSDKaggle2018
clip, each at -25..-20 dBFS RMS) and are written once to results/small_priors/speech_sound/manifest.json.
The priors are checkpoints/demo/{speech,sound}.pt (override with --speech/--sound). The table gives
SI-SDRi (dB, mean over sources and mixtures) per system, with the mixture itself as the 0 dB baseline,
and is also written to results/small_priors/<task>/table.md with SI-SDR and SDR.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from unasdiff.config import CONFIG_DIR, REPO_ROOT  # noqa: E402
from unasdiff.errors import run_or_exit  # noqa: E402
from unasdiff.evaluate import run as evaluate  # noqa: E402

# name -> evaluate.py overrides. The questions of the ablation: guidance rule, initialisation, step count,
# averaging samples. At 50 steps the hybrid rule runs as the bundled example does (example.sampler in
# configs/separate.yaml: its floor is per step, so 50 steps with the 200-step constants give a quarter of the
# guidance; benchmarks/gaussian_oracle.py found 0.4 / 0.008 for 50 steps); hybrid-50-reference-constants
# shows what that changes.
RULES = ("hybrid", "dps", "dsg", "msdm_dirac", "undiff")
HYBRID_50 = [f"sampler.rules.hybrid.{key}={value}" for key, value in OmegaConf.to_container(
    OmegaConf.load(CONFIG_DIR / "separate.yaml").example.sampler.rules.hybrid).items()]
SYSTEMS = {}
for steps in (200, 50):
    for rule in RULES:
        SYSTEMS[f"{rule}-{steps}"] = [f"sampler={rule}", f"sampler.steps={steps}"] + (
            HYBRID_50 if (rule, steps) == ("hybrid", 50) else [])
    SYSTEMS[f"hybrid-{steps}-noise-init"] = SYSTEMS[f"hybrid-{steps}"] + ["sampler.init=noise"]
    SYSTEMS[f"hybrid-{steps}-4samples"] = SYSTEMS[f"hybrid-{steps}"] + ["sampler.n_samples=4"]
SYSTEMS["hybrid-50-reference-constants"] = ["sampler=hybrid", "sampler.steps=50"]


MANIFEST_SIZE = 30  # held-out speech + sound mixtures written to the manifest


def system_config(name: str, args) -> DictConfig:
    overrides = [*SYSTEMS[name], f"system={name}", f"results_root={args.results}", "priors.speech=demo_speech",
                 "priors.sound=demo_sound", "progress=false", "write_wavs=3", f"manifest_seed={args.seed}"]
    if args.speech:
        overrides.append(f"checkpoints.speech={args.speech}")
    if args.sound:
        overrides.append(f"checkpoints.sound={args.sound}")
    if args.demo:
        overrides += ["task=demo", f"demo_root={args.demo_root}", f"max_mixtures={args.mixtures or 'null'}"]
    else:
        manifest = Path(args.results) / "speech_sound" / "manifest.json"
        overrides += ["task=speech_sound", f"n_mixtures={MANIFEST_SIZE}", f"max_mixtures={args.mixtures or 'null'}",
                      f"make_manifest={not manifest.exists()}",
                      f"data.speech_folder={args.heldout / 'speech'}", f"data.sound_folder={args.heldout / 'sound'}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--mixtures", type=int, help=f"the first N mixtures (default: all; {MANIFEST_SIZE} held-out "
                                                      "ones, or the 28 demo mixtures)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo", action="store_true", help="the paper's 28 demo mixtures instead")
    parser.add_argument("--demo-root", default=str(REPO_ROOT.parent / "shared" / "data" / "unasdiff_demo"))
    parser.add_argument("--heldout", type=Path, default=REPO_ROOT / "data" / "demo" / "heldout")
    parser.add_argument("--results", default=str(REPO_ROOT / "results" / "small_priors"))
    parser.add_argument("--speech", help="speech prior checkpoint (default: checkpoints/demo/speech.pt)")
    parser.add_argument("--sound", help="sound prior checkpoint (default: checkpoints/demo/sound.pt)")
    args = parser.parse_args()
    rows = []
    for name in args.systems:
        cfg = system_config(name, args)
        started = time.perf_counter()
        table = evaluate(cfg)
        summary = json.loads((Path(cfg.output_dir) / "summary.json").read_text())
        scores = summary["scores"]
        rows.append((name, summary["mixtures"], scores["all"]["si_sdri"]["mean"],
                     *(scores.get(f"role:{r}", {}).get("si_sdri", {}).get("mean", float("nan")) for r in ("speech", "sound")),
                     time.perf_counter() - started))
    print(f"\nSI-SDRi in dB on {'the demo mixtures' if args.demo else 'held-out speech + sound mixtures'} "
          f"(the mixture: 0 dB); full table with SI-SDR and SDR: {table}")
    print("| system | mixtures | SI-SDRi | speech | sound | wall time this run (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, count, mean, speech, sound, seconds in rows:
        print(f"| {name} | {count} | {mean:.2f} | {speech:.2f} | {sound:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    run_or_exit(main)
