"""The convolutional encoder and decoder every tokenizer is made of, in 2D or 3D.

One implementation, parametrised by `ConvSpec`, so that a 3D network has a 2D twin with the same
parameter names and shapes up to the temporal axis of its kernels: MAGVIT (section 3.1)
initialises its 3D-VQ by inflating a trained 2D VQGAN. All networks take and return clips
(B, C, T, H, W); the 2D ones fold time into the batch and see one frame at a time.

Layout (MaskGIT's VQGAN, MAGVIT's 3D-VQ, MAGVIT-v2's causal tokenizer alike):
  encoder: conv_in -> per stage [res blocks, downsample (not after the last)] -> mid res blocks
           -> GroupNorm -> swish -> 1x1 conv to the quantizer's dim
  decoder: conv_in -> mid res blocks -> per stage, deepest first [res blocks, upsample (not after
           the shallowest)] -> GroupNorm -> swish -> conv_out to RGB
A res block is GroupNorm -> swish -> conv -> GroupNorm -> swish -> conv, plus a 1x1 skip where
the width changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from magvit.runtime import run_block


@dataclass(frozen=True)
class ConvSpec:
    nd: Literal[2, 3]
    channels: int  # width of the first stage; stage i has channels * multipliers[i]
    multipliers: tuple[int, ...]
    num_res_blocks: int
    latent_dim: int  # channels of z: the quantizer's dim
    temporal_downsample: tuple[bool, ...] = ()  # 3D: one flag per downsampling (len(multipliers) - 1)
    causal: bool = False  # 3D: pad k_t - 1 frames before and none after; norms per frame (MAGVIT-v2)
    downsample: Literal["avgpool", "conv"] = "avgpool"
    upsample: Literal["nearest", "depth_to_space"] = "nearest"
    adaptive_norm: bool = False  # decoder norms take scale and shift from the quantized latent

    def strides(self, i: int) -> tuple[int, ...]:
        """Factor of downsampling i, (time, height, width) in 3D or (height, width) in 2D."""
        if self.nd == 2:
            return (2, 2)
        return (2 if self.temporal_downsample[i] else 1, 2, 2)


def group_norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6, affine=affine)


class CausalConv3d(nn.Conv3d):
    """3D conv whose output frame t sees input frames <= t: the first frame is replicated k_t - 1
    times in front (a still past), so an image is encoded like the first frame of a clip."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: tuple[int, ...] = (1, 1, 1)):
        super().__init__(cin, cout, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W) -> (B, C', 1 + (T - 1) // s_t, H', W')
        past = x[:, :, :1].expand(-1, -1, self.kernel_size[0] - 1, -1, -1)
        return super().forward(torch.cat([past, x], dim=2))


def make_conv(
    spec: ConvSpec, cin: int, cout: int, kernel: int = 3, stride: tuple[int, ...] | None = None
) -> nn.Module:
    stride = stride or (1,) * spec.nd
    if spec.nd == 2:
        return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
    if spec.causal:
        return CausalConv3d(cin, cout, kernel, stride)
    return nn.Conv3d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def resize_latent(z: Tensor, size: tuple[int, ...], causal: bool) -> Tensor:
    """Nearest-neighbour resize of z (B, D, *S) to a feature map's size.

    Causal time: latent frame 0 covers frame 0 alone and frame j >= 1 the next r frames, so the
    first frame is kept once and the others repeated r times; a feature frame never sees a later
    latent frame.
    """
    if causal and z.ndim == 5 and z.shape[2] > 1 and size[0] != z.shape[2]:
        r = (size[0] - 1) // (z.shape[2] - 1)
        z = torch.cat([z[:, :, :1], z[:, :, 1:].repeat_interleave(r, dim=2)], dim=2)
    return F.interpolate(z, size=size, mode="nearest")


class Norm(nn.Module):
    """GroupNorm. Causal: statistics per frame, so no frame sees another. Adaptive (MAGVIT-v2
    decoder): affine-free, then x * (1 + scale(z)) + shift(z) with z the quantized latent."""

    def __init__(self, spec: ConvSpec, channels: int, adaptive: bool = False):
        super().__init__()
        self.per_frame = spec.nd == 3 and spec.causal
        self.norm = group_norm(channels, affine=not adaptive)
        self.scale = make_conv(spec, spec.latent_dim, channels, kernel=1) if adaptive else None
        self.shift = make_conv(spec, spec.latent_dim, channels, kernel=1) if adaptive else None

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        if self.per_frame:
            t = x.shape[2]
            h = rearrange(
                self.norm(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", t=t
            )
        else:
            h = self.norm(x)
        if self.scale is None:
            return h
        z = resize_latent(z, x.shape[2:], causal=self.per_frame)
        return h * (1 + self.scale(z)) + self.shift(z)


class ResBlock(nn.Module):
    def __init__(self, spec: ConvSpec, cin: int, cout: int, adaptive: bool = False):
        super().__init__()
        self.norm1 = Norm(spec, cin, adaptive)
        self.conv1 = make_conv(spec, cin, cout)
        self.norm2 = Norm(spec, cout, adaptive)
        self.conv2 = make_conv(spec, cout, cout)
        self.skip = make_conv(spec, cin, cout, kernel=1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x, z)))
        h = self.conv2(F.silu(self.norm2(h, z)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Average pooling (MaskGIT, MAGVIT) or a strided conv (MAGVIT-v2; causal in time: T = 1 + 2k
    -> 1 + k, the first frame alone)."""

    def __init__(self, spec: ConvSpec, channels: int, stride: tuple[int, ...]):
        super().__init__()
        self.stride = stride
        self.conv = make_conv(spec, channels, channels, stride=stride) if spec.downsample == "conv" else None

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is not None:
            return self.conv(x)
        pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool3d
        return pool(x, self.stride, self.stride)


class Upsample(nn.Module):
    """Nearest-neighbour + conv (MaskGIT, MAGVIT), or depth-to-space (MAGVIT-v2): a conv to C * r
    channels rearranged into r = r_t r_h r_w positions; causal time drops the leading extra frame
    so that 1 + k latent frames become 1 + 2k."""

    def __init__(self, spec: ConvSpec, channels: int, factor: tuple[int, ...]):
        super().__init__()
        self.factor, self.causal = factor, spec.causal
        self.depth_to_space = spec.upsample == "depth_to_space"
        self.conv = make_conv(spec, channels, channels * (math.prod(factor) if self.depth_to_space else 1))

    def forward(self, x: Tensor) -> Tensor:
        if not self.depth_to_space:
            return self.conv(F.interpolate(x, scale_factor=self.factor, mode="nearest"))
        h = self.conv(x)
        if h.ndim == 4:
            rh, rw = self.factor
            return rearrange(h, "b (c rh rw) h w -> b c (h rh) (w rw)", rh=rh, rw=rw)
        rt, rh, rw = self.factor
        h = rearrange(h, "b (c rt rh rw) t h w -> b c (t rt) (h rh) (w rw)", rt=rt, rh=rh, rw=rw)
        return h[:, :, rt - 1 :] if self.causal else h


def _fold(spec: ConvSpec, x: Tensor) -> Tensor:
    """2D networks see frames: (B, C, T, H, W) -> (B T, C, H, W)."""
    return rearrange(x, "b c t h w -> (b t) c h w") if spec.nd == 2 else x


def _unfold(spec: ConvSpec, x: Tensor, batch: int) -> Tensor:
    return rearrange(x, "(b t) c h w -> b c t h w", b=batch) if spec.nd == 2 else x


class Encoder(nn.Module):
    def __init__(self, spec: ConvSpec):
        super().__init__()
        self.spec = spec
        widths = [spec.channels * m for m in spec.multipliers]
        self.conv_in = make_conv(spec, 3, spec.channels)
        self.stages = nn.ModuleList()
        cin = spec.channels
        for i, width in enumerate(widths):
            stage = nn.Module()
            stage.blocks = nn.ModuleList(
                ResBlock(spec, cin if j == 0 else width, width) for j in range(spec.num_res_blocks)
            )
            stage.down = Downsample(spec, width, spec.strides(i)) if i < len(widths) - 1 else nn.Identity()
            self.stages.append(stage)
            cin = width
        self.mid = nn.ModuleList(ResBlock(spec, cin, cin) for _ in range(spec.num_res_blocks))
        self.norm_out = Norm(spec, cin)
        self.conv_out = make_conv(spec, cin, spec.latent_dim, kernel=1)
        self.checkpointing = False  # recompute each res block's activations in backward (`loop.checkpointing`)

    def forward(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> z (B, D, t, h, w)."""
        x = self.conv_in(_fold(self.spec, video))
        for stage in self.stages:
            for block in stage.blocks:
                x = run_block(block, x, checkpointing=self.checkpointing)
            x = stage.down(x)
        for block in self.mid:
            x = run_block(block, x, checkpointing=self.checkpointing)
        z = self.conv_out(F.silu(self.norm_out(x)))
        return _unfold(self.spec, z, video.shape[0])


class Decoder(nn.Module):
    def __init__(self, spec: ConvSpec):
        super().__init__()
        self.spec = spec
        adaptive = spec.adaptive_norm
        widths = [spec.channels * m for m in spec.multipliers]
        cin = widths[-1]
        self.conv_in = make_conv(spec, spec.latent_dim, cin)
        self.mid = nn.ModuleList(ResBlock(spec, cin, cin, adaptive) for _ in range(spec.num_res_blocks))
        self.stages = nn.ModuleList()
        for i in reversed(range(len(widths))):
            stage = nn.Module()
            stage.blocks = nn.ModuleList(
                ResBlock(spec, cin if j == 0 else widths[i], widths[i], adaptive)
                for j in range(spec.num_res_blocks)
            )
            stage.up = Upsample(spec, widths[i], spec.strides(i - 1)) if i > 0 else nn.Identity()
            self.stages.append(stage)
            cin = widths[i]
        self.norm_out = Norm(spec, cin, adaptive)
        self.conv_out = make_conv(spec, cin, 3)
        self.checkpointing = False  # as the encoder's

    def forward(self, quantized: Tensor) -> Tensor:
        """(B, D, t, h, w) -> video (B, 3, T, H, W)."""
        z = _fold(self.spec, quantized)
        cond = z if self.spec.adaptive_norm else None
        x = self.conv_in(z)
        for block in self.mid:
            x = run_block(block, x, cond, checkpointing=self.checkpointing)
        for stage in self.stages:
            for block in stage.blocks:
                x = run_block(block, x, cond, checkpointing=self.checkpointing)
            x = stage.up(x)
        video = self.conv_out(F.silu(self.norm_out(x, cond)))
        return _unfold(self.spec, video, quantized.shape[0])
