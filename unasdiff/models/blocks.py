"""U-DiT blocks of the triple-path network, computed channels-last on x [B, H, W, C].

Parameter names and shapes follow the published priors (1x1 convolutions stay `nn.Conv2d`
so the checkpoints load unchanged); they are applied as matrix products over the last axis.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention

LN_EPS = 1e-6


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last (channel) axis, no affine parameters."""
    return F.layer_norm(x, x.shape[-1:], eps=LN_EPS)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, in one pass over x."""
    return torch.addcmul(shift, x, 1 + scale)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x + gate * h, in one pass."""
    return torch.addcmul(x, gate, h)


def glu(x: torch.Tensor) -> torch.Tensor:
    """First half of the channels gated by SiLU of the second half."""
    value, gate = x.chunk(2, dim=-1)
    return value * F.silu(gate)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution applied to channels-last x [..., C_in]."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def conv_channels_last(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Any NCHW module applied to channels-last x [B, H, W, C] (the permutes are views).

    The result is float32 even under bf16 autocast: these convs feed the residual stream, which
    stays float32 so that 40 attention layers of bf16 rounding do not accumulate in it."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).float()


def adaln(emb_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_dim))


class GatedMLP(nn.Module):
    """fc1 (W -> 4W), GLU (-> 2W), fc2 (2W -> W)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Conv2d(width, 4 * width, 1)
        self.fc2 = nn.Conv2d(2 * width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(self.fc2, glu(pointwise(self.fc1, x)))


class PathAttention(nn.Module):
    """Attention along axis 2 of x [B, S, A, W], separately for every index of axis 1, then an MLP."""

    def __init__(self, width: int, emb_dim: int, num_heads: int):
        super().__init__()
        self.sup_conv = nn.Conv2d(width, 2 * width, 1)
        self.attn = Attention(width, num_heads)
        self.mlp = GatedMLP(width)
        self.adaLN_modulation = adaln(emb_dim, 6 * width)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c)[:, None, None].chunk(6, -1)
        b, s, a, w = x.shape
        h = glu(pointwise(self.sup_conv, layer_norm(x)))
        h = modulate(layer_norm(h), shift_a, scale_a)
        h = self.attn(h.reshape(b * s, a, w)).view(b, s, a, w)
        x = gated_residual(x, gate_a, h)
        return gated_residual(x, gate_m, self.mlp(modulate(layer_norm(x), shift_m, scale_m)))


class FullBandAttention(nn.Module):
    """The third path (latent level): attention along time over tokens that each see the whole band.

    Frequency bins are folded into channels (bin f = fold*g + q -> channel c*fold + q at position g),
    squeezed to `channels` per position and flattened into one token per frame of size
    channels * bins / fold.
    """

    def __init__(self, width: int, emb_dim: int, num_heads: int, freq_bins: int, fold: int, channels: int):
        super().__init__()
        if freq_bins % fold:
            raise ValueError(f"latent frequency bins {freq_bins} are not divisible by freq_fold={fold}")
        self.fold = fold
        self.channels = channels
        token_dim = channels * (freq_bins // fold)
        self.sup_conv = nn.Conv2d(width * fold, 2 * channels, 1)
        self.recov_conv = nn.Conv2d(channels, width * fold, (3, 1), padding=(1, 0))
        self.attn = Attention(token_dim, num_heads)
        self.mlp = GatedMLP(width)
        self.adaLN_modulation_att = adaln(emb_dim, 3 * token_dim)
        self.adaLN_modulation_mlp = adaln(emb_dim, 3 * width)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, f, t, w = x.shape  # channels-last [B, F', T, W]
        r, s = self.fold, self.channels
        g = f // r
        h = layer_norm(x).view(b, g, r, t, w).permute(0, 1, 3, 4, 2).reshape(b, g, t, w * r)
        h = glu(pointwise(self.sup_conv, h))  # [B, G, T, s]
        tokens = h.permute(0, 2, 3, 1).reshape(b, t, s * g)  # token index = channel * G + position
        shift, scale, gate = self.adaLN_modulation_att(c)[:, None].chunk(3, -1)
        tokens = layer_norm(gate * self.attn(modulate(layer_norm(tokens), shift, scale)))
        h = self.recov_conv(tokens.view(b, t, s, g).permute(0, 2, 3, 1))  # NCHW [B, W*r, G, T]
        x = x + h.reshape(b, w, r, g, t).permute(0, 3, 2, 4, 1).reshape(b, f, t, w)
        shift, scale, gate = self.adaLN_modulation_mlp(c)[:, None, None].chunk(3, -1)
        return gated_residual(x, gate, self.mlp(modulate(layer_norm(x), shift, scale)))


class UDiTBlock(nn.Module):
    """[full-band time path,] frequency path, time path, on channels-last x [B, F, T, W]."""

    def __init__(self, width: int, emb_dim: int, num_heads: int, fullband: dict | None = None):
        super().__init__()
        self.fullatt = FullBandAttention(width, emb_dim, num_heads, **fullband) if fullband else None
        self.freatt = PathAttention(width, emb_dim, num_heads)
        self.timeatt = PathAttention(width, emb_dim, num_heads)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.fullatt is not None:
            x = self.fullatt(x, c)
        # one explicit layout switch each way: [B, F, T, W] <-> [B, T, F, W]
        x = self.freatt(x.transpose(1, 2).contiguous(), c).transpose(1, 2).contiguous()
        return self.timeatt(x, c)


class Resample(nn.Module):
    """3x3 conv then Pixel(Un)Shuffle(2): the U-Net's down and up steps."""

    def __init__(self, in_channels: int, out_channels: int, shuffle: nn.Module):
        super().__init__()
        self.body = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.shuffle = shuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_channels_last(lambda h: self.shuffle(self.body(h)), x)


def downsample(width: int) -> Resample:
    return Resample(width, width // 2, nn.PixelUnshuffle(2))


def upsample(width: int) -> Resample:
    return Resample(width, 2 * width, nn.PixelShuffle(2))


class FinalLayer(nn.Module):
    """adaLN(time) on LN(x), then a 3x3 conv to the 2 (real, imaginary) output channels."""

    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.adaLN_modulation = adaln(emb_dim, 2 * width)
        self.out_proj = nn.Conv2d(width, 2, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None, None].chunk(2, -1)
        return conv_channels_last(self.out_proj, modulate(layer_norm(x), shift, scale))
