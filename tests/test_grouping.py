"""Sequential grouping of interchangeable sources (unasdiff/separation/grouping.py)."""

import math

import pytest
import torch

from unasdiff.metrics import best_permutation, permute_sources, si_sdr
from unasdiff.pipeline import Separator
from unasdiff.separation.grouping import SegmentGrouping, dominant_parts, log_pitch, pitch_frames

RATE = 16000


def voice(f0: float, tilt: float, seconds: float, phase: float) -> torch.Tensor:
    """A harmonic voice: partials of f0 up to 4 kHz falling `tilt` dB per octave, in 4 Hz syllables."""
    t = torch.arange(int(seconds * RATE)) / RATE
    harmonics = torch.arange(1, int(4000 / f0) + 1)
    amplitude = 10 ** (-tilt * torch.log2(harmonics.float()) / 20)
    wave = (amplitude[:, None] * torch.sin(2 * math.pi * f0 * harmonics[:, None] * t)).sum(0)
    syllables = 0.55 + 0.45 * torch.sin(2 * math.pi * 4 * t + phase)
    return 0.1 * wave * syllables / wave.pow(2).mean().sqrt()


@pytest.fixture(scope="module")
def voices():
    return torch.stack([voice(110, 9.0, 3.0, 0.0), voice(235, 2.0, 3.0, 1.3)])  # [2, L]


def scrambled(voices: torch.Tensor, segment: int, swaps: list[int]) -> torch.Tensor:
    """The two voices with their order swapped in the segments listed (what one prior's estimate does)."""
    out = voices.clone()
    for s in swaps:
        out[:, s * segment:(s + 1) * segment] = voices.flip(0)[:, s * segment:(s + 1) * segment]
    return out


def away_from_boundaries(length: int, grouping: SegmentGrouping) -> torch.Tensor:
    """The samples that no cross-fade at a segment boundary reaches [L]."""
    position = torch.arange(length) % grouping.segment
    return (position >= grouping.crossfade) & (position < grouping.segment - grouping.crossfade)


def test_grouping_puts_each_voice_back_in_one_output(voices):
    grouping = SegmentGrouping(0.25, RATE)
    mixed = scrambled(voices, grouping.segment, [1, 2, 5, 8, 9, 10])
    assert max(si_sdr(mixed[k], voices[k]).item() for k in range(2)) < 5  # each output holds both voices
    out = grouping(mixed[None], [[0, 1]])[0]
    out = permute_sources(out[None], best_permutation(out[None], voices[None]))[0]
    assert min(si_sdr(out[k], voices[k]).item() for k in range(2)) > 10  # the cross-fades aside, exact:
    inside = away_from_boundaries(voices.shape[-1], grouping)
    assert torch.allclose(out[:, inside], voices[:, inside], atol=1e-6)


@pytest.fixture(scope="module")
def leaky():
    """Two outputs that each hold both voices (what overlapped talkers give): 60 % of its own voice and 40 % of
    the other's, the first voice twice as loud, so that it is the louder in the second output too."""
    loud, quiet = 2 * voice(120, 9.0, 3.0, 0.0), voice(195, 2.0, 3.0, 1.3)
    return torch.stack([0.6 * loud + 0.4 * quiet, 0.4 * loud + 0.6 * quiet])


def test_each_source_pitch_is_read_where_it_dominates(leaky):
    hz = lambda x: log_pitch(pitch_frames(x), RATE)[0].median(-1).values.exp()  # noqa: E731
    assert torch.allclose(hz(leaky), torch.tensor([120.0, 120.0]), rtol=0.02)  # both: the louder voice's
    assert torch.allclose(hz(dominant_parts(leaky)), torch.tensor([120.0, 195.0]), rtol=0.02)


def test_grouping_puts_leaky_voices_back_in_their_outputs(leaky):
    grouping = SegmentGrouping(0.25, RATE)
    mixed = scrambled(leaky, grouping.segment, [1, 2, 5, 8, 9, 10])
    out = grouping(mixed[None], [[0, 1]])[0]
    out = permute_sources(out[None], best_permutation(out[None], leaky[None]))[0]
    inside = away_from_boundaries(leaky.shape[-1], grouping)
    assert torch.allclose(out[:, inside], leaky[:, inside], atol=1e-6)


