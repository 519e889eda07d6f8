"""Score a separation system on a fixed test set (a manifest written once), or on the demo mixtures.

    python scripts/evaluate.py task=speech_sound make_manifest=true data.vctk_root=/data/VCTK-Corpus-0.92 \
        data.fsd_root=/data/FSDKaggle2018
    python scripts/evaluate.py task=speech_sound data.vctk_root=... data.fsd_root=...
    python scripts/evaluate.py -m task=speech_sound sampler=hybrid,dps,dsg,msdm_dirac,undiff sampler.init=mixture,noise
    torchrun --nproc_per_node=8 scripts/evaluate.py task=sound_sound data.fsd_root=...
    python scripts/evaluate.py task=demo demo_root=../unasdiff-reference   # a clone of the reference repository

Settings: configs/evaluate.yaml. The work: unasdiff/evaluate.py.
"""

import hydra
from omegaconf import DictConfig

from unasdiff.errors import run_or_exit


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from unasdiff.config import resolve_preset
    from unasdiff.evaluate import run

    cfg = run_or_exit(resolve_preset, cfg, "evaluate", HydraConfig.get().overrides.task)

    run_or_exit(run, cfg)


if __name__ == "__main__":
    main()
