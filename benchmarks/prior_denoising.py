"""How well each prior denoises held-out clips of each role: the cheap test of a prior, and of whether two
priors tell their sources apart (which is what separation rests on).

    python benchmarks/prior_denoising.py                  # the bundled network and template priors
    python benchmarks/prior_denoising.py --prior speech=checkpoints/demo/speech.pt \
        --prior run/speech=runs/demo_speech/checkpoints/last.pt --prior run/sound=runs/two_class/last.pt#1

For every held-out clip (`data/demo/heldout/<role>/<group>/`, written by scripts/gather_demo_audio.py;
the first clip of each group) a crop around an active span is brought to -22.5 dBFS (the middle of the
training range), noised to each step t with fixed noise, and denoised in one shot by each prior:
x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar). The table gives the gain in dB of x0_hat over
x_t / sqrt(abar), averaged over clips: how much of the noise the prior removes. Priors that tell their
sources apart show a larger gain on their own role than on the other: for every pair of priors named
<prefix>speech and <prefix>sound the second table gives that own-role margin (own prior's gain minus the
other prior's, on the same clips). CHECKPOINT#LABEL passes a class label (a two-class prior's roles).
Forward passes only: minutes on CPU.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from unasdiff.audio import gain_to_rms, load_audio  # noqa: E402
from unasdiff.config import REPO_ROOT  # noqa: E402
from unasdiff.data.mixtures import folder_groups  # noqa: E402
from unasdiff.data.spans import active_crop  # noqa: E402
from unasdiff.diffusion import DiffusionSchedule  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.models import load_prior  # noqa: E402
from unasdiff.runtime import tune_cpu_allocator  # noqa: E402

SAMPLE_RATE = 16000
LEVEL_DBFS = -22.5
DEMO_PRIORS = ["network/speech=checkpoints/demo/speech.pt", "network/sound=checkpoints/demo/sound.pt",
               "template/speech=checkpoints/demo/template_speech.pt",
               "template/sound=checkpoints/demo/template_sound.pt"]


def heldout_crops(folder: Path, count: int, seconds: float, seed: int) -> torch.Tensor:
    """[N, L]: a crop around an active span of the first clip of each of the first `count` groups."""
    length = int(seconds * SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    return torch.stack([level_crop(files[0], length, rng) for files in list(folder_groups(folder).values())[:count]])


def level_crop(path: Path, length: int, rng: np.random.Generator) -> torch.Tensor:
    """[L]: the file's `length`-sample crop around an active span (padded at the end if shorter), at LEVEL_DBFS."""
    x, _ = load_audio(path, SAMPLE_RATE)
    x = torch.nn.functional.pad(x, (0, max(0, length - x.shape[-1])))
    crop = torch.from_numpy(active_crop(x.numpy(), length, SAMPLE_RATE, rng)[1])
    return crop * gain_to_rms(crop, LEVEL_DBFS)


@torch.no_grad()
def denoising_gain(prior, label, clean: torch.Tensor, schedule: DiffusionSchedule, step: int,
                   seed: int) -> torch.Tensor:
    """[N] dB: error of the one-shot x0 estimate at `step` against the error of the noisy input itself."""
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed + step))
    x_t = schedule.noised(clean, step, noise)
    labels = None if label is None else torch.full((len(clean),), label)
    eps = prior(x_t, torch.full((len(clean),), schedule.time_input(step)), labels)
    abar = schedule.alphas_cumprod[step].item()
    signal, spread = abar**0.5, (1 - abar) ** 0.5
    before = (spread / signal) ** 2 * noise.pow(2).sum(-1)
    after = ((x_t - spread * eps) / signal - clean).pow(2).sum(-1)
    return 10 * torch.log10(before / after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", action="append", metavar="NAME=CHECKPOINT[#LABEL]",
                        help=f"repeatable; default: {' '.join(DEMO_PRIORS)}")
    parser.add_argument("--heldout", type=Path, default=REPO_ROOT / "data" / "demo" / "heldout")
    parser.add_argument("--clips", type=int, default=16, help="clips (groups) per role")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 10, 20, 40])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tune_cpu_allocator()
    priors = {}
    for item in args.prior or DEMO_PRIORS:
        name, sep, path = item.partition("=")
        if not sep:
            raise UnasdiffError(f"--prior {item!r}: write NAME=CHECKPOINT, e.g. speech=checkpoints/demo/speech.pt")
        path, _, label = path.partition("#")
        priors[name] = (load_prior(path), int(label) if label else None)
    roles = sorted(p.name for p in args.heldout.iterdir() if p.is_dir()) if args.heldout.is_dir() else []
    if not roles:
        raise UnasdiffError(f"no held-out clips in {args.heldout}: run scripts/gather_demo_audio.py first")
    clips = {role: heldout_crops(args.heldout / role, args.clips, args.seconds, args.seed) for role in roles}
    schedule = DiffusionSchedule.linear()
    print(f"denoising gain in dB (one-shot x0 estimate vs the noisy input), mean over clips; "
          f"{', '.join(f'{len(c)} {r}' for r, c in clips.items())} held-out clips of {args.seconds:g} s")
    print("| prior | clips | " + " | ".join(f"step {s}" for s in args.steps) + " | mean |")
    print("| --- | --- |" + " --- |" * (len(args.steps) + 1))
    gains = {}
    for name, (prior, label) in priors.items():
        for role, clean in clips.items():
            gains[name, role] = [denoising_gain(prior, label, clean, schedule, s, args.seed).mean().item()
                                 for s in args.steps]
            print(f"| {name} | {role} | " + " | ".join(f"{g:.2f}" for g in gains[name, role])
                  + f" | {np.mean(gains[name, role]):.2f} |", flush=True)
    pairs = [(name[:-len(role)], role, other) for name, _ in priors.items() for role in roles for other in roles
             if other != role and name.endswith(role) and name[:-len(role)] + other in priors]
    if pairs:
        print("\nown-role margin in dB: the own prior's gain minus the other prior's, on the same clips")
        print("| priors | role | " + " | ".join(f"step {s}" for s in args.steps) + " | mean |")
        print("| --- | --- |" + " --- |" * (len(args.steps) + 1))
        for prefix, role, other in pairs:
            margin = np.subtract(gains[prefix + role, role], gains[prefix + other, role])
            cells = " | ".join(f"{m:+.2f}" for m in margin)
            print(f"| {prefix or '-'} | {role} | {cells} | {margin.mean():+.2f} |")


if __name__ == "__main__":
    run_or_exit(main)
