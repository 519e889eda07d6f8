"""The spectral-template prior: its exact score, EM fitting, loading, and separation in the real sampler."""

import math

import pytest
import soundfile as sf
import torch
from helpers import compose_config, tone_bursts

from unasdiff.diffusion import DiffusionSchedule
from unasdiff.metrics import si_sdr
from unasdiff.models import SpectralTemplatePrior, build_network, load_prior
from unasdiff.models.templates import forward_backward, posterior_mean_sources
from unasdiff.separation import separate
from unasdiff.template_fitting import em_step, fit, fit_templates, frame_powers

SCHEDULE = DiffusionSchedule.linear()


def _prior(shapes, log_weights=None, n_fft=256):
    prior = SpectralTemplatePrior(templates=len(shapes), gains=1, n_fft=n_fft, hop_length=n_fft // 2)
    prior.shapes.copy_(torch.stack([torch.as_tensor(s, dtype=torch.float32) for s in shapes]))
    if log_weights is not None:
        prior.log_weights.copy_(torch.as_tensor(log_weights, dtype=torch.float32)[:, None])
    return prior


def _shaped_noise(shape, batch, length, n_fft, generator):
    """Noise whose STFT coefficients have variance `shape` per bin (approximately: shaped in the STFT domain)."""
    prior = _prior([shape], n_fft=n_fft)
    white = torch.randn(batch, length, generator=generator)
    spec = prior.stft(white) * (torch.as_tensor(shape) / prior.noise_power).sqrt()
    return prior.istft(spec, length)


@pytest.mark.parametrize("step", [0, 20, 150])
def test_a_white_template_is_the_scalar_wiener_denoiser(step):
    """One flat template of variance v per coefficient: E[a x0 | x_t] = a^2 v' / (a^2 v' + s^2) x_t, v' = v / c."""
    prior = _prior([[0.3 * 128.0] * 129], n_fft=256)  # per-sample variance 0.3 (c = sum(window^2) = 128)
    x_t = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    abar = SCHEDULE.alphas_cumprod[step]
    eps = prior(x_t, torch.full((2,), 5 * step))
    gain = abar * 0.3 / (abar * 0.3 + 1 - abar)
    expected = (x_t - gain * x_t) / (1 - abar).sqrt()
    torch.testing.assert_close(eps, expected, atol=2e-4, rtol=1e-4)


def test_responsibilities_pick_the_template_a_frame_came_from():
    bins = 129
    low = torch.where(torch.arange(bins) < 30, 100.0, 0.01)
    high = torch.where(torch.arange(bins) >= 60, 100.0, 0.01)
    prior = _prior([low.tolist(), high.tolist()], n_fft=256)
    g = torch.Generator().manual_seed(1)
    for k, shape in enumerate((low, high)):
        x = _shaped_noise(shape, 1, 256 * 20, 256, g)
        spec = prior.stft(x)
        power = spec.real**2 + spec.imag**2
        resp = prior.posteriors(prior.log_joint(power, prior.component_variances() + 1e-6))[0]
        assert (resp[0, 2:-2, k] > 0.99).all()  # inner frames (the edges are reflection-padded)


def _low_and_high_crops(generator, n_fft=128):
    """20 crops of low-band and 20 of high-band shaped noise, and the two shapes [n_fft / 2 + 1]."""
    bins = n_fft // 2 + 1
    low = torch.where(torch.arange(bins) < 20, 10.0, 0.1)
    high = torch.where(torch.arange(bins) >= 40, 10.0, 0.1)
    crops = torch.cat([_shaped_noise(low, 20, 4096, n_fft, generator), _shaped_noise(high, 20, 4096, n_fft, generator)])
    return crops, low, high


def test_em_recovers_two_spectral_shapes_and_never_lowers_the_likelihood():
    bins, n_fft = 65, 128
    g = torch.Generator().manual_seed(2)
    crops, low, high = _low_and_high_crops(g, n_fft)
    prior = SpectralTemplatePrior(templates=2, gains=3, gain_step_db=6.0, n_fft=n_fft, hop_length=n_fft // 2)
    history = fit_templates(prior, frame_powers(prior, crops), iterations=15, floor=1e-6, generator=g)
    assert all(b >= a - 1e-4 for a, b in zip(history, history[1:]))
    # each true shape is matched by a fitted shape (at some gain) to within a factor of 2 in most bins
    fitted = prior.component_variances().reshape(2, 3, bins)
    for truth in (low, high):
        ratio = (fitted / truth).log2().abs()
        assert ((ratio < 1).float().mean(-1) > 0.9).any()
    assert prior.log_weights.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_template_priors_separate_two_spectrally_distinct_sources():
    """Low-pass and high-pass shaped noise: posterior sampling with the exact template priors beats the
    mixture by a wide margin (the MMSE Wiener filter gives about +20 dB here)."""
    bins, n_fft = 129, 256
    low = torch.where(torch.arange(bins) < 40, 1.0, 1e-4)
    high = torch.where(torch.arange(bins) >= 50, 1.0, 1e-4)
    g = torch.Generator().manual_seed(3)
    truth = torch.stack([_shaped_noise(low, 2, 8000, n_fft, g), _shaped_noise(high, 2, 8000, n_fft, g)], dim=1)
    truth = truth * 0.07 / truth.pow(2).mean(-1, keepdim=True).sqrt()
    mixture = truth.sum(1)
    priors = [_prior([(low * 0.07**2 * 128 * bins / low.sum()).tolist()], n_fft=n_fft),
              _prior([(high * 0.07**2 * 128 * bins / high.sum()).tolist()], n_fft=n_fft)]
    estimate = separate(mixture, priors, method="msdm_dirac", steps=50, generator=torch.Generator().manual_seed(0))
    improvement = si_sdr(estimate, truth) - si_sdr(mixture[:, None].expand_as(truth), truth)
    assert improvement.mean() > 10.0


def test_fit_writes_a_prior_that_loads_and_runs_in_the_separate_stage(tmp_path):
    for role, freq_seed, markov in (("speech", 0, False), ("sound", 1, True)):
        folder = tmp_path / role
        folder.mkdir()
        for i in range(3):
            sf.write(folder / f"{i}.wav", tone_bursts(1.0, 16000, 10 * freq_seed + i), 16000)
        cfg = compose_config("fit_template_prior", [
            f"prior=template_{role}", f"data.folder_root={folder}", f"out={tmp_path / role}.pt", "data.seconds=0.5",
            "fit.crops=6", "fit.iterations=3", "prior.net.templates=2", "prior.net.gains=2", "progress=false",
            f"prior.net.markov={markov}",
            f"data.cache_dir={tmp_path / 'cache'}"])
        path = fit(cfg)
        prior = load_prior(path)
        assert isinstance(prior, SpectralTemplatePrior) and prior.shapes.shape == (2, cfg.prior.net.n_fft // 2 + 1)
        assert torch.isfinite(prior.shapes).all() and (prior.shapes > 0).all()
        assert prior.markov == markov and (not markov or torch.isfinite(prior.log_transitions).all())
        info = torch.load(path, weights_only=True)["info"]
        assert info["crops"] == 6 and len(info["log_likelihood"]) == 3
    from unasdiff.separate import run

    mix = tmp_path / "mix.wav"
    sf.write(mix, tone_bursts(1.0, 16000, 0) + tone_bursts(1.0, 16000, 11), 16000)
    out = tmp_path / "out"
    cfg = compose_config("separate", [f"mixture={mix}", f"output_dir={out}", "sampler.steps=5", "progress=false",
                                      f"checkpoints.speech={tmp_path / 'speech.pt'}",
                                      f"checkpoints.sound={tmp_path / 'sound.pt'}", "write.spectrogram=false"])
    assert run(cfg) == 0
    sources = [sf.read(out / f"source_{k}_{role}.wav")[0] for k, role in enumerate(("speech", "sound"))]
    assert all(len(s) == 16000 and math.isfinite(float(abs(s).sum())) for s in sources)


def test_build_network_refuses_an_unknown_kind():
    from unasdiff.errors import UnasdiffError

    with pytest.raises(UnasdiffError, match="prior kind must be one of network, spectral_templates"):
        build_network({"name": "x", "kind": "wavenet", "net": {}})


def test_hop_must_be_half_the_frame():
    with pytest.raises(ValueError, match="hop_length = n_fft / 2"):
        SpectralTemplatePrior(n_fft=512, hop_length=128)


def test_forward_backward_matches_enumerating_every_shape_sequence():
    """Smoothed posteriors, evidence and expected transitions of a 3-state chain over 4 frames against
    the sum over all 3^4 state sequences."""
    import itertools

    g = torch.Generator().manual_seed(4)
    emission = 5 * torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    initial = torch.log_softmax(torch.randn(3, generator=g, dtype=torch.float64), 0)
    transitions = torch.log_softmax(torch.randn(3, 3, generator=g, dtype=torch.float64), 1)
    posterior, evidence, counts = forward_backward(emission, initial, transitions, count_transitions=True)
    paths = torch.tensor(list(itertools.product(range(3), repeat=4)))  # [81, 4]
    log_path = (initial[paths[:, 0]] + transitions[paths[:, :-1], paths[:, 1:]].sum(-1))[None] \
        + emission[:, torch.arange(4), paths].sum(-1)  # [2, 81]
    weight = torch.softmax(log_path, dim=-1)
    torch.testing.assert_close(evidence, torch.logsumexp(log_path, dim=-1))
    expected = torch.zeros(2, 4, 3, dtype=torch.float64)
    expected_counts = torch.zeros(3, 3, dtype=torch.float64)
    for p, path in enumerate(paths):
        expected[:, torch.arange(4), path] += weight[:, p, None]
        for a, b in zip(path[:-1], path[1:]):
            expected_counts[a, b] += weight[:, p].sum()
    torch.testing.assert_close(posterior, expected)
    torch.testing.assert_close(counts, expected_counts)


def _markov_prior(shapes, log_transitions, n_fft=256):
    prior = SpectralTemplatePrior(templates=len(shapes), gains=1, n_fft=n_fft, hop_length=n_fft // 2, markov=True)
    prior.shapes.copy_(torch.stack([torch.as_tensor(s, dtype=torch.float32) for s in shapes]))
    prior.log_transitions.copy_(torch.as_tensor(log_transitions, dtype=torch.float32))
    return prior


def test_a_chain_whose_rows_are_the_weights_is_the_independent_model():
    g = torch.Generator().manual_seed(5)
    shapes = (10 * torch.rand(3, 129, generator=g)).tolist()
    log_weights = torch.log_softmax(torch.randn(3, generator=g), 0)
    independent = _prior(shapes, log_weights)
    markov = _markov_prior(shapes, log_weights[None].expand(3, 3))
    markov.log_weights.copy_(independent.log_weights)
    log_joint = 30 * torch.randn(2, 25, 3, generator=g, dtype=torch.float64)
    a, b = independent.double().posteriors(log_joint), markov.double().posteriors(log_joint)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_a_sticky_chain_judges_an_ambiguous_frame_by_its_neighbours():
    """Frames of the low template with one frame between the two: independent frames split it, a chain
    that rarely changes shape gives it to the low template like its neighbours."""
    bins = 129
    low = torch.where(torch.arange(bins) < 30, 100.0, 0.01)
    high = torch.where(torch.arange(bins) >= 60, 100.0, 0.01)
    log_joint = torch.zeros(1, 9, 2)
    log_joint[0, :, 1] = -50.0  # every frame favours low by 50 nats ...
    log_joint[0, 4] = torch.tensor([-1.0, 0.0])  # ... but frame 4 slightly favours high
    sticky = torch.tensor([[0.99, 0.01], [0.01, 0.99]]).log()
    assert _prior([low, high]).posteriors(log_joint)[0][0, 4, 1] > 0.7
    assert _markov_prior([low, high], sticky).posteriors(log_joint)[0][0, 4, 0] > 0.95


def test_em_learns_that_shapes_persist_when_each_clip_keeps_one_shape():
    n_fft = 128
    g = torch.Generator().manual_seed(6)
    crops, _, _ = _low_and_high_crops(g, n_fft)
    prior = SpectralTemplatePrior(templates=2, gains=2, gain_step_db=6.0, n_fft=n_fft, hop_length=n_fft // 2,
                                  markov=True)
    history = fit_templates(prior, frame_powers(prior, crops), iterations=10, floor=1e-6, generator=g)
    assert all(b >= a - 1e-4 for a, b in zip(history, history[1:]))
    assert (prior.log_transitions.exp().diagonal() > 0.95).all()
    torch.testing.assert_close(prior.log_transitions.exp().sum(1), torch.ones(2))


def test_em_keeps_every_transition_possible_when_no_frame_takes_a_shape():
    """A shape that no frame chooses (a tone where the data have none) must not get -inf transitions: the
    score's gradient, which guided samplers need, would be NaN."""
    n_fft = 128
    g = torch.Generator().manual_seed(6)
    crops, _, _ = _low_and_high_crops(g, n_fft)
    prior = SpectralTemplatePrior(templates=3, gains=2, gain_step_db=6.0, n_fft=n_fft, hop_length=n_fft // 2,
                                  markov=True)
    power = frame_powers(prior, crops)
    fit_templates(prior, power, iterations=3, floor=1e-6, generator=g)
    unused = torch.full((n_fft // 2 + 1,), 1e-6)
    unused[10] = 1e6  # a narrow line no crop has
    prior.shapes[2] = unused
    em_step(prior, power, floor=1e-6)
    assert prior.log_weights[2].exp().sum() < 1e-9  # nothing chose it...
    assert torch.isfinite(prior.log_transitions).all()  # ...yet every transition stays possible
    x = (0.1 * torch.randn(2, 2048, generator=g)).requires_grad_(True)
    prior(x, torch.tensor([5 * 150])).sum().backward()
    assert torch.isfinite(x.grad).all()


def _random_prior(generator, markov, templates=2, gains=2, n_fft=16):
    prior = SpectralTemplatePrior(templates=templates, gains=gains, gain_step_db=6.0, n_fft=n_fft,
                                  hop_length=n_fft // 2, markov=markov).double()
    prior.shapes.copy_(3 * torch.rand(templates, n_fft // 2 + 1, generator=generator, dtype=torch.float64) + 0.1)
    prior.log_weights.copy_(torch.log_softmax(torch.randn(templates * gains, generator=generator,
                                                          dtype=torch.float64), 0).reshape(templates, gains))
    if markov:
        prior.log_transitions.copy_(torch.log_softmax(2 * torch.randn(templates, templates, generator=generator,
                                                                      dtype=torch.float64), -1))
    return prior


def test_the_exact_posterior_mean_matches_enumerating_every_sequence_of_component_pairs():
    """A Markov prior and an independent one, 2 shapes x 2 gains each, over the 3 frames of a 16-sample
    mixture: the posterior-weighted Wiener gains against the sum over all 16^3 sequences of pairs."""
    import itertools

    g = torch.Generator().manual_seed(7)
    first, second = _random_prior(g, markov=True), _random_prior(g, markov=False)
    mixture = 0.7 * torch.randn(1, 16, generator=g, dtype=torch.float64)
    spec = first.stft(mixture)[0]
    power = spec.real**2 + spec.imag**2  # [N, F]
    frames = power.shape[0]
    v1, v2 = first.component_variances(), second.component_variances()
    w1, w2 = first.log_weights.logsumexp(-1), second.log_weights.logsumexp(-1)
    a1, a2 = first.log_transitions, w2.expand(2, 2)  # an independent prior: every row its weights
    numerator, total = torch.zeros_like(power), 0.0
    for sequence in itertools.product(range(16), repeat=frames):
        pairs = [(s // 4, s % 4) for s in sequence]  # component of each prior; shape = component // gains
        log_p = w1[pairs[0][0] // 2] + w2[pairs[0][1] // 2]
        for (c1, c2), (p1, p2) in zip(pairs[1:], pairs[:-1]):
            log_p = log_p + a1[p1 // 2, c1 // 2] + a2[p2 // 2, c2 // 2]
        for n, (c1, c2) in enumerate(pairs):
            variance = v1[c1] + v2[c2]
            log_gains = first.log_weights.flatten()[c1] - w1[c1 // 2] + second.log_weights.flatten()[c2] - w2[c2 // 2]
            log_p = log_p + log_gains
            log_p = log_p - (power[n] / variance + variance.log()).sum()
        weight = log_p.exp()
        total = total + weight
        for n, (c1, c2) in enumerate(pairs):
            numerator[n] += weight * v1[c1] / (v1[c1] + v2[c2])
    expected = first.istft((spec * numerator / total)[None], 16)
    sources = posterior_mean_sources(mixture, first, second)
    torch.testing.assert_close(sources[:, 0], expected)
    torch.testing.assert_close(sources.sum(1), mixture)


def test_the_exact_posterior_mean_of_one_template_each_is_the_wiener_filter():
    g = torch.Generator().manual_seed(8)
    first, second = _random_prior(g, False, 1, 1, n_fft=64), _random_prior(g, False, 1, 1, n_fft=64)
    mixture = torch.randn(2, 640, generator=g, dtype=torch.float64)
    wiener = first.shapes[0] / (first.shapes[0] + second.shapes[0])
    expected = first.istft(first.stft(mixture) * wiener, 640)
    torch.testing.assert_close(posterior_mean_sources(mixture, first, second)[:, 0], expected)


def test_the_exact_posterior_mean_needs_one_stft_for_both_priors():
    g = torch.Generator().manual_seed(9)
    with pytest.raises(ValueError, match="same STFT"):
        posterior_mean_sources(torch.zeros(1, 640), _random_prior(g, False, n_fft=16),
                               _random_prior(g, False, n_fft=32))


def _guidance_gradient(prior, x_t, step, v):
    """d <v, eps(x_t)> / d x_t, the vector-Jacobian product a guided sampler takes through the prior."""
    x_t = x_t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((prior(x_t, torch.full((x_t.shape[0],), 5 * step)) * v).sum(), x_t)
    return grad


def test_the_exact_score_gradient_of_a_markov_prior_matches_finite_differences():
    """Through the likelihoods and the scaled forward-backward recursions (float64, central differences)."""
    g = torch.Generator().manual_seed(7)
    prior = SpectralTemplatePrior(templates=3, gains=2, n_fft=32, hop_length=16, markov=True).double()
    prior.shapes.copy_(0.1 + 2 * torch.rand(3, 17, generator=g, dtype=torch.float64))
    prior.log_transitions.copy_(torch.log_softmax(torch.randn(3, 3, generator=g, dtype=torch.float64), 1))
    x_t = torch.randn(1, 96, generator=g, dtype=torch.float64).requires_grad_(True)
    t = torch.full((1,), 5 * 60)
    assert torch.autograd.gradcheck(lambda x: prior(x, t), (x_t,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_the_score_gradient_stays_finite_where_most_components_underflow():
    """Loud frames put most components thousands of nats below the best: their probabilities are exactly 0 in
    float32, and neither the score nor its gradient may become NaN."""
    sticky = torch.tensor([[0.9, 0.1], [0.1, 0.9]]).log()
    prior = _markov_prior([torch.full((129,), 1e-4), torch.full((129,), 1e4)], sticky)
    x_t = 30 * torch.randn(2, 4096, generator=torch.Generator().manual_seed(8))
    grad = _guidance_gradient(prior, x_t, 3, torch.randn(2, 4096, generator=torch.Generator().manual_seed(9)))
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_the_wiener_gradient_is_the_exact_one_for_a_single_component_and_the_filter_s_transpose():
    """With one component the posteriors are 1 whatever x_t is, so holding them fixed loses nothing, and the
    gradient is the transpose of the Wiener filter w = a^2 u / (a^2 u + s^2 c) applied in the STFT domain."""
    g = torch.Generator().manual_seed(10)
    shape = 0.5 + torch.rand(129, generator=g)
    exact, wiener = _prior([shape]), _prior([shape])
    wiener.gradient = "wiener"
    x_t, v, step = torch.randn(2, 3000, generator=g), torch.randn(2, 3000, generator=g), 80
    abar = SCHEDULE.alphas_cumprod[step]
    w = abar * shape / (abar * shape + (1 - abar) * exact.noise_power)
    spread = (1 - abar).sqrt()

    def filtered(x):  # eps = (x - iSTFT(w STFT(x))) / s, written out
        return (x - exact.istft(exact.stft(x) * w, x.shape[-1])) / spread

    x = x_t.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((filtered(x) * v).sum(), x)
    for prior in (exact, wiener):
        got = _guidance_gradient(prior, x_t, step, v)
        assert (got - expected).norm() / expected.norm() < 1e-4


def test_the_wiener_gradient_drops_the_posteriors_share_of_the_jacobian():
    """Two shapes that a frame of flat noise fits about equally: the posteriors move with x_t, and the gradients
    differ by that share, while the scores are the same."""
    ripple = 0.5 * torch.sin(torch.arange(129) / 8)
    exact, wiener = _prior([1 + ripple, 1 - ripple]), _prior([1 + ripple, 1 - ripple])
    wiener.gradient = "wiener"
    g = torch.Generator().manual_seed(11)
    x_t, v, t = torch.randn(1, 4096, generator=g), torch.randn(1, 4096, generator=g), torch.full((1,), 300)
    torch.testing.assert_close(exact(x_t, t), wiener(x_t, t))
    a, b = _guidance_gradient(exact, x_t, 60, v), _guidance_gradient(wiener, x_t, 60, v)
    assert (a - b).norm() / a.norm() > 1e-3


def test_the_prior_refuses_an_unknown_gradient():
    with pytest.raises(ValueError, match="gradient must be one of exact, wiener"):
        SpectralTemplatePrior(gradient="approximate")
