"""The posterior sampler: the reference's guided step, the schedule, and behaviour on awkward input."""

import json

import pytest
import torch

from unasdiff.diffusion import DiffusionSchedule
from unasdiff.diffusion.gaussian import (
    GaussianPrior,
    GaussianSource,
    bandpass,
    lowpass,
    posterior_sample,
    posterior_spread,
    wiener,
)
from unasdiff.errors import UnasdiffError
from unasdiff.metrics import si_sdr
from unasdiff.separation import (
    RULES,
    ReconstructionObjective,
    SourcePriors,
    guided_step,
    make_rule,
    mixture_consistent,
    separate,
)


@pytest.fixture(scope="module")
def step_vectors(data_dir):
    return torch.load(data_dir / "hybrid_step_vectors.pt", weights_only=True)


@pytest.mark.parametrize("key", ["step150", "step60", "step0"])
def test_hybrid_step_matches_reference(key, step_vectors, tiny_speech, tiny_sound):
    v = step_vectors[key]
    priors = SourcePriors([tiny_speech, tiny_sound], v["labels"].tolist())
    out = guided_step(priors, DiffusionSchedule.linear(), v["step"], v["x_t"][None], v["mixture"][None],
                      v["noise"][None], make_rule("hybrid"), ReconstructionObjective())
    for name, ref in [("x0", "x0_hat"), ("mean", "mean"), ("x_next", "x_next")]:
        assert (getattr(out, name)[0] - v[ref]).abs().max().item() <= 1e-4, name
    assert out.loss.item() == pytest.approx(v["loss"].item(), abs=1e-4 * v["loss"].item())


def test_schedule_matches_reference(data_dir):
    ref = json.loads((data_dir / "schedule.json").read_text())
    s = DiffusionSchedule.linear(ref["T"], ref["beta_start"], ref["beta_end"])
    assert torch.allclose(s.betas, torch.tensor(ref["betas"]), atol=1e-9)
    assert torch.allclose(s.alphas_cumprod, torch.tensor(ref["alphas_cumprod"]), atol=1e-6)
    assert torch.allclose(s.posterior_variance, torch.tensor(ref["posterior_variance"], dtype=torch.float32), atol=1e-7)
    hybrid = make_rule("hybrid")
    strengths = torch.tensor([hybrid.strength(v ** 0.5) for v in s.posterior_variance.tolist()], dtype=torch.float64)
    assert torch.allclose(strengths, torch.tensor(ref["smooth_max_schedule"], dtype=torch.float64), rtol=1e-5)
    expected = torch.tensor(ref["hybrid_radius_L64000"], dtype=torch.float64)
    assert torch.allclose(64000 ** 0.5 * strengths, expected, rtol=1e-5)
    assert s.time_input(149) == 745


def test_respacing_keeps_the_schedule_ends():
    full = DiffusionSchedule.linear()
    assert full.respaced(200) is full
    short = full.respaced(25)
    assert len(short) == 25 and short.timesteps[0] == 0 and short.timesteps[-1] == 199
    assert torch.allclose(short.alphas_cumprod, full.alphas_cumprod[short.timesteps], rtol=1e-5)
    assert short.time_input(24) == 995
    assert short.position_of_step(149) == int((short.timesteps <= 149).nonzero()[-1])


# --- the Gaussian oracle: exact priors, so the sampler is the only source of error ---

@pytest.fixture(scope="module")
def oracle():
    rms = 10 ** (-22 / 20)
    sources = [GaussianSource(lowpass(1000.0), rms), GaussianSource(bandpass(2500.0, 1500.0), rms)]
    g = torch.Generator().manual_seed(0)
    truth = torch.stack([s.draw(6, 4000, g) for s in sources], dim=1)
    return sources, truth, truth.sum(1)


def test_oracle_limits(oracle):
    sources, truth, mixture = oracle
    w = si_sdr(wiener(mixture, sources), truth).mean()
    p = si_sdr(posterior_sample(mixture, sources, torch.Generator().manual_seed(1)), truth).mean()
    m = si_sdr(mixture[:, None].expand_as(truth), truth).mean()
    assert m.abs() < 1.0 and w > m + 4 and 2.0 < w - p < 4.0  # a posterior sample is ~3 dB below Wiener


