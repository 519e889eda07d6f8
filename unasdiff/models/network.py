"""The TF-domain triple-path self-attention U-Net that predicts the diffusion noise of a waveform.

waveform [B, L] -> STFT -> (real, imag) -> U-Net of U-DiT blocks conditioned on (time, label)
-> (real, imag) -> iSTFT -> eps [B, L], operation for operation as the reference implementation
(https://github.com/RunwuShi/unasdiff), so that the published checkpoints load and match.
"""

from contextlib import nullcontext

import torch
from torch import nn

from .blocks import FinalLayer, UDiTBlock, conv_channels_last, downsample, upsample
from .embeddings import LabelEmbedder, TimestepEmbedder

# The U-Net works on frame counts divisible by 4 (two 2x down-samplings).
FRAME_MULTIPLE = 4


class TriplePathUNet(nn.Module):
    """Noise predictor `net(x [B, L], t [B], label [B] | None) -> eps [B, L]`.

    `t` is the time input as the published priors take it (5 x step index for T = 200);
    `label` indexes the class table (None -> label 0, as in the reference).
    `precision="bf16"` runs the U-Net under bfloat16 autocast (STFT and iSTFT stay float32);
    `"auto"` means bf16 on CUDA and float32 elsewhere.
    """

    def __init__(
        self,
        hidden_size: int = 72,
        emb_dim: int = 128,
        num_heads: int = 4,
        num_classes: int = 1,
        n_fft: int = 510,
        hop_length: int = 255,
        win_length: int = 510,
        depths: tuple = (2, 4, 8, 4, 2),
        freq_fold: int = 4,
        fullband_channels: int = 16,
        precision: str = "auto",
    ):
        super().__init__()
        freq_bins = n_fft // 2 + 1
        if freq_bins % FRAME_MULTIPLE:
            raise ValueError(f"n_fft={n_fft} gives {freq_bins} bins; the U-Net needs a multiple of 4 (n_fft = 4k + 2)")
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
        if len(depths) != 5:
            raise ValueError(f"depths must list 5 levels (enc1, enc2, latent, dec2, dec1), got {list(depths)}")
        self.num_classes = num_classes
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.precision = precision
        self.register_buffer("window", torch.hann_window(win_length) ** 0.5, persistent=False)

        c, e, h = hidden_size, emb_dim, num_heads
        fullband = dict(freq_bins=freq_bins // 4, fold=freq_fold, channels=fullband_channels)
        d1, d2, d3, d4, d5 = depths

        def level(width, depth, full=None):
            return nn.ModuleList(UDiTBlock(width, e, h, full) for _ in range(depth))

        self.conv_1 = nn.Conv2d(2, c, 3, padding=1, bias=False)
        for i in range(1, 6):
            self.add_module(f"t_embedder_{i}", TimestepEmbedder(e))
            self.add_module(f"y_embedder_{i}", LabelEmbedder(num_classes, e))
        self.encoder_level_1 = level(c, d1)
        self.down1_2 = downsample(c)
        self.encoder_level_2 = level(2 * c, d2)
        self.down2_3 = downsample(2 * c)
        self.latent = level(4 * c, d3, fullband)
        self.up3_2 = upsample(4 * c)
        self.reduce_chan_level2 = nn.Conv2d(4 * c, 2 * c, 1)
        self.decoder_level_2 = level(2 * c, d4)
        self.up2_1 = upsample(2 * c)
        self.reduce_chan_level1 = nn.Conv2d(2 * c, c, 1)
        self.decoder_level_1 = level(c, d5)
        self.t_embedder_out = TimestepEmbedder(e)
        self.out_conv = nn.Conv2d(c, c, 3, padding=1)
        self.final_layer = FinalLayer(c, e)
        self.reset_parameters()

    @property
    def null_label(self) -> int:
        """Index of the unconditional class row (trained by label dropout)."""
        return self.num_classes

    def reset_parameters(self):
        """Xavier-uniform weights and zero biases; adaLN and the output conv start at zero (DiT),
        so every block starts as the identity and the initial prediction is 0."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for name, module in self.named_modules():
            if name.endswith(("adaLN_modulation", "adaLN_modulation_att", "adaLN_modulation_mlp")):
                nn.init.zeros_(module[1].weight)
                nn.init.zeros_(module[1].bias)
        nn.init.zeros_(self.final_layer.out_proj.weight)

    def _autocast(self, device: torch.device):
        bf16 = self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, L], got shape {tuple(x.shape)}")
        batch, length = x.shape
        if length < self.n_fft:
            raise ValueError(f"input of {length} samples is shorter than one STFT frame (n_fft={self.n_fft})")
        t = torch.as_tensor(t, device=x.device).expand(batch)
        label = torch.zeros(batch, dtype=torch.long, device=x.device) if label is None else label
        label = torch.as_tensor(label, device=x.device).expand(batch)

        frames = length // self.hop_length + 1
        padding = (-frames) % FRAME_MULTIPLE * self.hop_length
        x = torch.nn.functional.pad(x.float(), (0, padding))
        spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window,
                          center=True, return_complex=True)
        with self._autocast(x.device):
            out = self._unet(torch.view_as_real(spec), t, label)  # [B, F, T, 2], channels-last
        out = torch.view_as_complex(out.float().contiguous())
        wave = torch.istft(out, self.n_fft, self.hop_length, self.win_length, self.window,
                           center=True, length=length + padding)
        return wave[:, :length]

    def _unet(self, spec: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        cond = [getattr(self, f"t_embedder_{i}")(t) + getattr(self, f"y_embedder_{i}")(label) for i in range(1, 6)]

        def run(blocks, x, c):
            for block in blocks:
                x = block(x, c)
            return x

        x = conv_channels_last(self.conv_1, spec)
        enc1 = run(self.encoder_level_1, x, cond[0])
        enc2 = run(self.encoder_level_2, self.down1_2(enc1), cond[1])
        x = run(self.latent, self.down2_3(enc2), cond[2])
        x = conv_channels_last(self.reduce_chan_level2, torch.cat([self.up3_2(x), enc2], dim=-1))
        x = run(self.decoder_level_2, x, cond[3])
        x = conv_channels_last(self.reduce_chan_level1, torch.cat([self.up2_1(x), enc1], dim=-1))
        x = run(self.decoder_level_1, x, cond[4])
        x = conv_channels_last(self.out_conv, x)
        return self.final_layer(x, self.t_embedder_out(t))
