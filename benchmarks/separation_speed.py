"""Wall time and peak memory of separating one 4 s speech + sound mixture.

    python benchmarks/separation_speed.py [--device cuda] [--priors speech sound] [--steps 200 50]

The cost of a step does not depend on the step count, so CPU runs default to 20 steps and the
table extrapolates to the paper's 200.

By default the networks are the small demo configs (random weights: speed does not depend on them);
`--priors speech sound` measures the full-size published architecture (use a GPU). Each row runs
in a fresh process so its peak memory is its own. Baseline in the same run: the reference's way,
one mixture at a time; our sampler also takes a batch of mixtures in one pass.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--priors", nargs=2, default=["demo_speech", "demo_sound"], help="configs in configs/prior")
    parser.add_argument("--steps", nargs="+", type=int, default=[20])
    parser.add_argument("--methods", nargs="+", default=["hybrid", "dps", "dsg", "msdm_dirac", "undiff"])
    parser.add_argument("--batch", type=int, default=4, help="mixtures per pass for the batched rows")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--step-count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
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
