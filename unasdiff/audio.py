"""Audio in and out: soundfile for I/O, soxr for resampling, levels in dBFS.

Everything that reads audio goes through `load_audio`, which checks the file once and says what it
changed (down-mix, resampling) through the module logger.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from .errors import UnasdiffError
from .files import atomic_path

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")
SUBTYPES = {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}
# Below this RMS (about -200 dBFS) a signal is treated as digital silence.
SILENCE_RMS = 1e-10


@dataclass
class AudioInfo:
    """What was read and what was done to it."""

    path: str
    sample_rate: int  # of the file
    channels: int
    frames: int
    subtype: str


def read_audio(path) -> tuple[np.ndarray, AudioInfo]:
    """All channels of a file as float32 [C, N] at its own rate; refuses what cannot be used."""
    path = Path(path)
    if not path.exists():
        raise UnasdiffError(f"audio file not found: {path}")
    if path.is_dir():
        raise UnasdiffError(f"{path} is a folder, not an audio file")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        subtype = sf.info(path).subtype
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise UnasdiffError(f"cannot read {path} as audio ({err}); use wav, flac, ogg or mp3") from None
    if data.shape[0] == 0:
        raise UnasdiffError(f"{path} contains no samples")
    if not np.isfinite(data).all():
        raise UnasdiffError(f"{path} contains NaN or infinite samples; repair or re-export the file")
    info = AudioInfo(str(path), int(rate), data.shape[1], data.shape[0], subtype)
    return np.ascontiguousarray(data.T), info


def to_mono(data: np.ndarray) -> np.ndarray:
    """[C, N] -> [N] by averaging the channels."""
    return data.mean(axis=0) if data.shape[0] > 1 else data[0]


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling along the last axis (soxr, very high quality)."""
    if rate_in == rate_out:
        return x
    return soxr.resample(x.T, rate_in, rate_out, quality="VHQ").T.astype(np.float32, copy=False)


def load_audio(path, sample_rate: int) -> tuple[torch.Tensor, AudioInfo]:
    """A mono float32 waveform [N] at `sample_rate`, logging any down-mix or resampling."""
    data, info = read_audio(path)
    if info.channels > 1:
        log.info("%s: down-mixed %d channels to mono", path, info.channels)
    mono = to_mono(data)
    if info.sample_rate != sample_rate:
        log.info("%s: resampled %d Hz -> %d Hz", path, info.sample_rate, sample_rate)
        mono = resample(mono, info.sample_rate, sample_rate)
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)), info


def write_audio(path, x, sample_rate: int, subtype: str = "pcm16") -> Path:
    """Write a mono [N] or multichannel [C, N] waveform atomically (temporary file, then rename).

    16-bit output is clipped to [-1, 1] (and says so); "float" keeps values as they are.
    """
    path = Path(path)
    data = x.detach().cpu().float().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float32)
    if not np.isfinite(data).all():
        raise UnasdiffError(f"refusing to write {path}: the signal has NaN or infinite samples")
    if subtype not in SUBTYPES:
        raise ValueError(f"subtype must be one of {', '.join(SUBTYPES)}, not {subtype!r}")
    if subtype != "float" and np.abs(data).max(initial=0.0) > 1.0:
        log.warning("%s: peaks above full scale were clipped (write with subtype=float to keep them)", path)
        data = np.clip(data, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(tmp, data.T, sample_rate, subtype=SUBTYPES[subtype], format="WAV")
    return path


def rms(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over the last axis."""
    return x.pow(2).mean(dim=-1).sqrt()


def rms_dbfs(x: torch.Tensor) -> torch.Tensor:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS); -inf for silence."""
    return 20 * torch.log10(rms(x))


def peak_dbfs(x: torch.Tensor) -> torch.Tensor:
    return 20 * torch.log10(x.abs().amax(dim=-1))


def is_silent(x: torch.Tensor) -> torch.Tensor:
    return rms(x) < SILENCE_RMS


def gain_to_rms(x: torch.Tensor, target_dbfs) -> torch.Tensor:
    """The factor that brings x [..., N] to the target RMS level (1 for silent signals)."""
    target = 10.0 ** (torch.as_tensor(target_dbfs, dtype=x.dtype, device=x.device) / 20)
    level = rms(x)
    return torch.where(level < SILENCE_RMS, torch.ones_like(level), target / level.clamp_min(SILENCE_RMS))
