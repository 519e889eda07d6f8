"""Sequential grouping of interchangeable sources: each output keeps one voice from segment to segment.

Under one prior, two talkers are interchangeable (alignment.py), and within one estimate the order wanders:
a short stretch of the first output is the second talker. Grouping reorders the sources segment by
segment (64 ms, say) so that each output keeps one pitch: every segment of every source gets its mean
log-f0 (frames weighted by energy and the square of voicing), and k-means with cannot-link constraints
(Wagstaff et al., 2001: the sources of one segment go to different outputs) picks for every segment the
order that puts each source nearest its output's centroid. Pitch is the cue by which listeners follow one
talker among two (sequential grouping, Bregman, 1990); beside it, with `timbre_weight` > 0, each segment's
mean MFCCs (frames weighted by energy) describe the voice's timbre. Orders change with a short cross-fade.
Where both talkers sound, every source holds some of each and its pitch is the louder talker's; so each
source's features are read from the time-frequency bins it dominates (its STFT weighted by |X|^p / sum over
the group of |X|^p).
"""

import itertools
import math
from dataclasses import dataclass

import torch

PITCH_RANGE_HZ = (70.0, 400.0)
PITCH_FRAME = 1024  # 64 ms at 16 kHz: two periods of the lowest pitch
HOP = 256
DOMINANCE_POWER = 4  # p above: each source's pitch is read mostly from the bins where it is the loudest
MEL_BANDS = 40
MEL_RANGE_HZ = (50.0, 8000.0)  # the upper edge is lowered to the Nyquist frequency at lower rates
CEPSTRA = 12  # MFCCs 1..12: the spectral envelope without its level (coefficient 0)
MEL_FLOOR = 1e-10  # of the group's loudest band: silence does not dominate the log
RESTARTS = 8  # the first from the order as it is, the others from random orders
ITERATIONS = 30


