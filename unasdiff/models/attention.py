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
def _rotations(length: int, heads: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of the angles p 10000^(-2j/d) for positions p and pairs j, in float32, each
    [S, H, d]: both entries of pair j carry its angle, and the sin is negated on the first entry.

    Stored whole (not broadcast over H, not d/2 wide) so that the products in apply_rope run over
    contiguous rows: broadcasting a last axis of d/2 = 4 made them 4x slower than this on CPU."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None]
    angles = angles.repeat_interleave(2, dim=-1)[:, None, :].expand(length, heads, head_dim)
    sign = torch.tensor([-1.0, 1.0], device=device).repeat(head_dim // 2)
    return torch.cos(angles).contiguous(), (torch.sin(angles) * sign).contiguous()


def apply_rope(x: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (a, b) = (x[2j], x[2j+1]) of each head vector of x [N, S, H, d] by its
    position: (a cos - b sin, b cos + a sin), the complex product (a + ib) exp(i angle) in real
    arithmetic (inductor compiles no complex products)."""
    n, s, h, d = x.shape
    cos, signed_sin = _rotations(s, h, d, x.device)
    x32 = x.float().contiguous()  # q and k are strided views of qkv; one copy makes every product below dense
    swapped = x32.view(n, s, h, d // 2, 2).flip(-1).reshape(n, s, h, d)  # (b, a) in each pair
    return (x32 * cos + swapped * signed_sin).to(x.dtype)


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
