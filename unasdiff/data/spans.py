"""Active (non-silent) spans of a clip, defined as the reference's FSDKaggle2018 preprocessing does.

At the analysis rate (44.1 kHz), frame energy is the SUM of squares over 50 ms windows every 25 ms
(no padding; a frame count of (N - window) // hop + 1). A span opens at the start time of an active
frame (energy > 1e-4) and closes at the end of the first inactive frame after it (so it includes
one frame of decay), or at the end of the last frame. Times are in seconds, rounded to 1 ms.
A crop is drawn from a span chosen with probability proportional to its length.
"""

from dataclasses import dataclass

import numpy as np

from ..audio import resample


@dataclass(frozen=True)
class SpanSettings:
    analysis_rate: int = 44100
    window_seconds: float = 0.05
    hop_seconds: float = 0.025
    threshold: float = 1e-4


def frame_energy(x: np.ndarray, sample_rate: int, settings: SpanSettings = SpanSettings()) -> np.ndarray:
    window, hop = int(settings.window_seconds * sample_rate), int(settings.hop_seconds * sample_rate)
    if len(x) < window:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), window)[::hop]
    return (frames**2).sum(axis=1)


def active_spans(x: np.ndarray, sample_rate: int, settings: SpanSettings = SpanSettings()) -> list[tuple[float, float]]:
    """Spans (start, end) in seconds of the active parts of x [N] at `sample_rate`."""
    x = resample(np.asarray(x, dtype=np.float32), sample_rate, settings.analysis_rate)
    energy = frame_energy(x, settings.analysis_rate, settings)
    hop, window = settings.hop_seconds, settings.window_seconds
    spans, start = [], None
    for i, e in enumerate(energy):
        if e > settings.threshold:
            if start is None:
                start = i * hop
        elif start is not None:
            spans.append((round(start, 3), round(i * hop + window - 1e-6, 3)))
            start = None
    if start is not None:
        spans.append((round(start, 3), round((len(energy) - 1) * hop + window, 3)))
    return spans


def span_probabilities(spans: list[tuple[float, float]]) -> list[float]:
    """Proportional to span length."""
    lengths = np.array([end - start for start, end in spans], dtype=np.float64)
    return (lengths / lengths.sum()).tolist() if len(spans) and lengths.sum() > 0 else []


def crop_start(clip_length: int, length: int, spans, probs, sample_rate: int, rng: np.random.Generator) -> int:
    """Start of a `length`-sample window of the clip that contains a point drawn uniformly from a span
    chosen with probability `probs` (proportional to span length)."""
    start_s, end_s = spans[int(rng.choice(len(spans), p=probs))]
    point = min(int(rng.uniform(start_s, end_s) * sample_rate), clip_length - 1)
    return int(np.clip(point - rng.integers(0, length), 0, clip_length - length))


def crop_spans(audio: np.ndarray, sample_rate: int, settings: SpanSettings = SpanSettings()):
    """(spans, probabilities) to crop around: the active spans, or the whole clip when it has none."""
    spans = active_spans(audio, sample_rate, settings) or [(0.0, len(audio) / sample_rate)]
    return spans, span_probabilities(spans)


def active_crop(audio: np.ndarray, length: int, sample_rate: int, rng: np.random.Generator, spans=None,
                probs=None) -> tuple[int, np.ndarray]:
    """(start, crop): the `length`-sample window of audio [N >= length] around a point drawn from a span
    chosen by length (`crop_spans` unless the caller has them). Callers place clips shorter than `length`
    themselves: training pads them at a random offset, test mixtures place them on their canvas, the
    denoising benchmark pads them at the end."""
    if spans is None:
        spans, probs = crop_spans(audio, sample_rate)
    start = crop_start(len(audio), length, spans, probs or span_probabilities(spans), sample_rate, rng)
    return start, audio[start:start + length]


def span_manifest(clips, root, names, progress: bool = True) -> tuple[list[dict], list[str]]:
    """Manifest entries (the reference's JSON format; paths relative to `root`) for clips with an
    active span, and the relative paths of the clips that have none."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from ..audio import read_audio, to_mono

    entries, silent = [], []
    for clip in tqdm(clips, desc="active spans", unit="clip", disable=not progress):
        data, info = read_audio(clip.path)
        spans = active_spans(to_mono(data), info.sample_rate)
        relative = str(Path(clip.path).relative_to(root))
        if not spans:
            silent.append(relative)
            continue
        entries.append({"wave_path": relative, "wave_label": names[clip.label], "spans": [list(s) for s in spans],
                        "span_probs": span_probabilities(spans),
                        "wave_length": round(info.frames / info.sample_rate, 3)})
    return entries, silent
