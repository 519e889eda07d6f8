"""Wall time and peak memory of separation: the bundled default on recordings of any length, and the samplers.

    python benchmarks/separation_speed.py --bundled [--lengths 4 60 600] [--baseline DIR] [--variant NAME:KEY=V,..]
    python benchmarks/separation_speed.py [--device cuda] [--priors speech sound] [--steps 200 50]

--bundled runs what a user runs, `scripts/separate.py mixture=FILE` and nothing else, on recordings made of the
bundled example (examples/speech_sound/mixture.wav, speech + sound) repeated to each length, one process per
row (peak RSS of that process): this checkout, each --variant (this checkout with overrides, e.g.
"overlap0.5:window.overlap=0.5"), and with --baseline another checkout, e.g. an earlier commit in a worktree
(`git worktree add /tmp/base <commit>`), on the lengths up to --baseline-max seconds. Ratios are against the
baseline of the same length in this run.

The cost of a step does not depend on the step count, so CPU runs default to 20 steps and the
table extrapolates to the paper's 200.

By default the networks are the small demo configs (random weights: speed does not depend on them);
`--priors speech sound` measures the full-size published architecture (use a GPU). Each row runs
in a fresh process so its peak memory is its own. Baseline in the same run: the reference's way,
one mixture at a time; our sampler also takes a batch of mixtures in one pass.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parent.parent

SAMPLE_RATE = 16000


def measure(args) -> dict:
    from unasdiff.models import build_network
    from unasdiff.runtime import tune_cpu_allocator
    from unasdiff.separation import separate

    device = torch.device(args.device)
    if device.type == "cpu":
        tune_cpu_allocator()  # as scripts/ do
    nets = []
    for name in args.priors:
        net = build_network(name).to(device)
        for p in net.parameters():  # non-zero weights (new networks predict exactly 0)
            torch.nn.init.normal_(p, std=0.02)
        nets.append(net.eval().requires_grad_(False))
    g = torch.Generator(device).manual_seed(0)
    mixture = 0.1 * torch.randn(args.batch, int(args.seconds * SAMPLE_RATE), generator=g, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    separate(mixture, nets, [None, 0], method=args.measure, steps=args.step_count, generator=g)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"seconds": seconds, "peak_mb": peak}


def make_recording(path: Path, seconds: float) -> None:
    """The bundled example repeated (and cut) to `seconds`."""
    example, rate = sf.read(REPO / "examples" / "speech_sound" / "mixture.wav", dtype="float32")
    frames = int(seconds * rate)
    sf.write(path, np.resize(example, frames), rate, subtype="FLOAT")


def run_separate(checkout: Path, mixture: Path, out: Path, overrides: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of `scripts/separate.py mixture=...` in `checkout`, in its own process."""
    cmd = [sys.executable, str(checkout / "scripts" / "separate.py"), f"mixture={mixture}", f"output_dir={out}",
           "progress=false", "write.spectrogram=false", f"hydra.run.dir={out / 'hydra'}", *overrides]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=checkout)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{checkout}/scripts/separate.py failed: {proc.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def bundled(args) -> None:
    systems = [("this checkout", REPO, [])]
    systems += [(name, REPO, overrides.split(",")) for name, overrides in (v.split(":", 1) for v in args.variant)]
    if args.baseline:
        systems.append((f"baseline ({args.baseline})", Path(args.baseline).resolve(), []))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.lengths:
            mixture = Path(tmp) / f"{seconds:g}s.wav"
            make_recording(mixture, seconds)
            for name, checkout, overrides in systems:
                if checkout != REPO and seconds > args.baseline_max:
                    continue
                wall, peak = run_separate(checkout, mixture, Path(tmp) / "out", overrides)
                rows.append((seconds, name, wall, peak))
                print(f"  {seconds:g} s, {name}: {wall:.1f} s, peak RSS {peak:.0f} MB", flush=True)
    print(f"\nscripts/separate.py mixture=FILE (the bundled default), the example repeated to each length; "
          f"CPU, {torch.get_num_threads()} threads\n")
    print("| recording | system | wall time (s) | real-time factor | peak RSS (MB) | x faster than the baseline |")
    print("| --- | --- | --- | --- | --- | --- |")
    baseline = {s: w for s, n, w, _ in rows if n.startswith("baseline")}
    for seconds, name, wall, peak in rows:
        ratio = f"{baseline[seconds] / wall:.1f}" if seconds in baseline else ""
        print(f"| {seconds:g} s | {name} | {wall:.1f} | {wall / seconds:.2f} | {peak:.0f} | {ratio} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundled", action="store_true", help="the bundled default on recordings (see above)")
    parser.add_argument("--lengths", nargs="+", type=float, default=[4, 60, 600], help="--bundled: seconds")
    parser.add_argument("--baseline", help="--bundled: another checkout to time beside this one")
    parser.add_argument("--baseline-max", type=float, default=60, help="--bundled: longest recording for the baseline")
    parser.add_argument("--variant", nargs="*", default=[], metavar="NAME:KEY=VALUE,...",
                        help="--bundled: this checkout with overrides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--priors", nargs=2, default=["demo_speech", "demo_sound"], help="configs in configs/prior")
    parser.add_argument("--steps", nargs="+", type=int, default=[20])
    parser.add_argument("--methods", nargs="+", default=["hybrid", "dps", "dsg", "msdm_dirac", "undiff"])
    parser.add_argument("--batch", type=int, default=4, help="mixtures per pass for the batched rows")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--step-count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bundled:
        bundled(args)
        return
    if args.measure:
        print(json.dumps(measure(args)))
        return

    def row(method, steps, batch):
        cmd = [sys.executable, __file__, "--measure", method, "--step-count", str(steps), "--batch", str(batch),
               "--device", args.device, "--seconds", str(args.seconds), "--priors", *args.priors]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    plan = [(m, s, 1) for m in args.methods for s in args.steps] + [(args.methods[0], args.steps[0], args.batch)]
    results = []
    for method, steps, batch in plan:
        r = row(method, steps, batch)
        results.append((method, steps, batch, r))
        print(f"  {method} {steps} steps batch {batch}: {r['seconds']:.1f} s", flush=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"\ndevice: {name}; priors {' + '.join(args.priors)}; one {args.seconds:g} s mixture\n")
    print("| method | steps | mixtures per pass | seconds per mixture | per step | 200 steps (extrapolated) "
          "| peak memory MB | x faster than one at a time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    single = {(m, s): r["seconds"] for m, s, b, r in results if b == 1}
    for method, steps, batch, r in results:
        per_mixture = r["seconds"] / batch
        print(f"| {method} | {steps} | {batch} | {per_mixture:.1f} | {per_mixture / steps:.2f} | "
              f"{200 * per_mixture / steps:.0f} | {r['peak_mb']:.0f} | {single[(method, steps)] / per_mixture:.2f} |")


if __name__ == "__main__":
    main()