def test_hybrid_reaches_the_exact_posterior_on_the_oracle(oracle):
    sources, truth, mixture = oracle
    exact = si_sdr(posterior_sample(mixture, sources, torch.Generator().manual_seed(1)), truth).mean()
    est = separate(mixture, [GaussianPrior(s) for s in sources], scale=0.3, floor=0.005,
                   generator=torch.Generator().manual_seed(2))
    assert si_sdr(est, truth).mean() > exact - 0.5
    # and it is still a sampler: its distance from the posterior mean is of the exact posterior's size
    assert 0.5 < posterior_spread(est, mixture, sources) < 1.5


def test_default_hybrid_keeps_its_quality_at_fewer_steps(oracle):
    """The constants are per step of the 200-step schedule (issue 14): respaced to 50 or 25 steps the default
    sampler is no more than 0.5 dB below itself at 200 steps."""
    sources, truth, mixture = oracle
    priors = [GaussianPrior(s) for s in sources]
    scores = {steps: si_sdr(separate(mixture, priors, steps=steps, generator=torch.Generator().manual_seed(2)),
                            truth).mean().item() for steps in (200, 50, 25)}
    assert scores[50] > scores[200] - 0.5 and scores[25] > scores[200] - 0.5, scores


def test_a_respaced_step_pulls_as_hard_as_the_steps_it_replaces():
    one, four = make_rule("hybrid", sharpness=1e6), make_rule("hybrid", sharpness=1e6, stride=4.0)  # smoothmax ~ max
    assert four.strength(0.0) == pytest.approx(4 * one.strength(0.0), rel=1e-3)  # the floor adds up
    assert four.strength(1.0) == pytest.approx(2 * one.strength(1.0), rel=1e-3)  # sigma already grew as sqrt(4)
    grad, zero = torch.ones(1, 1, 4), torch.zeros(1, 1, 4)
    assert torch.allclose(make_rule("dps", stride=4.0).update(zero, zero, grad, 0.1), -2 * grad)
    with pytest.raises(TypeError, match="takes"):
        make_rule("hybrid", stride=2.0, strides=3)


def test_msdm_dirac_satisfies_the_mixture_exactly(oracle):
    sources, truth, mixture = oracle
    est = separate(mixture, [GaussianPrior(s) for s in sources], method="msdm_dirac", steps=50,
                   generator=torch.Generator().manual_seed(2))
    assert torch.allclose(est.sum(1), mixture, atol=1e-5)
    assert si_sdr(est, truth).mean() > si_sdr(mixture[:, None].expand_as(truth), truth).mean() + 1.0


def test_averaging_samples_moves_towards_wiener(oracle):
    sources, truth, mixture = oracle
    priors = [GaussianPrior(s) for s in sources]
    mean, samples = separate(mixture, priors, steps=50, n_samples=4, return_samples=True,
                             generator=torch.Generator().manual_seed(3))
    assert samples.shape == (6, 4, 2, 4000)
    assert torch.allclose(mean, samples.mean(1))
    single = si_sdr(samples[:, 0], truth).mean()
    assert si_sdr(mean, truth).mean() > single + 1.0


def test_samples_of_interchangeable_sources_are_relabelled_before_the_average():
    from unasdiff.separation.alignment import align_samples, interchangeable_groups
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(3, 2000, generator=g)
    # four samples of one mixture; samples 1 and 3 drew sources 1 and 2 the other way round
    drawn = [[c, a, b], [c, b, a], [c, a, b], [c, b, a]]
    samples = torch.stack([torch.stack(s) for s in drawn])[None] + 0.1 * torch.randn(1, 4, 3, 2000, generator=g)
    aligned = align_samples(samples, [[1, 2]])
    assert si_sdr(aligned.mean(1)[0], torch.stack([c, a, b])).min() > 15.0
    assert si_sdr(samples.mean(1)[0, 1:], torch.stack([a, b])).max() < 1.0  # averaged as drawn: both a blend
    assert torch.equal(aligned[:, :, 0], samples[:, :, 0])  # a source outside the group is never moved
    assert torch.equal(align_samples(samples, []), samples)
    # interchangeable: the same prior object and the same label
    p, q = object(), object()
    assert interchangeable_groups([p, q, q, q, p], [None, None, None, 5, 3]) == [[1, 2]]
    assert interchangeable_groups([p, q], [None, None]) == []


