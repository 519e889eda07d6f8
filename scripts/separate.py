"""Separate a mixture (or a folder of them) with diffusion source priors.

    python scripts/separate.py task=speech_sound mixture=path/to/mix.wav labels=[null,Bark]
    python scripts/separate.py task=sound_sound mixture=mix.wav sampler=dps sampler.steps=50

Settings: configs/separate.yaml (and the task/, sampler/, prior/ groups). The work: unasdiff/separate.py.
"""

import sys

import hydra
from omegaconf import DictConfig

from unasdiff.errors import run_or_exit


@hydra.main(config_path="../configs", config_name="separate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from unasdiff.config import resolve_preset
    from unasdiff.separate import run

    cfg = run_or_exit(resolve_preset, cfg, "separate", HydraConfig.get().overrides.task)

    failures = run_or_exit(run, cfg)
    if failures:
        print(f"error: {failures} file(s) could not be separated (see the log above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
