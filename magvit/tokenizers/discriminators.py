"""Discriminators for tokenizer training: clips (B, 3, T, H, W) in [-1, 1] -> logits.

- `patchgan2d`: pix2pix's PatchGAN (Isola et al. 2017) applied to each frame (VQGAN, MaskGIT):
  logits (B T, 1, h, w), one per overlapping patch.
- `patchgan3d`: the same with (3, 4, 4) kernels over time too (MAGVIT-v2 mentions a 3D PatchGAN):
  logits (B, 1, t, h, w).
- `stylegan3d`: a StyleGAN2-style residual discriminator with 3D convs and blur-pool
  downsampling (MAGVIT section 3.1, MAGVIT-v2): one logit per clip (B, 1).

Any number of frames works, T = 1 (images) included: PatchGAN's temporal kernel 3 with padding 1
keeps at least one frame, and StyleGAN blocks only downsample axes longer than one. Norms are
GroupNorm (not BatchNorm), so a sample's logit never depends on the rest of the batch: real and
fake clips can share one forward pass, on any number of processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from magvit.config import PresetConfig, RegisteredConfig
from magvit.errors import MagvitError
from magvit.registry import Registry
from magvit.tokenizers.blocks import group_norm

DISCRIMINATORS: Registry[nn.Module] = Registry("discriminator")


def _check_clip(name: str, video: Tensor, min_side: int) -> None:
    if video.ndim != 5 or video.shape[1] != 3:
        raise MagvitError(f"{name} takes clips (B, 3, T, H, W) (an image is T = 1), got shape {tuple(video.shape)}")
    if min(video.shape[-2:]) < min_side:
        raise MagvitError(
            f"{name} needs frames of at least {min_side}x{min_side} pixels, got {tuple(video.shape[-2:])}; "
            "use fewer layers (discriminator.num_layers)"
        )


# ---------------------------------------------------------------------------------------------
# PatchGAN, 2D per frame or 3D


@dataclass(frozen=True)
class PatchGAN2dConfig(PresetConfig):
    name: str = "patchgan2d"
    channels: int = 64
    num_layers: int = 3  # stride-2 convs: a 70x70 receptive field at 3 (pix2pix)
    max_multiplier: int = 8  # widths channels * min(2^i, max_multiplier)


@dataclass(frozen=True)
class PatchGAN3dConfig(PatchGAN2dConfig):
    """The 2D PatchGAN's keys, and how many of its stride-2 convs also halve time."""

    name: str = "patchgan3d"
    temporal_downsample: int = 2  # the first this many stride-2 convs also halve time


class PatchGAN(nn.Module):
    """conv(4, s2) lrelu -> [conv(4, s2) GN lrelu] x (n - 1) -> conv(4, s1) GN lrelu -> conv(4, s1) to 1.

    3D kernels are (3, 4, 4) with temporal padding 1, so T = 1 stays one frame; the 2D version
    folds time into the batch and judges each frame on its own.
    """

    def __init__(self, config: PatchGAN2dConfig | PatchGAN3dConfig):
        super().__init__()
        if config.channels < 1 or config.num_layers < 1 or config.max_multiplier < 1:
            raise MagvitError(
                f"{config.name} needs channels, num_layers and max_multiplier >= 1, got "
                f"{config.channels}, {config.num_layers}, {config.max_multiplier}"
            )
        self.config = config
        self.nd = 3 if isinstance(config, PatchGAN3dConfig) else 2
        widths = [config.channels * min(2**i, config.max_multiplier) for i in range(config.num_layers + 1)]
        layers: list[nn.Module] = [self._conv(3, widths[0], stride=2, layer=0), nn.LeakyReLU(0.2)]
        for i in range(1, config.num_layers + 1):
            last = i == config.num_layers  # the stride-1 conv before the logits
            layers += [
                self._conv(widths[i - 1], widths[i], stride=1 if last else 2, layer=i),
                group_norm(widths[i]),
                nn.LeakyReLU(0.2),
            ]
        layers.append(self._conv(widths[-1], 1, stride=1, layer=config.num_layers + 1))
        self.net = nn.Sequential(*layers)
        self.init_weights()

    def _conv(self, cin: int, cout: int, stride: int, layer: int) -> nn.Module:
        if self.nd == 2:
            return nn.Conv2d(cin, cout, 4, stride=stride, padding=1)
        st = stride if layer < self.config.temporal_downsample else 1
        return nn.Conv3d(cin, cout, (3, 4, 4), stride=(st, stride, stride), padding=1)

    def init_weights(self) -> None:
        """pix2pix: conv weights N(0, 0.02), zero biases; GroupNorm scale 1, shift 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> logits (B T, 1, h, w) in 2D or (B, 1, t, h, w) in 3D."""
        # n stride-2 convs, then two stride-1 convs that each take one pixel off
        _check_clip(self.config.name, video, 3 * 2**self.config.num_layers)
        x = rearrange(video, "b c t h w -> (b t) c h w") if self.nd == 2 else video
        return self.net(x)


DISCRIMINATORS.register("patchgan2d", PatchGAN2dConfig, help="PatchGAN on each frame (VQGAN, MaskGIT)")(PatchGAN)
DISCRIMINATORS.register("patchgan3d", PatchGAN3dConfig, help="3D PatchGAN over space and time")(PatchGAN)