def test_the_windows_of_a_block_are_relabelled_each_on_its_own():
    from unasdiff.separation.alignment import align_samples, align_samples_by_segment
    g = torch.Generator().manual_seed(1)
    first, second = torch.randn(2, 2, 1000, generator=g)  # two windows of 1000 samples of two sources
    # three samples hold one order in both windows, two swap the order in the second window
    windows = [(first, second)] * 3 + [(first, second.flip(0))] * 2
    samples = torch.stack([torch.cat(pair, dim=-1) for pair in windows])[None]  # [1, 5, 2, 2000]
    samples = samples + 0.1 * torch.randn(samples.shape, generator=g)
    truth = torch.cat([first, second], dim=-1)
    whole = align_samples(samples, [[0, 1]]).mean(1)[0]
    in_windows = [si_sdr(whole[:, w], truth[:, w]).min() for w in (slice(0, 1000), slice(1000, 2000))]
    assert min(in_windows) < 8.0  # one order per block: one of its windows is a blend
    by_window = align_samples_by_segment(samples, [[0, 1]], 1000).mean(1)[0]
    assert si_sdr(by_window, truth).min() > 20.0
    for segment in (None, 2000):
        assert torch.equal(align_samples_by_segment(samples, [[0, 1]], segment), align_samples(samples, [[0, 1]]))
    assert torch.equal(align_samples_by_segment(samples, [], 1000), samples)


def test_a_shared_prior_averages_its_relabelled_samples(oracle, monkeypatch):
    import unasdiff.separation as separation
    sources, truth, mixture = oracle
    shared, other = GaussianPrior(sources[0]), GaussianPrior(sources[1])
    seen = []
    relabel = separation.align_samples_by_segment

    def recorded(samples, groups, segment):
        seen.append(groups)
        return relabel(samples, groups, segment)

    monkeypatch.setattr(separation, "align_samples_by_segment", recorded)
    mean, samples = separate(mixture[:2], [shared, other, shared], steps=10, n_samples=3, return_samples=True,
                             generator=torch.Generator().manual_seed(3))
    assert seen == [[[0, 2]]]
    assert samples.shape == (2, 3, 3, 4000) and torch.allclose(mean, samples.mean(1))


@pytest.mark.parametrize("consistency", ["equal", "wiener", "mask"])
def test_consistent_estimates_sum_to_the_mixture_and_keep_their_quality(oracle, consistency):
    sources, truth, mixture = oracle
    priors = [GaussianPrior(s) for s in sources]
    kwargs = dict(method="dps", steps=25, generator=torch.Generator().manual_seed(4))
    raw = separate(mixture, priors, **kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(4)
    consistent = separate(mixture, priors, consistency=consistency, **kwargs)
    assert not torch.allclose(raw.sum(1), mixture, atol=1e-3)
    assert torch.allclose(consistent.sum(1), mixture, atol=1e-5)
    assert si_sdr(consistent, truth).mean() > si_sdr(raw, truth).mean() - 0.5


def test_wiener_consistency_gives_the_residual_to_the_source_that_holds_its_bins():
    t = torch.arange(8000) / 16000
    low, high = torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 5000 * t)
    mixture = (low + high)[None]
    estimate = torch.stack([0.5 * low, 0.5 * high])[None]  # each source found half of itself
    fixed = mixture_consistent(estimate, mixture, "wiener")
    assert torch.allclose(fixed.sum(1), mixture, atol=1e-5)
    middle = slice(1000, 7000)  # away from the STFT's edges
    assert torch.allclose(fixed[0, 0, middle], low[middle], atol=2e-3)
    assert torch.allclose(fixed[0, 1, middle], high[middle], atol=2e-3)
    equal = mixture_consistent(estimate, mixture, "equal")
    assert torch.allclose(equal[0, 0], 0.5 * low + 0.5 * (low + high) / 2, atol=1e-6)
    assert mixture_consistent(estimate, mixture, "none") is estimate
    with pytest.raises(ValueError, match="unknown consistency 'wener'"):
        mixture_consistent(estimate, mixture, "wener")
    with pytest.raises(ValueError, match="unknown consistency 'wener'"):
        separate(mixture, [lambda x, t, label: x], steps=2, consistency="wener")


