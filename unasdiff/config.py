"""Where the Hydra configs live, and reading one group entry without a Hydra app."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import UnasdiffError

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout: the package is installed editable
CONFIG_DIR = REPO_ROOT / "configs"


def group_entry(group: str, name: str) -> DictConfig:
    """configs/<group>/<name>.yaml as a DictConfig (the repository checkout is the install)."""
    path = CONFIG_DIR / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        raise UnasdiffError(f"no {group} config {name!r} in {CONFIG_DIR / group}; known: {', '.join(known) or 'none'}")
    return OmegaConf.load(path)


def compose(config_name: str, overrides=()) -> DictConfig:
    """configs/<config_name>.yaml with command-line overrides, as the scripts see it, with `preset=auto`
    resolved to the preset it stands for. Overrides win over the preset."""
    return resolve_preset(_compose(config_name, list(overrides)), config_name, overrides)


def resolve_preset(cfg: DictConfig, config_name: str, overrides) -> DictConfig:
    """cfg itself, or, for preset=auto, the config composed again with the preset it stands for
    (`cfg.preset.chosen_by` says why)."""
    if "preset" not in cfg or cfg.preset.name != "auto":  # train_prior.yaml and others have no preset
        return cfg
    preset, reason = auto_preset(cfg)
    kept = [o for o in overrides if not o.lstrip("+~").startswith("preset=")]
    cfg = _compose(config_name, kept + [f"preset={preset}"])
    cfg.preset.chosen_by = f"preset=auto: {reason}"
    return cfg


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a script's @hydra.main: its search path is ours
        return hydra_compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def auto_preset(cfg: DictConfig) -> tuple[str, str]:
    """"published" when every source role of the task has its checkpoint (given as checkpoints.<role>, or the
    prior config's file in place), else "bundled"; and the reason, in words."""
    roles = list(dict.fromkeys(cfg.task.sources or cfg.priors))
    missing = []
    for role in roles:
        if cfg.checkpoints.get(role):
            continue
        path = group_entry("prior", cfg.priors[role]).checkpoint
        if not (REPO_ROOT / path).is_file():
            missing.append(path)
    if missing:
        return "bundled", (f"no {' or '.join(missing)}, so the bundled priors; put the published files there "
                           f"(README, 'Published priors') or pass preset=published to require them")
    return "published", "the priors of every role are in place"
