"""A classical source prior: a Gaussian scaled mixture of spectral templates, with an exact score.

Each STFT frame X_n of a clean source is drawn from one of K x G complex Gaussians: spectral shape
k (a variance per frequency bin, u_k) at level g (a fixed grid of gains), X_n | (k, g) ~ CN(0, g u_k),
with mixture weights pi_kg (Benaroya, Bimbot and Gribonval's GSMM). The STFT is a tight frame
(sqrt-Hann, 50 % overlap: A^T A = I), so white noise of variance s^2 per sample stays white noise
of variance s^2 * sum(window^2) per coefficient, and the denoiser of x_t = a x0 + s eps is, per frame,

    E[X | Y] = sum_kg p(k, g | Y) * a^2 g u_k / (a^2 g u_k + s^2 c) * Y,   c = sum(window^2),

the posterior-weighted Wiener filter, with p(k, g | Y) from the complex Gaussian likelihoods. With
`markov=False` frames are independent. With `markov=True` the shape is a hidden Markov chain over frames
(Benaroya, Bimbot and Gribonval's GSHMM): shape k' follows shape k with probability A[k, k'], the gain
is drawn afresh in every frame from p(g | k), and p(k, g | Y_1..Y_N) comes from the forward-backward
recursions over the whole clip, so that each frame's shape is judged with its neighbours (a sustained
tone stays in one shape; speech moves between them). A = pi (every row the shape weights) is exactly
the independent model. The module has the network's call signature `(x_t, t, label) -> eps`, so
it runs in the same sampler as a trained network; the stationary `GaussianPrior` is its K = G = 1 case.
`fit_templates` (unasdiff/template_fitting.py) learns u and pi from clean audio by EM in minutes on CPU.
`posterior_mean_sources` separates a mixture by exact inference under two such priors, with no sampler:
the yardstick for what the sampler makes of them (benchmarks/template_posterior.py).
"""

import contextlib
import math

import torch
from torch import nn

from ..diffusion import DiffusionSchedule
from ..stft import HalfOverlapSTFT
from ..stft import power as spectral_power

GRADIENTS = ("exact", "wiener")
TINY = 1e-30  # probabilities below are 0 for every purpose here, and far above float32's subnormals (1e-38)
LOG_TINY = math.log(TINY)
LOG_FLOOR = -80.0  # exp(-80) / K stays a normal float32 for K up to 10^4 shapes


