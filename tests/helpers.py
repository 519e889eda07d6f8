"""Shared test helpers: composing the real Hydra configs."""

from hydra import compose, initialize_config_dir

from unasdiff.config import CONFIG_DIR

# Tiny reference networks with short windows and few steps: the real pipeline, fast on 2 cores.
TINY_SEPARATE = ["priors.speech=tiny_speech", "priors.sound=tiny_sound", "sampler.steps=2", "window.seconds=0.5",
                 "progress=false", "auto_label.steps=[100]", "auto_label.draws=1"]


def compose_config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)
