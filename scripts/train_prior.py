"""Train a diffusion source prior on one process, or on many under torchrun.

    python scripts/train_prior.py prior=speech data=vctk data.vctk_root=/data/VCTK-Corpus-0.92
    torchrun --nproc_per_node=8 scripts/train_prior.py prior=sound data=fsd data.fsd_root=/data/FSDKaggle2018
    python scripts/train_prior.py prior=sound data=fsd data.fsd_root=... resume=true

Settings: configs/train_prior.yaml (and the prior/, data/, model/, experiment/ groups).
The work: unasdiff/training.py.
"""

import hydra
from omegaconf import DictConfig

from unasdiff.errors import run_or_exit


@hydra.main(config_path="../configs", config_name="train_prior", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from unasdiff.training import train

    print(f"checkpoint: {run_or_exit(train, cfg)}")


if __name__ == "__main__":
    main()
