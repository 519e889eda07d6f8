"""The prior network and loading of published checkpoints.

    net = load_prior("checkpoints/speech/speech_source.pt", "speech")
    eps = net(x_t, 5 * step, label)   # [B, L] -> [B, L]
"""

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import group_entry
from ..errors import UnasdiffError
from .checkpoint import load_weights, read_checkpoint, read_state_dict
from .network import TriplePathUNet
from .residual import TemplateResidualPrior
from .templates import SpectralTemplatePrior

# prior config `kind` -> the module that implements it
KINDS = {"network": TriplePathUNet, "spectral_templates": SpectralTemplatePrior,
         "template_residual": TemplateResidualPrior}

__all__ = ["TriplePathUNet", "SpectralTemplatePrior", "TemplateResidualPrior", "build_network", "load_prior",
           "load_prior_and_config", "prior_config"]


def prior_config(config) -> DictConfig:
    """A prior config from a name in configs/prior (e.g. "speech", "tiny_sound") or a mapping."""
    if isinstance(config, str):
        return group_entry("prior", config)
    if isinstance(config, Mapping | DictConfig):
        return OmegaConf.create(config if "net" in config else {"net": dict(config)})
    raise TypeError(f"config must be a prior name or a mapping, not {type(config).__name__}")


def build_network(config) -> TriplePathUNet | SpectralTemplatePrior | TemplateResidualPrior:
    """An untrained prior of a prior config: the network (kind: network, the default), a spectral-template
    model (kind: spectral_templates) or a template plus a network of its residual (kind: template_residual)."""
    cfg = prior_config(config)
    kind = cfg.get("kind", "network")
    if kind not in KINDS:
        raise UnasdiffError(f"prior kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return KINDS[kind](**OmegaConf.to_container(cfg.net, resolve=True))


def load_prior(path, config=None, weights: str | None = None, default_config=None) -> TriplePathUNet:
    """The network with the weights in `path` (EMA weights by default), in eval mode.

    `config` is a prior config (name or mapping). None takes the one that checkpoints written by
    scripts/train_prior.py carry, else `default_config`."""
    return load_prior_and_config(path, config, weights, default_config)[0]


def load_prior_and_config(path, config=None, weights: str | None = None,
                          default_config=None) -> tuple[TriplePathUNet, DictConfig]:
    """load_prior, and the prior config it used (given, carried by the checkpoint, or the default)."""
    path = Path(path)
    if not path.is_file():
        raise UnasdiffError(f"no checkpoint at {path}: put the prior's file there (see README, 'Published priors') "
                            f"or pass the path of another")
    payload = read_checkpoint(path)
    if config is None:
        carried = payload.get("config")
        config = carried["prior"] if isinstance(carried, dict) and "prior" in carried else default_config
        if config is None:
            raise UnasdiffError(f"{path} carries no network config; name one (e.g. load_prior(path, 'speech'))")
    cfg = prior_config(config)
    net = build_network(cfg)
    state = read_state_dict(path, weights or cfg.get("weights", "ema"), payload)
    load_weights(net, state, source=str(path))
    return net.eval().requires_grad_(False), cfg
