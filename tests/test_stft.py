"""The half-overlap STFT against torch.stft / torch.istft: values and gradients, awkward lengths included."""

import pytest
import torch

from unasdiff.stft import HalfOverlapSTFT, magnitude, power

# (n_fft, length): the template prior's size, a network's, lengths not a multiple of the hop, barely above it
SIZES = [(2048, 64000), (512, 16000), (16, 50), (16, 48), (8, 9)]


def torch_stft(x, window):
    n_fft = len(window)
    return torch.stft(x, n_fft, n_fft // 2, window=window, center=True, return_complex=True).transpose(1, 2)


def torch_istft(spec, window, length):
    n_fft = len(window)
    return torch.istft(spec.transpose(1, 2), n_fft, n_fft // 2, window=window, center=True, length=length)


@pytest.mark.parametrize("n_fft,length", SIZES)
def test_stft_and_its_gradient_equal_torch(n_fft, length):
    torch.manual_seed(0)
    window = torch.hann_window(n_fft, dtype=torch.float64) ** 0.5
    x = torch.randn(3, length, dtype=torch.float64, requires_grad=True)
    expected, got = torch_stft(x, window), HalfOverlapSTFT(window).stft(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    probe = torch.randn_like(expected)
    want, = torch.autograd.grad((expected * probe.conj()).real.sum(), x)
    have, = torch.autograd.grad((got * probe.conj()).real.sum(), x)
    torch.testing.assert_close(have, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n_fft,length", SIZES)
def test_istft_and_its_gradient_equal_torch(n_fft, length):
    torch.manual_seed(1)
    window = torch.hann_window(n_fft, dtype=torch.float64) ** 0.5
    frames = 1 + length // (n_fft // 2)
    # a spectrum no signal has (imaginary DC and Nyquist bins included): the inverse is a projection
    spec = torch.randn(2, frames, n_fft // 2 + 1, dtype=torch.complex128, requires_grad=True)
    expected, got = torch_istft(spec, window, length), HalfOverlapSTFT(window).istft(spec, length)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    probe = torch.randn_like(expected)
    want, = torch.autograd.grad((expected * probe).sum(), spec)
    have, = torch.autograd.grad((got * probe).sum(), spec)
    torch.testing.assert_close(have, want, rtol=0, atol=1e-10)


def test_istft_inverts_stft_in_float32():
    window = torch.hann_window(512) ** 0.5
    transform = HalfOverlapSTFT(window)
    x = torch.randn(2, 8001)
    torch.testing.assert_close(transform.istft(transform.stft(x), 8001), x, rtol=0, atol=1e-5)


def test_istft_rejects_a_frame_count_that_does_not_make_the_length():
    transform = HalfOverlapSTFT(torch.hann_window(16))
    with pytest.raises(ValueError, match="frames do not make"):
        transform.istft(torch.zeros(1, 5, 9, dtype=torch.complex64), 100)


def test_odd_window_is_rejected():
    with pytest.raises(ValueError, match="even length"):
        HalfOverlapSTFT(torch.hann_window(15))


def test_magnitude_and_its_gradient_equal_abs_with_zero_bins():
    torch.manual_seed(2)
    spec = torch.randn(4, 7, dtype=torch.complex128)
    spec[0, :3] = 0  # abs has a kink there; torch's subgradient is 0
    a = spec.clone().requires_grad_()
    b = spec.clone().requires_grad_()
    torch.testing.assert_close(magnitude(a), a.abs(), rtol=0, atol=1e-14)
    probe = torch.randn(4, 7, dtype=torch.float64)
    have, = torch.autograd.grad((magnitude(a) * probe).sum(), a)
    want, = torch.autograd.grad((b.abs() * probe).sum(), b)
    torch.testing.assert_close(have, want, rtol=0, atol=1e-14)
    assert torch.isfinite(have).all() and (have[0, :3] == 0).all()


def test_power_and_its_gradient_equal_abs_squared():
    torch.manual_seed(3)
    spec = torch.randn(3, 5, dtype=torch.complex128)
    a, b = spec.clone().requires_grad_(), spec.clone().requires_grad_()
    torch.testing.assert_close(power(a), b.abs() ** 2, rtol=0, atol=1e-12)
    probe = torch.randn(3, 5, dtype=torch.float64)
    have, = torch.autograd.grad((power(a) * probe).sum(), a)
    want, = torch.autograd.grad((b.abs() ** 2 * probe).sum(), b)
    torch.testing.assert_close(have, want, rtol=0, atol=1e-12)