def test_timbre_tells_apart_two_voices_of_one_pitch():
    """Voices of the same f0, one dark and one bright: pitch alone cannot reorder them, their MFCCs can."""
    same_pitch = torch.stack([voice(160, 12.0, 3.0, 0.0), voice(160, 1.0, 3.0, 1.3)])
    pitch_only, with_timbre = SegmentGrouping(0.25, RATE), SegmentGrouping(0.25, RATE, timbre_weight=0.5)
    mixed = scrambled(same_pitch, pitch_only.segment, [1, 2, 5, 8, 9, 10])
    for grouping, regrouped in [(pitch_only, False), (with_timbre, True)]:
        out = grouping(mixed[None], [[0, 1]])[0]
        out = permute_sources(out[None], best_permutation(out[None], same_pitch[None]))[0]
        assert (min(si_sdr(out[k], same_pitch[k]).item() for k in range(2)) > 10) == regrouped
    inside = away_from_boundaries(same_pitch.shape[-1], with_timbre)
    assert torch.allclose(out[:, inside], same_pitch[:, inside], atol=1e-6)


def test_grouping_leaves_sources_that_are_already_one_voice_each_as_they_are(voices):
    grouping = SegmentGrouping(0.25, RATE)
    assert torch.equal(grouping(voices[None], [[0, 1]])[0], voices)


def test_grouping_orders_three_interchangeable_sources(voices):
    third = voice(170, 5.0, 3.0, 2.6)
    sources = torch.cat([voices, third[None]])
    grouping = SegmentGrouping(0.25, RATE)
    mixed = sources.clone()
    n = grouping.segment
    mixed[:, 3 * n:4 * n] = sources[[2, 0, 1], 3 * n:4 * n]
    mixed[:, 6 * n:7 * n] = sources[[1, 2, 0], 6 * n:7 * n]
    out = grouping(mixed[None], [[0, 1, 2]])[0]
    out = permute_sources(out[None], best_permutation(out[None], sources[None]))[0]
    inside = away_from_boundaries(sources.shape[-1], grouping)
    assert torch.allclose(out[:, inside], sources[:, inside], atol=1e-6)


def test_grouping_touches_only_the_group_and_keeps_the_length(voices):
    other = torch.randn(voices.shape[-1] - 100)
    three = torch.stack([voices[0, :-100], other, voices[1, :-100]])  # an odd length, the group at 0 and 2
    mixed = three.clone()
    mixed[[0, 2], 4000:12000] = three[[2, 0], 4000:12000]
    out = SegmentGrouping(0.25, RATE)(mixed[None], [[0, 2]])[0]
    assert out.shape == three.shape and torch.equal(out[1], other)


def test_speaker_grouping_acts_on_two_talkers_and_on_nothing_else(voices):
    """Two speech sources are reordered; speech + sound (not interchangeable) and two sounds (interchangeable,
    but pitch does not tell sounds apart) come out as without grouping."""
    mixture = voices.sum(0).numpy()

    def with_and_without(task):
        base = ["preset=bundled", f"task={task}", "labels=[null,null]", "sampler.steps=10", "sampler.n_samples=1",
                "progress=false"]
        grouped = Separator.from_config(base)
        assert grouped.grouping is not None
        plain = Separator.from_config([*base, "sampler.speaker_grouping=null"])
        return grouped.separate_array(mixture, RATE).sources, plain.separate_array(mixture, RATE).sources

    assert not torch.equal(*with_and_without("speech_speech"))
    assert torch.equal(*with_and_without("speech_sound"))
    assert torch.equal(*with_and_without("sound_sound"))


@pytest.mark.parametrize("seconds, rate, timbre", [(0.0, RATE, 0.0), (-0.5, RATE, 0.0), (0.25, 400, 0.0),
                                                   (0.25, 96000, 0.0), (0.25, RATE, -1.0)])
def test_grouping_refuses_a_segment_rate_or_weight_it_cannot_work_with(seconds, rate, timbre):
    with pytest.raises(ValueError, match="grouping tracks pitch at sample rates|must be > 0|must be >= 0"):
        SegmentGrouping(seconds, rate, timbre_weight=timbre)
