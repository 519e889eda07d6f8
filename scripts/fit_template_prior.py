"""Fit a spectral-template prior (the classical baseline every trained prior must beat) to clean audio.

    python scripts/fit_template_prior.py prior=template_speech data.folder_root=my_speech/
        # -> runs/templates/template_speech.pt
    python scripts/fit_template_prior.py experiment=template_sound     # the bundled one (checkpoints/demo/)

Settings: configs/fit_template_prior.yaml (and the prior/, data/, experiment/ groups).
The work: unasdiff/template_fitting.py; the model: unasdiff/models/templates.py.
"""

import hydra
from omegaconf import DictConfig

from unasdiff.errors import run_or_exit


@hydra.main(config_path="../configs", config_name="fit_template_prior", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from unasdiff.template_fitting import fit

    print(f"template prior: {run_or_exit(fit, cfg)}")


if __name__ == "__main__":
    main()
