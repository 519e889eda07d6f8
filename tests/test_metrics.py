import math

import fast_bss_eval
import pytest
import torch

from unasdiff.metrics import (
    best_permutation,
    leakage,
    permute_sources,
    sdr,
    si_sdr,
    si_sdr_improvement,
    swap_share,
)


@pytest.fixture
def signals():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 2, 8000, generator=g)
    filtered = torch.nn.functional.conv1d(ref.reshape(6, 1, -1), torch.randn(1, 1, 7, generator=g), padding=3)
    est = 0.5 * filtered.reshape(3, 2, -1) + 0.3 * torch.randn(3, 2, 8000, generator=g) + 0.2 * ref.flip(1) + 0.1
    return ref, est


def test_si_sdr_matches_fast_bss_eval(signals):
    ref, est = signals
    expected = fast_bss_eval.si_sdr(ref, est, zero_mean=True)
    assert torch.allclose(si_sdr(est, ref), expected.float(), atol=1e-3)


def test_sdr_matches_a_least_squares_projection_on_delayed_references():
    """BSS-eval SDR computed the slow, obvious way: regress the estimate on `taps` delayed copies of its reference."""
    g = torch.Generator().manual_seed(4)
    taps, n = 16, 3000
    ref = torch.randn(2, n, generator=g, dtype=torch.float64)
    kernel = torch.randn(1, 1, 5, generator=g, dtype=torch.float64)
    est = torch.nn.functional.conv1d(ref[:, None], kernel, padding=4)[:, 0, :n] + 0.4 * torch.randn(2, n, generator=g,
                                                                                                   dtype=torch.float64)
    expected = []
    for r, e in zip(ref, est):
        # BSS-eval's full convolution: the delayed copies and the (zero-padded) estimate run taps - 1 samples on
        delayed = torch.stack([torch.nn.functional.pad(r, (d, taps - 1 - d)) for d in range(taps)], dim=1)
        e = torch.nn.functional.pad(e, (0, taps - 1))
        target = delayed @ torch.linalg.lstsq(delayed, e[:, None]).solution[:, 0]
        expected.append(10 * torch.log10(target.pow(2).sum() / (e - target).pow(2).sum()))
    assert torch.allclose(sdr(est, ref, filter_length=taps), torch.stack(expected).float(), atol=0.01)


def test_known_cases(signals):
    ref, est = signals
    assert torch.allclose(si_sdr(3.7 * est - 2.0, ref), si_sdr(est, ref), atol=1e-4)  # scale and offset invariant
    assert (si_sdr(ref, ref) > 100).all()
    assert (sdr(ref, ref) > 40).all()
    mix = ref.sum(1)
    # the mixture as an estimate has zero improvement; a perfect one has a large one
    assert torch.allclose(si_sdr_improvement(mix[:, None].expand_as(ref), ref, mix), torch.zeros(3, 2), atol=1e-5)
    assert (si_sdr_improvement(ref, ref, mix) > 50).all()
    # uncorrelated noise: about -10 log10(N / 1) for equal power => around 0 dB relative to itself
    noise = torch.randn(8000, generator=torch.Generator().manual_seed(5))
    assert si_sdr(noise, ref[0, 0]).item() < -15


def test_permutation_recovery():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(4, 3, 4000, generator=g)
    perms = torch.tensor([[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]])
    shuffled = permute_sources(ref, perms) + 0.1 * torch.randn(4, 3, 4000, generator=g)
    found = best_permutation(shuffled, ref)
    assert torch.allclose(permute_sources(shuffled, found), ref, atol=0.5)
    assert torch.equal(permute_sources(torch.arange(3.0).expand(4, 3)[..., None], found)[..., 0].long(),
                       torch.argsort(perms, dim=-1))


def tones(*hz, seconds=1.0, rate=16000):
    t = torch.arange(int(seconds * rate)) / rate
    return torch.stack([torch.sin(2 * torch.pi * f * t) for f in hz])


def test_leakage_measures_the_other_sources_copy_in_each_estimate():
    truth = tones(500, 2000)
    # estimate 0 holds a copy of source 1 at -20 dB; estimate 1 is exact
    estimate = torch.stack([truth[0] + 0.1 * truth[1], truth[1]])
    leak = leakage(estimate, truth)
    assert abs(leak[0].item() - (-20.0)) < 0.5
    assert leak[1].item() < -40  # only the window's sidelobes
    assert torch.allclose(leakage(truth.flip(0), truth), torch.zeros(2), atol=0.5)  # swapped: whole copies


def test_leakage_is_nan_where_no_other_source_has_bins_of_its_own():
    truth = torch.stack([tones(500)[0], torch.zeros(16000)])
    leak = leakage(torch.stack([truth[0], 0.5 * truth[0]]), truth)
    assert torch.isnan(leak[0])  # a silent source owns no bins
    assert abs(leak[1].item() - 20 * math.log10(0.5)) < 0.1


def test_swap_share_counts_the_segments_an_estimate_spends_on_another_source():
    truth = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(swap_share(truth, truth, 1000), torch.zeros(2))
    wandering = truth.clone()
    wandering[:, 1000:3000] = truth.flip(0)[:, 1000:3000]  # segments 1 and 2 of 8 swapped
    assert torch.allclose(swap_share(0.3 * wandering, truth, 1000), torch.full((2,), 0.25))
    assert torch.allclose(swap_share(truth.flip(0), truth, 1000), torch.ones(2))
    truth[1, :5000] = 0  # silent segments of a source are not counted: 3 active, of which 1 swapped
    wandering[:, 5000:6000] = truth.flip(0)[:, 5000:6000]
    assert swap_share(wandering, truth, 1000)[1].item() == pytest.approx(1 / 3)


def test_swap_share_is_nan_for_a_silent_source_and_pads_a_partial_segment():
    truth = torch.randn(2, 2500, generator=torch.Generator().manual_seed(1))
    truth[1] = 0
    share = swap_share(truth, truth, 1000)
    assert share[0].item() == 0 and torch.isnan(share[1])
