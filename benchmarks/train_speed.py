"""Training throughput of a prior: steps and examples per second of the real training step
(unasdiff.training: diffusion loss, backward, gradient clipping, AdamW, EMA) on 4 s crops, and on CPU
also at the 8 x 1 s crops that the demo networks' continued run trains on.

    python benchmarks/train_speed.py [--device cuda]

CPU rows: the tiny, demo and full-size networks at batches that fit this machine; on CUDA also the
full size at the reference's batch 12 in bf16. Data loading is not included (see CropStream).
"""

import argparse
import copy
import statistics
import time

import torch

from unasdiff.diffusion import DiffusionSchedule
from unasdiff.models import build_network, prior_config
from unasdiff.runtime import tune_cpu_allocator
from unasdiff.training import diffusion_loss, update_ema

SAMPLE_RATE = 16000
SIZES = {"tiny": dict(hidden_size=8, emb_dim=16, num_heads=2, depths=[1, 1, 1, 1, 1], fullband_channels=4),
         "demo": "demo_speech", "full": "speech"}


def network(size: str, precision: str):
    base = prior_config("speech").net
    spec = SIZES[size]
    settings = {**base, **(spec if isinstance(spec, dict) else prior_config(spec).net), "precision": precision}
    return build_network(settings)


def measure(size: str, batch: int, seconds: float, device: torch.device, precision: str, repeats: int) -> dict:
    net = network(size, precision).to(device).train()
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    schedule = DiffusionSchedule.linear()
    length = int(seconds * SAMPLE_RATE)

    def step():
        x0 = 0.05 * torch.randn(batch, length, device=device)
        t = torch.randint(200, (batch,), device=device)
        noise = torch.randn_like(x0)
        labels = torch.zeros(batch, dtype=torch.long, device=device)
        loss = diffusion_loss(net, x0, t, noise, labels, schedule, torch.ones(batch, device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        update_ema(ema, net, 0.9999)
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"params_m": sum(p.numel() for p in net.parameters()) / 1e6, "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        tune_cpu_allocator()
        plan = [("tiny", 12, 4.0, "fp32"), ("demo", 4, 4.0, "fp32"), ("demo", 8, 1.0, "fp32"), ("full", 1, 4.0, "fp32")]
    else:
        plan = [("tiny", 12, 4.0, "bf16"), ("demo", 12, 4.0, "bf16"), ("full", 12, 4.0, "fp32"),
                ("full", 12, 4.0, "bf16")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; crops at 16 kHz; median of {args.repeats} steps after one warm-up\n")
    print("| network | parameters (M) | batch × crop | precision | seconds per step | steps/s | examples/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size, batch, seconds, precision in plan:
        r = measure(size, batch, seconds, device, precision, args.repeats)
        print(f"| {size} | {r['params_m']:.2f} | {batch} × {seconds:g} s | {precision} | {r['seconds']:.2f} | "
              f"{1 / r['seconds']:.3f} | {batch / r['seconds']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
