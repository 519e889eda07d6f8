"""Reading and writing prior checkpoints.

A checkpoint is untrusted input: it is opened with `torch.load(weights_only=True)`, so a file that
would run code when unpickled is refused. Accepted layouts: the published `{"model", "ema", ...}`
dict, a plain state dict, and keys prefixed by `module.` (DDP) or `_orig_mod.` (torch.compile).
"""

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import UnasdiffError
from ..files import atomic_path

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
MAX_LISTED = 5


def read_checkpoint(path) -> dict:
    """The whole checkpoint dict, read safely; errors name the file and the problem in one line."""
    path = Path(path)
    if not path.is_file():
        raise UnasdiffError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnasdiffError(f"refused {path}: not a weights-only checkpoint ({_unpickler_reason(err)}); a "
                            "checkpoint may hold only tensors and plain containers, since other pickled objects "
                            "could run code") from None
    except Exception as err:  # a truncated or non-checkpoint file
        raise UnasdiffError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from None
    if not isinstance(payload, dict):
        raise UnasdiffError(f"{path} holds a {type(payload).__name__}, not a state dict")
    return payload


def read_state_dict(path, weights: str = "ema", payload: dict | None = None) -> dict[str, torch.Tensor]:
    """The network weights stored in `path`; `weights` picks "ema" or "model" of a training checkpoint."""
    payload = read_checkpoint(path) if payload is None else payload
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', not {weights!r}")
    if "model" in payload or "ema" in payload:
        state = payload.get(weights, payload.get("model"))
    else:
        state = payload
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UnasdiffError(f"{path} is not a network state dict (expected tensors under 'model'/'ema' or at "
                            f"top level)")
    return {_strip_prefixes(k): v for k, v in state.items()}


def _unpickler_reason(err: Exception) -> str:
    """The first sentence of what torch's weights-only unpickler objected to (not its advice)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    reason = text.split(marker, 1)[1] if marker in text else text
    reason = " ".join(reason.split())
    reason = reason.split(" Check the documentation")[0]
    return reason.split(". ")[0].rstrip(".") or type(err).__name__


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict load that names the first mismatches (missing, unexpected, wrong shape) in one line."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
            problems.append(f"{len(items)} {what}: {', '.join(items[:MAX_LISTED])}{more}")
    if problems:
        raise UnasdiffError(f"{source} does not fit this network config: {'; '.join(problems)}")
    net.load_state_dict(state)


def atomic_torch_save(obj, path) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def export_prior(run_checkpoint, out, dtype: torch.dtype = torch.float16, weights: str = "ema") -> dict:
    """A training checkpoint (scripts/train_prior.py) reduced to what separation needs: the EMA (or the raw
    "model") weights in `dtype` (buffers as they are), stored as "ema", and the prior config (about a quarter
    of the size in fp16: no optimizer state, one set of weights). Returns what was written besides the weights."""
    payload = read_checkpoint(run_checkpoint)
    carried = payload.get("config")
    if not isinstance(carried, dict) or "prior" not in carried:
        raise UnasdiffError(f"{run_checkpoint} is not a checkpoint of scripts/train_prior.py (it carries no config)")
    from . import build_network  # the package imports this module
    # learned weights in dtype; fitted buffers (a template's variances span 1e-6 .. 5e7, beyond fp16) as they are
    learned = {name for name, _ in build_network(carried["prior"]).named_parameters()}
    weights_read = read_state_dict(run_checkpoint, weights, payload)
    state = {k: v.to(dtype) if k in learned else v for k, v in weights_read.items()}
    info = {"step": int(payload.get("step", 0)), "weights": weights, "trained_by": "scripts/train_prior.py",
            "data": {k: v for k, v in carried.get("data", {}).items() if k != "cache_dir"},
            "train": carried.get("train", {})}
    atomic_torch_save({"ema": state, "config": {"prior": carried["prior"]}, "info": info}, out)
    return info