class SpectralTemplatePrior(nn.Module):
    """Noise predictor `prior(x [B, L], t [B], label [B] | None) -> eps [B, L]` of a template mixture.

    `t` is the network time input (5 x step for T = 200); `label` is ignored (one class). `gradient` says how a
    guided sampler's gradient goes through the denoiser: "exact" through everything, the components'
    posteriors included; "wiener" through the Wiener filter with the posteriors held fixed (their share of
    the Jacobian dropped), which skips differentiating the likelihoods and the forward-backward recursions."""

    num_classes = 1
    null_label = 0

    def __init__(self, templates: int = 32, gains: int = 12, gain_step_db: float = 4.0, n_fft: int = 1024,
                 hop_length: int = 512, diffusion_steps: int = 200, markov: bool = False, gradient: str = "exact"):
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, not {gradient!r}")
        self.gradient = gradient
        if hop_length * 2 != n_fft:
            raise ValueError(f"the template prior needs hop_length = n_fft / 2 (a tight sqrt-Hann frame), "
                             f"got n_fft={n_fft}, hop_length={hop_length}")
        self.n_fft, self.hop_length = n_fft, hop_length
        bins = n_fft // 2 + 1
        # shapes u_k (variance per bin at gain 1) and log weights of every (shape, gain) pair
        self.register_buffer("shapes", torch.ones(templates, bins))
        self.register_buffer("log_weights", torch.full((templates, gains), -torch.log(torch.tensor(templates * gains))))
        # gains spaced gain_step_db apart, the loudest at 1 (0 dB)
        self.register_buffer("gains", 10 ** (-gain_step_db * torch.arange(gains, dtype=torch.float32) / 10))
        self.markov = markov
        if markov:  # log A[k, k']: shape k' in the next frame given shape k; uniform until fitted
            self.register_buffer("log_transitions", torch.full((templates, templates), -math.log(templates)))
        self.register_buffer("window", torch.hann_window(n_fft) ** 0.5, persistent=False)
        self.schedule = DiffusionSchedule.linear(diffusion_steps)

    @property
    def noise_power(self) -> float:
        """Variance of one STFT coefficient of unit white noise: sum of the squared window."""
        return float(self.window.pow(2).sum())

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, N, F] complex: frames first (torch.stft(center=True) transposed)."""
        return HalfOverlapSTFT(self.window.to(x.dtype)).stft(x)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """[B, N, F] -> [B, L], the inverse of `stft`."""
        return HalfOverlapSTFT(self.window.to(spec.real.dtype)).istft(spec, length)

    def component_variances(self) -> torch.Tensor:
        """Variance of every (shape, gain) component per bin: [K * G, F]."""
        return (self.gains[None, :, None] * self.shapes[:, None, :]).flatten(0, 1)

    def log_joint(self, frames: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
        """log p(frame, component) up to a constant, for frames of |Y|^2 [..., N, F] under per-component
        variances of Y [C, F] or [B, C, F] -> [..., N, C]: the complex Gaussian likelihood plus the log weight."""
        bias = self.log_weights.flatten() - variances.log().sum(-1)  # [C] or [B, C]
        precision = -(1 / variances).transpose(-1, -2)  # [F, C] or [B, F, C]
        if precision.dim() == 2:  # one matrix product for all frames, the bias added inside it
            return torch.addmm(bias, frames.flatten(0, -2), precision).unflatten(0, frames.shape[:-1])
        return torch.baddbmm(bias.unsqueeze(-2), frames, precision)

    def posteriors(self, log_joint: torch.Tensor, count_transitions: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """p(component | all frames) [B, N, C] and log p(frames) per clip [B] from `log_joint` [B, N, C]:
        per frame for independent frames, by the forward-backward recursions for the Markov model, which
        with `count_transitions` also gives the expected shape transitions [K, K] (forward_backward)."""
        if not self.markov:
            evidence = torch.logsumexp(log_joint, dim=-1, keepdim=True)
            return probabilities(log_joint - evidence), evidence.sum((1, 2)), None
        templates, gains = self.log_weights.shape
        per_gain = log_joint.unflatten(-1, (templates, gains))  # log pi_k + log p(g | k) + log p(Y | k, g)
        peak = per_gain.amax(-1, keepdim=True)
        # one exponential serves the shapes' evidence and p(g | k, Y) = scaled / total; its values are normal
        # floats (>= TINY / e), and the product below is flushed, so it needs no flush of its own
        scaled = (per_gain - peak).clamp_min_(LOG_TINY - 1).exp_()
        total = scaled.sum(-1, keepdim=True)  # >= 1: the peak is exp(0)
        log_shape_joint = (peak + total.log())[..., 0]  # log pi_k + log p(Y | k)
        log_shape_weights, log_transitions = self.shape_chain()
        shape, evidence, counts = forward_backward(log_shape_joint - log_shape_weights, log_shape_weights,
                                                   log_transitions, count_transitions)
        return flush_tiny((scaled * (shape.unsqueeze(-1) / total)).flatten(-2)), evidence, counts

    def shape_chain(self) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(k) [K] and log A [K, K] of the shapes; for independent frames every row of A is p(k)."""
        log_shape_weights = torch.logsumexp(self.log_weights, dim=-1)
        if self.markov:
            return log_shape_weights, self.log_transitions
        return log_shape_weights, log_shape_weights.expand(len(log_shape_weights), -1)

    def denoise(self, x_t: torch.Tensor, signal: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        """E[a x0 | x_t] for x_t = a x0 + s eps, with a = `signal`, s = `spread` of shape [B, 1] or [1, 1] (one
        noise level for the batch: one set of Wiener gains, and the products are single matrix products)."""
        spec = self.stft(x_t)  # [B, N, F]
        if signal.shape[0] == 1:
            signal, spread = signal[0], spread[0]  # [1]: component variances [C, F] for every clip
        clean = signal[..., None] ** 2 * self.component_variances()  # [C, F] or [B, C, F]
        noisy = clean + spread[..., None] ** 2 * self.noise_power
        power = spectral_power(spec)
        with torch.no_grad() if self.gradient == "wiener" else contextlib.nullcontext():
            resp = self.posteriors(self.log_joint(power, noisy))[0]  # [B, N, C]
        gain = resp @ (clean / noisy)  # [B, N, F]
        return self.istft(spec * gain, x_t.shape[-1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        steps = torch.as_tensor(t).reshape(-1).expand(x_t.shape[0]) // self.schedule.time_scale
        # the sampler's case, one step for the whole batch, checked only where that costs no wait for a device
        if steps.device.type == "cpu" and bool((steps == steps[0]).all()):
            steps = steps[:1]
        abar = self.schedule.alphas_cumprod.to(x_t.device)[steps.to(x_t.device)].reshape(-1, 1)
        signal, spread = abar.sqrt(), (1 - abar).sqrt()
        estimate = self.denoise(x_t.to(torch.promote_types(x_t.dtype, torch.float32)), signal, spread)  # fp16 -> fp32
        return ((x_t - estimate) / spread).to(x_t.dtype)


def flush_tiny(p: torch.Tensor) -> torch.Tensor:
    """Probabilities below TINY set to 0. Most components of a frame are thousands of nats below the best, and
    on a CPU subnormal floats make matrix products hundreds of times slower (exp of such logs, 20 times)."""
    return torch.nn.functional.threshold(p, TINY, 0.0)  # one pass: p where p > TINY, else 0


def probabilities(log_p: torch.Tensor) -> torch.Tensor:
    """exp(log_p), exactly 0 below TINY (the exponent clamped first: see flush_tiny)."""
    return flush_tiny(log_p.clamp_min(LOG_TINY - 1).exp())


def forward_backward(log_emission: torch.Tensor, log_initial: torch.Tensor, log_transitions: torch.Tensor,
                     count_transitions: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The HMM recursions for emissions log p(Y_n | k) [B, N, K], initial log p(k) [K] and log A [K, K]: the
    smoothed p(k_n | Y_1..Y_N) [B, N, K], the log evidence log p(Y_1..Y_N) per clip [B] and, with
    `count_transitions`, the expected number of k -> k' transitions summed over clips and frames [K, K] (EM's
    statistic for A).

    Scaled recursions in the probability domain (Rabiner, 1989), so that each frame is one small matrix
    product: every frame's emissions are divided by their largest (the raw scale, thousands of nats for loud
    frames, would swamp float32), and alpha, beta are normalised per frame. Log probabilities below
    LOG_FLOOR are raised to it, so the likeliest shape of a frame can always be reached from the one before
    and no frame's alpha underflows to all zeros."""
    peak = log_emission.amax(-1, keepdim=True)
    emission = probabilities(log_emission - peak)  # the likeliest shape of every frame at 1
    initial, transitions = log_initial.clamp_min(LOG_FLOOR).exp(), log_transitions.clamp_min(LOG_FLOOR).exp()
    frames = emission.shape[1]
    alphas, norms = [], []  # alpha_n(k) = p(k_n | Y_1..Y_n)
    predicted = initial.expand_as(emission[:, 0])
    for n in range(frames):
        joint = predicted * emission[:, n]
        norms.append(joint.sum(-1, keepdim=True))
        alphas.append(joint / norms[-1])
        predicted = alphas[-1] @ transitions
    counts = torch.zeros_like(transitions) if count_transitions else None
    betas = [torch.ones_like(emission[:, 0])]  # beta_n(k) = p(Y_n+1..Y_N | k_n) times a constant per frame
    for n in range(frames - 1, 0, -1):
        ahead = emission[:, n] * betas[0]  # [B, K']
        if count_transitions:
            pair = alphas[n - 1].unsqueeze(-1) * transitions * ahead.unsqueeze(1)  # p(k_n-1, k_n | Y) x a constant
            counts += (pair / pair.sum((1, 2), keepdim=True)).sum(0)
        after = ahead @ transitions.T
        betas.insert(0, after / after.sum(-1, keepdim=True))
    posterior = torch.stack(alphas, dim=1) * torch.stack(betas, dim=1)
    evidence = (torch.cat(norms, dim=-1).log() + peak[..., 0]).sum(-1)
    return posterior / posterior.sum(-1, keepdim=True), evidence, counts


def posterior_mean_sources(mixture: torch.Tensor, first: SpectralTemplatePrior, second: SpectralTemplatePrior
                           ) -> torch.Tensor:
    """E[s_1 | y], E[s_2 | y] for y = s_1 + s_2 [B, L] under two template priors -> [B, 2, L]: the factorial
    model's exact posterior mean (Benaroya, Bimbot and Gribonval), with no diffusion and no sampling, so it
    shows what a perfect posterior sampler would reach with these priors. Per frame Y | (c_1, c_2) ~
    CN(0, v_c1 + v_c2) for every pair of components; the pairs' posteriors come per frame, or for Markov
    priors by forward-backward over pairs of shapes (transitions A_1[k_1, k_1'] A_2[k_2, k_2']; an
    independent prior is the chain whose rows are its weights), and each source is the posterior-weighted
    Wiener filter v_c1 / (v_c1 + v_c2) of Y. The estimates sum to the mixture."""
    if first.n_fft != second.n_fft:
        raise ValueError(f"both template priors need the same STFT, got n_fft {first.n_fft} and {second.n_fft}")
    spec = first.stft(mixture.to(first.shapes.dtype))  # [B, N, F]
    power = spectral_power(spec)
    variances = first.component_variances(), second.component_variances()  # [C1, F], [C2, F]
    log_weights = first.log_weights.flatten(), second.log_weights.flatten()
    # log p(frame, c_1, c_2) [B, N, C1, C2], one component of the first prior at a time ([C2, F] at once)
    log_joint = torch.stack([log_weights[0][c] + log_weights[1] - (variances[0][c] + variances[1]).log().sum(-1)
                             - power @ (1 / (variances[0][c] + variances[1])).T
                             for c in range(len(variances[0]))], dim=2)
    if first.markov or second.markov:
        posterior = _pair_chain_posteriors(log_joint, first, second)
    else:
        posterior = probabilities(log_joint - torch.logsumexp(log_joint.flatten(2), dim=-1)[..., None, None])
    first_gain = sum(posterior[:, :, c] @ (variances[0][c] / (variances[0][c] + variances[1]))
                     for c in range(len(variances[0])))  # [B, N, F]
    first_source = spec * first_gain
    sources = torch.stack([first_source, spec - first_source], dim=1).flatten(0, 1)
    return first.istft(sources, mixture.shape[-1]).unflatten(0, (mixture.shape[0], 2)).to(mixture.dtype)


def _pair_chain_posteriors(log_joint: torch.Tensor, first: SpectralTemplatePrior, second: SpectralTemplatePrior
                           ) -> torch.Tensor:
    """p(c_1, c_2 | all frames) [B, N, C1, C2] from log p(frame, c_1, c_2) by forward-backward over
    the pairs of shapes; within a pair, the gains are posterior-weighted per frame."""
    batch, frames = log_joint.shape[:2]
    (k1, g1), (k2, g2) = first.log_weights.shape, second.log_weights.shape
    per_gain = log_joint.reshape(batch, frames, k1, g1, k2, g2)
    log_pair_joint = torch.logsumexp(per_gain, dim=(3, 5))  # log p(k_1) p(k_2) p(Y | k_1, k_2) [B, N, K1, K2]
    gains_given_pair = probabilities(per_gain - log_pair_joint[:, :, :, None, :, None])
    (initial_1, transitions_1), (initial_2, transitions_2) = first.shape_chain(), second.shape_chain()
    log_initial = (initial_1[:, None] + initial_2).flatten()
    log_transitions = (transitions_1[:, None, :, None] + transitions_2[None, :, None, :]).reshape(k1 * k2, k1 * k2)
    pair, _, _ = forward_backward(log_pair_joint.flatten(2) - log_initial, log_initial, log_transitions)
    return (pair.reshape(batch, frames, k1, 1, k2, 1) * gains_given_pair).reshape(log_joint.shape)
