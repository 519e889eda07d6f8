"""Training examples: random crops of clean single-source audio at the priors' rate and level.

Every random choice (which clip, which span, where to crop, the level) is a function of the item's
position in an endless stream of shuffled epochs and the seed. So a run resumed at step s, or split
over N processes, sees exactly the examples an uninterrupted single-process run would.
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..errors import UnasdiffError
from ..files import atomic_path
from .corpora import Clip
from .spans import SpanSettings, active_crop, crop_spans

log = logging.getLogger(__name__)


class ResampledCache:
    """Mono audio at the model rate, resampled once and kept as .npy files (atomic writes)."""

    def __init__(self, sample_rate: int, folder: str | Path | None):
        self.sample_rate = sample_rate
        self.folder = Path(folder).expanduser() if folder else None

    def _key(self, path: Path) -> str:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.sample_rate}"
        return hashlib.sha1(key.encode()).hexdigest()

    def load(self, path: Path) -> np.ndarray:
        if self.folder is None:
            return load_audio(path, self.sample_rate)[0].numpy()
        cached = self.folder / f"{self._key(path)}.npy"
        if cached.exists():
            return np.load(cached)
        audio = load_audio(path, self.sample_rate)[0].numpy()
        with atomic_path(cached) as tmp, open(tmp, "wb") as f:
            np.save(f, audio)
        return audio


class CropStream(torch.utils.data.Dataset):
    """Item p of an endless stream: epoch p // N visits the clips in a seeded random order.

    Returns (waveform [L] float32, label (-1 for none), valid, position). A clip that cannot be read
    gives a silent example with valid=False (the training step leaves it out and counts it)."""

    def __init__(self, clips: list[Clip], sample_rate: int = 16000, seconds: float = 4.0,
                 level_dbfs: tuple[float, float] = (-25.0, -20.0), cache_dir=None, seed: int = 0,
                 spans: SpanSettings = SpanSettings()):
        if not clips:
            raise UnasdiffError("no training clips")
        self.clips, self.seed, self.span_settings = clips, seed, spans
        self.length = int(round(seconds * sample_rate))
        self.level_dbfs = tuple(level_dbfs)
        self.cache = ResampledCache(sample_rate, cache_dir)
        self.sample_rate = sample_rate
        self._spans: dict[int, tuple[list, list]] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def clip_index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.clips))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.clips))
        return int(order[offset])

    def __getitem__(self, position: int):
        index = self.clip_index(position)
        clip = self.clips[index]
        rng = np.random.default_rng([self.seed, position, 1])
        try:
            audio = self.cache.load(clip.path)
        except (UnasdiffError, OSError) as err:
            log.warning("skipped a training clip: %s", err)
            return torch.zeros(self.length), -1 if clip.label is None else clip.label, False, position
        crop = self.crop(audio, index, rng)
        level = rng.uniform(*self.level_dbfs)
        rms = float(np.sqrt(np.mean(crop.astype(np.float64) ** 2)))
        if rms > 0:
            crop = crop * (10 ** (level / 20) / rms)
        return torch.from_numpy(crop.astype(np.float32)), -1 if clip.label is None else clip.label, True, position

    def crop(self, audio: np.ndarray, index: int, rng: np.random.Generator) -> np.ndarray:
        """A window of self.length samples containing a point drawn from an active span (by length);
        shorter clips are placed at a random offset in silence."""
        n = len(audio)
        if n <= self.length:
            out = np.zeros(self.length, dtype=np.float32)
            start = int(rng.integers(0, self.length - n + 1))
            out[start:start + n] = audio
            return out
        if index not in self._spans:  # spans of a clip are found once per worker
            self._spans[index] = crop_spans(audio, self.sample_rate, self.span_settings)
        return active_crop(audio, self.length, self.sample_rate, rng, *self._spans[index])[1]


class StreamBatches(torch.utils.data.Sampler):
    """Batches of stream positions from `first_step` on: global batch s holds positions
    [s*G, (s+1)*G); process `rank` of `world` takes every world-th of them."""

    def __init__(self, global_batch: int, first_step: int = 0, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise UnasdiffError(f"batch size {global_batch} is not divisible by the {world} processes")
        self.global_batch, self.first_step, self.rank, self.world = global_batch, first_step, rank, world

    def __iter__(self):
        step = self.first_step
        while True:
            start = step * self.global_batch
            yield list(range(start + self.rank, start + self.global_batch, self.world))
            step += 1
