"""Sequential grouping of interchangeable sources: each output keeps one voice from segment to segment.

Under one prior, two talkers are interchangeable (alignment.py), and within one estimate the order wanders:
a short stretch of the first output is the second talker. Grouping reorders the sources segment by
segment (a quarter of a second, say) so that each output's segments are alike in timbre and pitch: every
segment of every source gets a feature vector (its energy-weighted mean MFCC and log-f0), and k-means with
cannot-link constraints (Wagstaff et al., 2001: the sources of one segment go to different outputs) picks
for every segment the order that puts each source nearest its output's centroid. These are the cues of
speaker clustering in diarization and of sequential grouping in auditory scene analysis (Bregman, 1990),
applied to the separated estimates; orders change with a short cross-fade.
"""

import itertools
import math
from dataclasses import dataclass

import torch

CEPSTRA = 12  # MFCC 1..12 (c0, the level, is the weight instead)
MEL_BANDS = 40
MEL_RANGE_HZ = (60.0, 7600.0)
PITCH_RANGE_HZ = (70.0, 400.0)
FRAME = 512  # 32 ms at 16 kHz; the pitch uses frames twice as long
RESTARTS = 8  # the first from the order as it is, the others from random orders
ITERATIONS = 30


@dataclass(frozen=True)
class SegmentGrouping:
    """Reorders each group of interchangeable sources in every `segment_seconds` segment (see module doc)."""
    segment_seconds: float
    sample_rate: int
    crossfade: int = 256  # samples of the linear cross-fade where the order changes

    def __post_init__(self):
        if not self.segment_seconds > 0:
            raise ValueError(f"the grouping segment must be > 0 s, got {self.segment_seconds}")
        if self.sample_rate < 2 * MEL_RANGE_HZ[1]:
            raise ValueError(f"grouping needs a sample rate of at least {2 * MEL_RANGE_HZ[1]:g} Hz, "
                             f"got {self.sample_rate}")

    @property
    def segment(self) -> int:
        return max(1, round(self.segment_seconds * self.sample_rate))

    def __call__(self, estimate: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
        """estimate [B, K, L] -> the same with each group's sources reordered per segment."""
        out = estimate.clone()
        for group in groups:
            index = torch.tensor(group, device=estimate.device)
            for b in range(estimate.shape[0]):
                out[b, index] = self.regroup(estimate[b, index])
        return out

    def regroup(self, sources: torch.Tensor) -> torch.Tensor:
        """sources [M, L] of one group -> [M, L], each segment's sources in the order the clustering picks."""
        features, weights = segment_features(sources, self.segment, self.sample_rate)
        orders = torch.tensor(list(itertools.permutations(range(len(sources)))), device=sources.device)  # [Q, M]
        choice = constrained_k_means(features, weights, orders)  # [S]
        return apply_orders(sources, orders, choice, self.segment, self.crossfade)


def mel_filterbank(n_fft: int, sample_rate: int, device=None) -> torch.Tensor:
    """Triangular mel filters [MEL_BANDS, n_fft // 2 + 1] over MEL_RANGE_HZ."""
    def mel(f):
        return 2595 * math.log10(1 + f / 700)
    points = torch.linspace(mel(MEL_RANGE_HZ[0]), mel(MEL_RANGE_HZ[1]), MEL_BANDS + 2, device=device)
    edges = 700 * (10 ** (points / 2595) - 1)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, device=device)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return torch.minimum((freqs - low) / (centre - low), (high - freqs) / (high - centre)).clamp_min(0)


