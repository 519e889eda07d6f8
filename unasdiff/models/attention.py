"""Multi-head self-attention with rotary positions, on sequences [N, S, D].

The kernel is `scaled_dot_product_attention` (flash/memory-efficient kernels on GPU, a fused kernel
on CPU). The flash-attn package is used instead only when it is installed, the tensors are on CUDA
in half precision, and the head size is one it supports.
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn

try:  # optional extra: pip install unasdiff[flash]
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - depends on the environment
    flash_attn_func = None


@functools.lru_cache(maxsize=64)
def _rotations(length: int, head_dim: int, device: torch.device) -> torch.Tensor:
    """exp(i p 10000^(-2j/d)) for positions p and pairs j, computed in float32: complex [S, 1, d/2]."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None]
    return torch.polar(torch.ones_like(angles), angles)[:, None, :]


def apply_rope(x: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (2j, 2j+1) of each head vector of x [N, S, H, d] by its position:
    each pair is a complex number multiplied by exp(i * angle), in one pass."""
    n, s, h, d = x.shape
    pairs = torch.view_as_complex(x.float().reshape(n, s, h, d // 2, 2))
    return torch.view_as_real(pairs * _rotations(s, d, x.device)).reshape(n, s, h, d).to(x.dtype)


def _use_flash_attn(q: torch.Tensor) -> bool:
    return (
        flash_attn_func is not None
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and q.shape[-1] % 8 == 0
        and q.shape[-1] <= 256
    )


class Attention(nn.Module):
    """softmax(q k^T / sqrt(d)) v over the S axis of x [N, S, D], with RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, dim = x.shape
        qkv = self.to_qkv(x).view(n, s, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.unbind(2)  # each [N, S, H, d]
        q, k = apply_rope(q), apply_rope(k)
        if _use_flash_attn(q):
            out = flash_attn_func(q, k, v.to(q.dtype))  # [N, S, H, d]
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            out = out.transpose(1, 2)
        return self.to_out(out.reshape(n, s, dim))