# ---------------------------------------------------------------------------------------------
# StyleGAN-style 3D residual discriminator


@dataclass(frozen=True)
class StyleGAN3dConfig(PresetConfig):
    name: str = "stylegan3d"
    channels: int = 64
    multipliers: tuple[int, ...] = (2, 4, 4, 4, 4)  # one downsampling res block each: 128x128 -> 4x4
    blur: bool = True  # blur-pool (StyleGAN2 [1, 3, 3, 1] filter) or plain 2x average pooling


def downsample(x: Tensor, blur: bool) -> Tensor:
    """(B, C, T, H, W) -> each axis longer than one halved (odd lengths rounded down with blur, up without).

    Blur: a separable [1, 3, 3, 1] / 8 low-pass filter with stride 2 (anti-aliased, StyleGAN2);
    otherwise 2x average pooling. Axes of length one (a single frame) are left alone.
    """
    down = [size > 1 for size in x.shape[2:]]  # (time, height, width)
    if not blur:
        factors = tuple(2 if d else 1 for d in down)
        return F.avg_pool3d(x, factors, factors, ceil_mode=True)
    taps = x.new_tensor([1.0, 3.0, 3.0, 1.0]) / 8
    one = x.new_ones(1)
    k_t, k_h, k_w = (taps if d else one for d in down)
    kernel = k_t[:, None, None] * k_h[None, :, None] * k_w[None, None, :]  # (kt, kh, kw)
    kernel = kernel.expand(x.shape[1], 1, *kernel.shape)  # depthwise: (C, 1, kt, kh, kw)
    return F.conv3d(
        x, kernel, stride=tuple(2 if d else 1 for d in down), padding=tuple(1 if d else 0 for d in down),
        groups=x.shape[1],
    )


class DownBlock(nn.Module):
    """conv3 lrelu -> downsample -> conv3 lrelu, plus a downsample -> 1x1 conv skip; sum / sqrt 2."""

    def __init__(self, cin: int, cout: int, blur: bool):
        super().__init__()
        self.blur = blur
        self.conv1 = nn.Conv3d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv3d(cin, cout, 3, padding=1)
        self.skip = nn.Conv3d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.conv2(downsample(h, self.blur)), 0.2)
        return (h + self.skip(downsample(x, self.blur))) / math.sqrt(2)


class StyleGAN3d(nn.Module):
    """conv_in -> DownBlocks -> conv lrelu -> pool to (1, 4, 4) -> dense lrelu -> dense to one logit.

    The pooling to a fixed (1, 4, 4) grid before the dense head (StyleGAN2's head sees 4x4) is
    what lets one network judge images and clips of any length. No minibatch-stddev layer: it
    would mix the samples of a batch (see the module docstring).
    """

    def __init__(self, config: StyleGAN3dConfig):
        super().__init__()
        if config.channels < 1 or not config.multipliers or min(config.multipliers) < 1:
            raise MagvitError(
                f"stylegan3d needs channels and multipliers >= 1, got {config.channels}, {list(config.multipliers)}"
            )
        self.config = config
        widths = [config.channels, *(config.channels * m for m in config.multipliers)]
        self.conv_in = nn.Conv3d(3, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(DownBlock(a, b, config.blur) for a, b in zip(widths[:-1], widths[1:]))
        self.conv_out = nn.Conv3d(widths[-1], widths[-1], 3, padding=1)
        self.fc = nn.Linear(widths[-1] * 16, widths[-1])
        self.logit = nn.Linear(widths[-1], 1)
        self.init_weights()

    def init_weights(self) -> None:
        """He init for leaky ReLU(0.2) on every conv and dense layer, zero biases; the logit layer
        starts small so the first GAN gradients are gentle."""
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, a=0.2, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.logit.weight, 0.0, 0.01)

    def forward(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> logits (B, 1)."""
        _check_clip(self.config.name, video, 1)
        x = F.leaky_relu(self.conv_in(video), 0.2)
        for block in self.blocks:
            x = block(x)
        x = F.leaky_relu(self.conv_out(x), 0.2)
        x = F.adaptive_avg_pool3d(x, (1, 4, 4))  # (B, C, 1, 4, 4)
        x = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        return self.logit(x)


DISCRIMINATORS.register("stylegan3d", StyleGAN3dConfig, help="StyleGAN-style residual 3D discriminator (MAGVIT)")(
    StyleGAN3d
)


def build_discriminator(cfg: RegisteredConfig) -> nn.Module:
    """Build the discriminator a registered config dataclass describes (its `name` picks the entry)."""
    return DISCRIMINATORS[cfg.name].build(cfg)


# CPU tests use `tiny`; `base` is the size the paper-sized configs train with
PatchGAN2dConfig.PRESETS = {
    "tiny": dict(channels=8, num_layers=2, max_multiplier=4),
    "base": dict(channels=64, num_layers=3, max_multiplier=8),
}
# the same sizes, time halved by the first two stride-2 convs
PatchGAN3dConfig.PRESETS = {
    name: dict(sizes, temporal_downsample=2) for name, sizes in PatchGAN2dConfig.PRESETS.items()
}
StyleGAN3dConfig.PRESETS = {
    "tiny": dict(channels=8, multipliers=(2, 4, 4), blur=True),
    "base": dict(channels=64, multipliers=(2, 4, 4, 4, 4), blur=True),
}
