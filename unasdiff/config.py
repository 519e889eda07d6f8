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
