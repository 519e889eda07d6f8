"""Which role two template priors give single frames of each role's audio: a look at why they take each
other's sources, in seconds.

    python benchmarks/frame_roles.py                      # the bundled template priors, the held-out clips
    python benchmarks/frame_roles.py --speech results/validation120/priors/template_speech-6a8edc.pt \
        --sound results/validation120/priors/template_sound-6a8edc.pt \
        --audio speech=data/demo/train/speech/klettres-data \
        --audio sound=data/demo/train/sound/tuxpaint-stamps-default \
        --audio sound=data/demo/train/sound/gcompris-qt-data --audio sound=data/demo/train/sound/sonic-pi-samples
        # the validation priors on the validation packages, which they were not fitted on

From each role's folders `--clips` files are drawn (seeded); a crop around an active span of each is brought
to -22.5 dBFS (the middle of the training range) and noised to each step with fixed noise. Every STFT frame
of x_t whose clean frame is within 40 dB of its crop's loudest is given to the role whose prior explains it
better, p(frame | speech prior) against p(frame | sound prior) at even odds, each frame on its own (a Markov
prior's shapes taken with their overall weights). The table gives the share of each role's frames given to
it, and their mean (the balanced accuracy; 50 % is chance). It shows where two priors disagree; it does not
rank changes to them by how well they will separate (docs/record/bundled_priors_run_log.md, 'Not
discriminative training of the shapes').
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from prior_denoising import SAMPLE_RATE, level_crop  # noqa: E402  (the same crops at the same level)

from unasdiff.audio import AUDIO_SUFFIXES  # noqa: E402
from unasdiff.config import REPO_ROOT  # noqa: E402
from unasdiff.diffusion import DiffusionSchedule  # noqa: E402
from unasdiff.errors import UnasdiffError, run_or_exit  # noqa: E402
from unasdiff.models import SpectralTemplatePrior, load_prior  # noqa: E402
from unasdiff.template_fitting import frame_powers  # noqa: E402

ROLES = ("speech", "sound")
FRAME_RANGE_DB = 40.0  # frames further below their crop's loudest are near-silent: no role to tell


def role_crops(folders: list[Path], count: int, seconds: float, seed: int) -> torch.Tensor:
    """[N, L]: a crop around an active span of each of `count` files drawn from the folders."""
    files = sorted(p for folder in folders for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UnasdiffError(f"no audio files under {', '.join(map(str, folders))}")
    rng = np.random.default_rng(seed)
    length = int(seconds * SAMPLE_RATE)
    drawn = rng.choice(len(files), size=min(count, len(files)), replace=False)
    return torch.stack([level_crop(files[index], length, rng) for index in drawn])


@torch.no_grad()
def frame_log_likelihood(prior: SpectralTemplatePrior, power: torch.Tensor, step: int,
                         schedule: DiffusionSchedule) -> torch.Tensor:
    """log p(frame) up to a constant shared by priors of the same STFT, for frames of |X_t|^2 [B, N, F] of
    x_t = a x0 + s eps at `step`, every frame on its own -> [B, N]."""
    abar = schedule.alphas_cumprod[step]
    variances = abar * prior.component_variances() + (1 - abar) * prior.noise_power
    return torch.logsumexp(prior.log_joint(power, variances), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", type=Path, default=REPO_ROOT / "checkpoints" / "demo" / "template_speech.pt")
    parser.add_argument("--sound", type=Path, default=REPO_ROOT / "checkpoints" / "demo" / "template_sound.pt")
    parser.add_argument("--audio", action="append", metavar="ROLE=FOLDER",
                        help="repeatable; default: speech=data/demo/heldout/speech sound=data/demo/heldout/sound")
    parser.add_argument("--clips", type=int, default=64, help="files drawn per role")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 10, 40, 80])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    priors = {}
    for role in ROLES:
        prior = load_prior(getattr(args, role))
        if not isinstance(prior, SpectralTemplatePrior):
            raise UnasdiffError(f"--{role} {getattr(args, role)} is a {type(prior).__name__}: this benchmark needs "
                                f"template priors, whose frame likelihood is exact")
        priors[role] = prior
    if priors["speech"].n_fft != priors["sound"].n_fft:
        raise UnasdiffError(f"the two priors frame the audio differently (n_fft {priors['speech'].n_fft} and "
                            f"{priors['sound'].n_fft}): their frame likelihoods cannot be compared")
    folders = {role: [] for role in ROLES}
    heldout = REPO_ROOT / "data" / "demo" / "heldout"
    for item in args.audio or [f"{role}={heldout / role}" for role in ROLES]:
        role, _, folder = item.partition("=")
        if role not in folders or not folder:
            raise UnasdiffError(f"--audio {item!r}: write ROLE=FOLDER with ROLE speech or sound")
        folders[role].append(Path(folder))
    missing = [role for role in ROLES if not folders[role]]
    if missing:
        raise UnasdiffError(f"no --audio folder for {' and '.join(missing)}: give ROLE=FOLDER for both roles")
    schedule = DiffusionSchedule.linear()
    reference = priors["speech"]
    shares = {}
    for role in ROLES:
        clean = role_crops(folders[role], args.clips, args.seconds, args.seed)
        energy = frame_powers(reference, clean).sum(-1)
        audible = energy >= energy.amax(-1, keepdim=True) * 10 ** (-FRAME_RANGE_DB / 10)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(args.seed))
        for step in args.steps:
            power = frame_powers(reference, schedule.noised(clean, step, noise))
            speech, sound = (frame_log_likelihood(priors[r], power, step, schedule) for r in ROLES)
            called_own = (speech > sound) if role == "speech" else (sound > speech)
            shares[role, step] = called_own[audible].double().mean().item()
        print(f"{role}: {len(clean)} crops, {int(audible.sum())} frames", file=sys.stderr)
    print(f"speech prior {args.speech}, sound prior {args.sound}: share of each role's frames that the two priors "
          f"give to that role (each frame on its own, even odds)\n")
    print("| step | speech frames called speech | sound frames called sound | balanced |")
    print("| --- | --- | --- | --- |")
    for step in args.steps:
        speech, sound = shares["speech", step], shares["sound", step]
        print(f"| {step} | {100 * speech:.1f} % | {100 * sound:.1f} % | {50 * (speech + sound):.1f} % |")


if __name__ == "__main__":
    run_or_exit(main)