@dataclass(frozen=True)
class SegmentGrouping:
    """Reorders each group of interchangeable sources in every `segment_seconds` segment (see module doc)."""
    segment_seconds: float
    sample_rate: int
    timbre_weight: float = 0.0  # of the MFCCs (split over CEPSTRA coefficients) beside the log-f0's weight of 1
    crossfade: int = 1024  # samples of the linear cross-fade where the order changes

    def __post_init__(self):
        if not self.segment_seconds > 0:
            raise ValueError(f"the grouping segment must be > 0 s, got {self.segment_seconds}")
        if not self.timbre_weight >= 0:
            raise ValueError(f"the timbre weight must be >= 0, got {self.timbre_weight}")
        lowest, highest = 2 * PITCH_RANGE_HZ[1], PITCH_FRAME * PITCH_RANGE_HZ[0]
        if not lowest <= self.sample_rate < highest:  # the pitch lags must fit in a frame
            raise ValueError(f"grouping tracks pitch at sample rates of {lowest:g} to {highest:g} Hz, "
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
        features, weights = segment_features(sources, self.segment, self.sample_rate, self.timbre_weight)
        orders = torch.tensor(list(itertools.permutations(range(len(sources)))), device=sources.device)  # [Q, M]
        choice = constrained_k_means(features, weights, orders)  # [S]
        return apply_orders(sources, orders, choice, self.segment, self.crossfade)


def pitch_frames(x: torch.Tensor) -> torch.Tensor:
    """x [M, L] -> its frames [M, N, PITCH_FRAME] at hop HOP, centred (zero-padded by half a frame)."""
    return torch.nn.functional.pad(x, (PITCH_FRAME // 2, PITCH_FRAME // 2)).unfold(-1, PITCH_FRAME, HOP)


def dominant_parts(x: torch.Tensor) -> torch.Tensor:
    """x [M, L] -> [M, L]: each source's STFT (PITCH_FRAME, HOP) weighted by its share |X|^p / sum |X|^p."""
    window = torch.hann_window(PITCH_FRAME, device=x.device, dtype=x.dtype)
    spectra = torch.stft(x, PITCH_FRAME, HOP, window=window, return_complex=True)  # [M, F, N]
    magnitude = spectra.abs().pow(DOMINANCE_POWER)
    share = magnitude / magnitude.sum(0, keepdim=True).clamp_min(1e-30)
    return torch.istft(spectra * share, PITCH_FRAME, HOP, window=window, length=x.shape[-1])


def log_pitch(frames: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pitch_frames [M, N, PITCH_FRAME] -> log f0 [M, N] and voicing [M, N]: the lag of the largest normalised
    autocorrelation within PITCH_RANGE_HZ and that autocorrelation's value (1: periodic)."""
    window = torch.hann_window(PITCH_FRAME, device=frames.device, dtype=frames.dtype)
    frames = (frames - frames.mean(-1, keepdim=True)) * window
    spectrum = torch.fft.rfft(frames, 2 * PITCH_FRAME)  # zero-padded: the linear, not circular, autocorrelation
    autocorrelation = torch.fft.irfft(spectrum.abs().pow(2), 2 * PITCH_FRAME)[..., :PITCH_FRAME]
    autocorrelation = autocorrelation / (autocorrelation[..., :1] + 1e-12)
    shortest, longest = int(sample_rate / PITCH_RANGE_HZ[1]), int(sample_rate / PITCH_RANGE_HZ[0])
    peak, lag = autocorrelation[..., shortest:longest].max(-1)
    return math.log(sample_rate) - (shortest + lag).to(frames.dtype).log(), peak


def mel_filterbank(sample_rate: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[MEL_BANDS, PITCH_FRAME // 2 + 1]: triangular bands evenly spaced on the mel scale over MEL_RANGE_HZ."""
    def mel(hz):
        return 2595 * math.log10(1 + hz / 700)
    low, high = mel(MEL_RANGE_HZ[0]), mel(min(MEL_RANGE_HZ[1], sample_rate / 2))
    edges = 700 * (10 ** (torch.linspace(low, high, MEL_BANDS + 2, dtype=torch.float64) / 2595) - 1)
    bins = torch.fft.rfftfreq(PITCH_FRAME, 1 / sample_rate, dtype=torch.float64)
    rising = (bins - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    falling = (edges[2:, None] - bins) / (edges[2:, None] - edges[1:-1, None])
    return rising.minimum(falling).clamp_min(0).to(device=device, dtype=dtype)


def cepstra(frames: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """pitch_frames [M, N, PITCH_FRAME] -> MFCCs 1..CEPSTRA [M, N, CEPSTRA] (DCT-II of the log mel energies)."""
    window = torch.hann_window(PITCH_FRAME, device=frames.device, dtype=frames.dtype)
    power = torch.fft.rfft(frames * window).abs().pow(2)
    bands = power @ mel_filterbank(sample_rate, frames.device, frames.dtype).T  # [M, N, MEL_BANDS]
    log_bands = (bands + MEL_FLOOR * bands.amax().clamp_min(1e-30)).log()
    n = torch.arange(MEL_BANDS, device=frames.device, dtype=frames.dtype)
    k = torch.arange(1, CEPSTRA + 1, device=frames.device, dtype=frames.dtype)
    return log_bands @ torch.cos(math.pi * (n[:, None] + 0.5) * k / MEL_BANDS)


def segment_means(values: torch.Tensor, weight: torch.Tensor, owner: torch.Tensor, count: int):
    """Frame values [M, N, D] weighted by [M, N] -> per segment (frame n in segment owner[n]) the standardised
    weighted means [S, M, D] and their weights [S, M]; each dimension standardised over the weighted means."""
    sums = values.new_zeros(len(values), count, values.shape[-1]).index_add_(1, owner, weight[..., None] * values)
    weights = weight.new_zeros(len(weight), count).index_add_(1, owner, weight)  # [M, S]
    means = (sums / weights[..., None].clamp_min(1e-12)).transpose(0, 1)  # [S, M, D]
    weighted = means[weights.T > 0]  # [P, D]
    if len(weighted) > 1:
        means = (means - weighted.mean(0)) / (weighted.std(0) + 1e-6)
    return means, weights.T


def segment_features(x: torch.Tensor, segment: int, sample_rate: int,
                     timbre_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, L] -> the features of every segment [S, M, D] and their weights [S, M, D], read from each source's
    dominant part (dominant_parts): the standardised mean log-f0, weighted by the sum over the segment's frames
    of energy (relative to the source's loudest frame) times voicing squared; with timbre_weight > 0 also the
    standardised mean MFCCs 1..CEPSTRA, frames weighted by energy, each weighted timbre_weight / CEPSTRA."""
    frames = pitch_frames(dominant_parts(x))
    pitch, voicing = log_pitch(frames, sample_rate)
    energy = frames.pow(2).sum(-1)
    energy = energy / energy.amax(-1, keepdim=True).clamp_min(1e-30)  # [M, N]
    count = math.ceil(x.shape[-1] / segment)
    owner = (torch.arange(pitch.shape[1], device=x.device) * HOP // segment).clamp_max(count - 1)
    features, weights = segment_means(pitch[..., None], energy * voicing.clamp_min(0).pow(2), owner, count)
    weights = weights[..., None]
    if timbre_weight > 0:
        timbre, timbre_weights = segment_means(cepstra(frames, sample_rate), energy, owner, count)
        features = torch.cat([features, timbre], -1)
        weights = torch.cat([weights, (timbre_weight / CEPSTRA * timbre_weights)[..., None].expand_as(timbre)], -1)
    return features, weights


def constrained_k_means(features: torch.Tensor, weights: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """For segment features [S, M, D] with weights [S, M, D] and the candidate orders [Q, M], the order index per
    segment [S] that minimises the weighted within-output spread, by alternating centroids and orders from
    RESTARTS starts (deterministic: the generator is seeded here)."""
    generator = torch.Generator().manual_seed(0)
    ordered_features = features[:, orders]  # [S, Q, M, D]: output j of order q is source orders[q, j]
    ordered_weights = weights[:, orders]  # [S, Q, M, D]
    best_cost, best = math.inf, None
    for restart in range(RESTARTS):
        choice = (torch.zeros(len(features), dtype=torch.long) if restart == 0
                  else torch.randint(len(orders), (len(features),), generator=generator)).to(features.device)
        for _ in range(ITERATIONS):
            chosen_features = ordered_features[torch.arange(len(features)), choice]  # [S, M, D]
            chosen_weights = ordered_weights[torch.arange(len(features)), choice]  # [S, M, D]
            centroids = (chosen_weights * chosen_features).sum(0) / chosen_weights.sum(0).clamp_min(1e-12)  # [M, D]
            cost = (ordered_weights * (ordered_features - centroids).pow(2)).sum((-2, -1))  # [S, Q]
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
