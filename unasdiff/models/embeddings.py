"""Conditioning embeddings: diffusion time and class label (DiT-style)."""

import math

import torch
from torch import nn


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the time input (cosines first) followed by a 2-layer MLP."""

    def __init__(self, emb_dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(features)


class LabelEmbedder(nn.Module):
    """One row per class plus a last "null" row (the unconditional class used with label dropout)."""

    def __init__(self, num_classes: int, emb_dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, emb_dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, label: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(label)