def test_mask_consistency_filters_the_mixture_with_the_estimates_powers():
    t = torch.arange(8000) / 16000
    low, high = torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 5000 * t)
    mixture = (low + high)[None]
    # each estimate holds its own tone and a copy of the other's 10x fainter (-20 dB)
    estimate = torch.stack([0.5 * low + 0.1 * high, 0.05 * low + high])[None]
    middle = slice(1000, 7000)  # away from the STFT's edges
    masked = mixture_consistent(estimate, mixture, "mask")
    assert torch.allclose(masked.sum(1), mixture, atol=1e-5)
    # the bins' shares go as the powers: 10:1 in amplitude -> 100:1, so the copies fall to about -40 dB
    for k, (own, other) in enumerate([(low, high), (high, low)]):
        leak = (masked[0, k, middle] @ other[middle]) / (other[middle] @ other[middle])
        kept = (masked[0, k, middle] @ own[middle]) / (own[middle] @ own[middle])
        assert 0.005 < leak < 0.015 and kept > 0.98
    # "wiener" only adds the residual: a copy the estimate already holds stays (at -20 dB)
    added = mixture_consistent(estimate, mixture, "wiener")
    leak = (added[0, 0, middle] @ high[middle]) / (high[middle] @ high[middle])
    assert leak > 0.09


class LabelledPrior(torch.nn.Module):
    """eps = 1 + label for every sample: the conditional and null predictions are told apart by value."""
    null_label = 9

    def forward(self, x, t, label):
        return torch.ones_like(x) + (0 if label is None else label[:, None].float())


def test_label_guidance_extrapolates_from_the_null_class():
    prior = LabelledPrior()
    x = torch.zeros(3, 2, 16)
    # w = 2: eps_c + 2 (eps_c - eps_null) = 3 eps_c - 2 eps_null; the unlabelled source is unchanged
    eps = SourcePriors([prior, prior], [4, None], label_guidance=2.0).eps(x, 10)
    assert torch.allclose(eps[:, 0], torch.full((3, 16), 3 * 5 - 2 * 10.0))
    assert torch.allclose(eps[:, 1], torch.ones(3, 16))
    assert torch.equal(SourcePriors([prior, prior], [4, None]).eps(x, 10)[:, 0], torch.full((3, 16), 5.0))
    with pytest.raises(ValueError, match="label_guidance needs priors with a null class"):
        SourcePriors([lambda x, t, label: x], [1], label_guidance=1.0)


# --- every method, with the tiny networks ---

@pytest.mark.parametrize("method", sorted(RULES))
@pytest.mark.parametrize("init", ["mixture", "noise", "raw_mixture"])
def test_every_method_and_init_returns_finite_sources(method, init, tiny_speech, tiny_sound):
    mixture = 0.05 * torch.randn(2, 3000)
    out = separate(mixture, [tiny_speech, tiny_sound], [None, 23], method=method, init=init, steps=4,
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 2, 3000) and torch.isfinite(out).all()


def test_same_seed_same_result_and_silence_stays_silent(tiny_speech, tiny_sound):
    mixture = 0.05 * torch.randn(3, 2000)
    mixture[1] = 0.0
    runs = [separate(mixture, [tiny_speech, tiny_sound], [0, 5], steps=3, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][1], torch.zeros(2, 2000))
    single = separate(mixture[0], [tiny_speech, tiny_sound], [0, 5], steps=3,
                      generator=torch.Generator().manual_seed(7))
    assert single.shape == (2, 2000)
    silent = separate(torch.zeros(2, 2000), [tiny_speech, tiny_sound], [0, 5], steps=3, consistency="wiener")
    assert torch.equal(silent, torch.zeros(2, 2, 2000))  # a batch of silent windows only, as a long pause gives