def frame_features(x: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, L] -> per frame (hop FRAME / 2) features [M, N, CEPSTRA + 1] (MFCC, log f0) and log energy [M, N]."""
    window = torch.hann_window(FRAME, device=x.device, dtype=x.dtype)
    power = torch.stft(x, FRAME, FRAME // 2, window=window, return_complex=True).abs().pow(2).transpose(1, 2)
    log_mel = (power @ mel_filterbank(FRAME, sample_rate, x.device).T + 1e-10).log()  # [M, N, bands]
    bands = torch.arange(MEL_BANDS, device=x.device, dtype=x.dtype)
    dct = torch.cos(math.pi / MEL_BANDS * (bands[None] + 0.5) * torch.arange(1, CEPSTRA + 1, device=x.device)[:, None])
    cepstra = log_mel @ dct.T
    pitch = log_pitch(x, sample_rate)[:, :cepstra.shape[1]]
    return torch.cat([cepstra, pitch[..., None]], dim=-1), (power.sum(-1) + 1e-12).log()


def log_pitch(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """log f0 per frame [M, N]: the lag of the largest normalised autocorrelation within PITCH_RANGE_HZ,
    over frames of 2 x FRAME centred as in frame_features."""
    length = 2 * FRAME
    padded = torch.nn.functional.pad(x, (length // 2, length // 2))
    frames = padded.unfold(-1, length, FRAME // 2)  # [M, N, length]
    frames = (frames - frames.mean(-1, keepdim=True)) * torch.hann_window(length, device=x.device, dtype=x.dtype)
    spectrum = torch.fft.rfft(frames, 2 * length)
    autocorrelation = torch.fft.irfft(spectrum.abs().pow(2), 2 * length)[..., :length]
    autocorrelation = autocorrelation / (autocorrelation[..., :1] + 1e-12)
    shortest, longest = int(sample_rate / PITCH_RANGE_HZ[1]), int(sample_rate / PITCH_RANGE_HZ[0])
    lag = shortest + autocorrelation[..., shortest:longest].argmax(-1)
    return math.log(sample_rate) - lag.to(x.dtype).log()


def segment_features(x: torch.Tensor, segment: int, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, L] -> standardised energy-weighted mean features per segment [S, M, D] and the weights [S, M]
    (each segment's share of its source's loudest frame's energy, summed over the segment's frames)."""
    features, log_energy = frame_features(x, sample_rate)  # [M, N, D], [M, N]
    weight = (log_energy - log_energy.amax(-1, keepdim=True)).exp()
    count = math.ceil(x.shape[-1] / segment)
    owner = (torch.arange(features.shape[1], device=x.device) * (FRAME // 2) // segment).clamp_max(count - 1)
    one_hot = torch.nn.functional.one_hot(owner, count).to(x.dtype)  # [N, S]
    weights = weight @ one_hot  # [M, S]
    means = torch.einsum("mn,mnd,ns->smd", weight, features, one_hot) / weights.T.clamp_min(1e-12)[..., None]
    flat = means[weights.T > 0]
    if len(flat) > 1:
        means = (means - flat.mean(0)) / (flat.std(0) + 1e-6)
    return means, weights.T


def constrained_k_means(features: torch.Tensor, weights: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """For segment features [S, M, D] with weights [S, M] and the candidate orders [Q, M], the order index per
    segment [S] that minimises the weighted within-output spread, by alternating centroids and orders from
    RESTARTS starts (deterministic: the generator is seeded here)."""
    generator = torch.Generator().manual_seed(0)
    ordered_features = features[:, orders]  # [S, Q, M, D]: output j of order q is source orders[q, j]
    ordered_weights = weights[:, orders]  # [S, Q, M]
    best_cost, best = math.inf, None
    for restart in range(RESTARTS):
        choice = (torch.zeros(len(features), dtype=torch.long) if restart == 0
                  else torch.randint(len(orders), (len(features),), generator=generator)).to(features.device)
        for _ in range(ITERATIONS):
            chosen_features = ordered_features[torch.arange(len(features)), choice]  # [S, M, D]
            chosen_weights = ordered_weights[torch.arange(len(features)), choice]  # [S, M]
            totals = chosen_weights.sum(0).clamp_min(1e-12)[:, None]
            centroids = (chosen_weights[..., None] * chosen_features).sum(0) / totals  # [M, D]
            cost = (ordered_weights * (ordered_features - centroids).pow(2).sum(-1)).sum(-1)  # [S, Q]
            new_choice = cost.argmin(-1)
            if torch.equal(new_choice, choice):
                break
            choice = new_choice
        total = cost.gather(1, choice[:, None]).sum().item()
        if total < best_cost - 1e-9:
            best_cost, best = total, choice
    return best


def apply_orders(sources: torch.Tensor, orders: torch.Tensor, choice: torch.Tensor, segment: int,
                 crossfade: int) -> torch.Tensor:
    """sources [M, L]; output j of segment s is source orders[choice[s], j], cross-faded over `crossfade` samples."""
    length = sources.shape[-1]
    mask = torch.nn.functional.one_hot(choice, len(orders)).to(sources.dtype).repeat_interleave(segment, 0)[:length]
    if crossfade > 1:  # a moving average of the one-hot orders: rows still sum to one
        padded = torch.nn.functional.pad(mask.T[:, None], (crossfade // 2, crossfade - 1 - crossfade // 2),
                                         mode="replicate")
        box = torch.full((1, 1, crossfade), 1 / crossfade, dtype=sources.dtype, device=sources.device)
        mask = torch.nn.functional.conv1d(padded, box)[:, 0].T
    reordered = sources[orders]  # [Q, M, L]
    return torch.einsum("lq,qml->ml", mask, reordered)
