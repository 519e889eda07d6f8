"""Speed and memory of the full-size prior network on one 4 s input at 16 kHz.

    python benchmarks/model_speed.py [--device cuda] [--repeats 3]

Each row runs in a fresh process so that its peak memory is its own. Rows:
  sdpa       our network as shipped (fused scaled_dot_product_attention kernel)
  math-attn  the same network with the unfused softmax(QK^T)V attention the reference computes,
             the in-run baseline (the only ratio printed: one measured on another day or machine,
             such as the reference implementation's own times, would not be a measurement)
"fwd+bwd" is a forward plus the backward to the input with frozen weights: the cost of one guided
sampler step per source.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

SECONDS_OF_AUDIO, SAMPLE_RATE = 4, 16000


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(device, dtype=torch.float32, n=2048, repeats=10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def measure(mode: str, batch: int, device: str, precision: str, attention: str, repeats: int,
            settings: dict | None = None, seconds: float = SECONDS_OF_AUDIO) -> dict:
    """Median seconds of `mode` ("forward" or "fwd+bwd") at `batch` inputs of `seconds`, peak memory, GFLOP per
    source and parameters, for the network of `settings` (default: the published speech prior's)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from unasdiff.models import build_network
    from unasdiff.runtime import tune_cpu_allocator

    device = torch.device(device)
    if device.type == "cpu":
        tune_cpu_allocator()  # as scripts/ do
    net = build_network({**(settings or _speech_net()), "precision": precision}).to(device)
    for p in net.parameters():  # trained-like non-zero weights (new networks start with zero adaLN)
        torch.nn.init.normal_(p, std=0.02)
    net.eval().requires_grad_(False)
    x = 0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE), device=device)
    t = torch.full((batch,), 500, device=device)
    backends = {"sdpa": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
                "math-attn": [SDPBackend.MATH]}[attention]

    def step():
        if mode == "forward":
            with torch.no_grad():
                net(x, t)
        else:
            xg = x.detach().requires_grad_(True)
            net(xg, t).square().sum().backward()

    with sdpa_kernel(backends):
        step()  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
    with sdpa_kernel([SDPBackend.MATH]), torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x[:1], t[:1])  # the fused CPU kernel is not counted by FlopCounterMode; the math one is
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"seconds": statistics.median(times), "peak_mb": peak_mb,
            "gflop_per_source": counter.get_total_flops() / 1e9,
            "params_m": sum(p.numel() for p in net.parameters()) / 1e6}


def _speech_net():
    from omegaconf import OmegaConf

    from unasdiff.models import prior_config
    return OmegaConf.to_container(prior_config("speech").net)


def run_row(args, mode, batch, precision, attention) -> dict:
    cmd = [sys.executable, __file__, "--measure", mode, "--batch", str(batch), "--device", args.device,
           "--precision", precision, "--attention", attention, "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--attention", default="sdpa", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.batch, args.device, args.precision, args.attention, args.repeats)))
        return

    device = torch.device(args.device)
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    plan = [(mode, batch, prec, att) for prec in precisions for att in ("sdpa", "math-attn")
            for mode, batch in (("forward", 1), ("fwd+bwd", 1), ("forward", 2))]
    peak = matmul_peak_gflops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rows = [(key, run_row(args, *key)) for key in plan]
    info = rows[0][1]
    print(f"device: {name}; torch {torch.__version__}; fp32 matmul peak {peak:.0f} GFLOP/s (2048^3 sgemm)")
    print(f"parameters: {info['params_m']:.2f} M; {info['gflop_per_source']:.0f} GFLOP per 4 s source (forward)\n")
    print("| pass | batch | precision | attention | seconds | peak memory MB | x faster than math-attn "
          "| forward GFLOP/s (% of matmul peak) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    baseline = {(m, b, p): r["seconds"] for (m, b, p, a), r in rows if a == "math-attn"}
    for (mode, batch, prec, att), r in rows:
        rate = ""
        if mode == "forward":
            gflops = r["gflop_per_source"] * batch / r["seconds"]
            rate = f"{gflops:.0f} ({100 * gflops / peak:.0f}%)"
        print(f"| {mode} | {batch} | {prec} | {att} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | "
              f"{baseline[(mode, batch, prec)] / r['seconds']:.2f} | {rate} |")


if __name__ == "__main__":
    main()