def test_a_shared_prior_is_called_once_per_step_with_its_labels():
    calls = []

    def prior(x, t, label):
        calls.append((x.shape[0], None if label is None else label.tolist()))
        return torch.zeros_like(x)

    separate(torch.randn(2, 500) * 0.1, [prior, prior, prior], [3, 7, 1], steps=2)
    assert calls == [(6, [3, 7, 1, 3, 7, 1])] * 2


def test_nonfinite_prior_output_stops_with_the_step():
    def broken(x, t, label):
        return torch.full_like(x, float("nan"))

    with pytest.raises(UnasdiffError, match="NaN/inf at step 199"):
        separate(torch.randn(1, 500) * 0.1, [broken, broken], steps=10)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown method 'hybird'"):
        make_rule("hybird")
    with pytest.raises(TypeError, match="'dps' takes .*zeta.*not \\['floor'\\]"):
        make_rule("dps", floor=0.1)
    with pytest.raises(ValueError, match="unknown init"):
        separate(torch.randn(1, 500), [lambda x, t, label: x], init="zeros", steps=2)
    with pytest.raises(ValueError, match="steps must be in 1..200"):
        separate(torch.randn(1, 500), [lambda x, t, label: x], steps=0)


def test_a_step_given_the_mixture_spectrogram_once_is_the_step_that_recomputes_it(tiny_speech, tiny_sound):
    """The sampler computes |STFT(y)| once for all steps: the step must not change by it."""
    generator = torch.Generator().manual_seed(0)
    mixture, x_t, noise = (torch.randn(shape, generator=generator) for shape in ((2, 4096), (2, 2, 4096), (2, 2, 4096)))
    priors, objective = SourcePriors([tiny_speech, tiny_sound], [None, 3]), ReconstructionObjective()
    args = (priors, DiffusionSchedule.linear(), 120, x_t, mixture, noise, make_rule("hybrid"), objective)
    given = guided_step(*args, objective.spectrogram(mixture))
    recomputed = guided_step(*args)
    assert torch.equal(given.x_next, recomputed.x_next) and torch.equal(given.loss, recomputed.loss)


@pytest.mark.parametrize("method", ["hybrid", "dps", "dsg"])
def test_guidance_by_segments_is_guidance_of_each_segment_as_a_mixture_of_its_own(method):
    """With `segment`, the priors see the whole length and guidance treats each segment as a window: for priors
    that act sample by sample, the step equals the step of the segments as separate items."""
    generator = torch.Generator().manual_seed(0)
    batch, sources, segment, count = 2, 2, 2048, 3
    mixture = torch.randn(batch, segment * count, generator=generator)
    x_t, noise = (torch.randn(batch, sources, segment * count, generator=generator) for _ in range(2))
    priors = SourcePriors([lambda x, t, label: 0.3 * x, lambda x, t, label: -0.2 * x], [None, None])

    def as_items(v):  # [B, K, S * P] -> [B * S, K, P], the segments of an item adjacent
        return v.unflatten(-1, (count, segment)).transpose(1, 2).flatten(0, 1)

    rule, objective, schedule = make_rule(method), ReconstructionObjective(), DiffusionSchedule.linear()
    whole = guided_step(priors, schedule, 120, x_t, mixture, noise, rule, objective, segment=segment)
    parts = guided_step(priors, schedule, 120, as_items(x_t), as_items(mixture[:, None])[:, 0], as_items(noise),
                        rule, objective)
    assert torch.allclose(as_items(whole.x_next), parts.x_next, atol=1e-5)
    assert torch.allclose(whole.loss, parts.loss.view(batch, count).sum(-1), rtol=1e-5)
    with pytest.raises(ValueError, match="not a multiple of the guidance segment 5000"):
        guided_step(priors, schedule, 120, x_t, mixture, noise, rule, objective, segment=5000)
