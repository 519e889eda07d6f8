"""Where the work runs: device choice and CPU allocator settings."""

import ctypes
import ctypes.util
import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UnasdiffError

log = logging.getLogger(__name__)

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_tuned = False


def pick_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; a named CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UnasdiffError(f"device={name} was asked for but CUDA is not available; use device=cpu")
    return torch.device(name)


def tune_cpu_allocator() -> bool:
    """Keep freed activation memory in the process instead of returning it to the OS after every
    forward pass (glibc only). The network allocates tens of MB per activation; re-faulting those
    pages costs 5-10% of a CPU forward (benchmarks/model_speed.py). Returns whether it applied."""
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return _tuned
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        _tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
                      and libc.mallopt(_M_TOP_PAD, 256 << 20))
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator as it is
        _tuned = False
    return _tuned


@dataclass
class Process:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_processes(device_name: str) -> Process:
    """Join the torchrun process group when launched by torchrun; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Process(device=pick_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return Process(rank, world, device)
