"""Active (non-silent) spans of a clip, the way the FSDKaggle2018 preprocessing defines them.

Frame energy is the mean square over 50 ms windows every 25 ms; a frame is active when its energy
exceeds 1e-4; consecutive active frames form a span [start of first frame, start of last frame]
in seconds. A crop is drawn from a span chosen with probability proportional to its length.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpanSettings:
    window_seconds: float = 0.05
    hop_seconds: float = 0.025
    threshold: float = 1e-4


def active_spans(x: np.ndarray, sample_rate: int, settings: SpanSettings = SpanSettings()) -> list[tuple[float, float]]:
    """Spans (start, end) in seconds of the frames of x [N] whose mean square exceeds the threshold."""
    window = max(1, round(settings.window_seconds * sample_rate))
    hop = max(1, round(settings.hop_seconds * sample_rate))
    if len(x) < window:
        x = np.pad(x, (0, window - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, window)[::hop]
    active = (frames.astype(np.float64) ** 2).mean(axis=1) > settings.threshold
    spans, start = [], None
    for i, on in enumerate(np.append(active, False)):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append((round(start * hop / sample_rate, 6), round((i - 1) * hop / sample_rate, 6)))
            start = None
    return spans


def span_probabilities(spans: list[tuple[float, float]]) -> list[float]:
    """Proportional to span length (a single-frame span, of length 0, counts as one hop)."""
    lengths = np.array([max(end - start, 1e-9) for start, end in spans])
    return (lengths / lengths.sum()).tolist() if len(spans) else []
