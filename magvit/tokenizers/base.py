"""The tokenizer contract, its registry, and release weights on disk.

A tokenizer maps a clip (B, 3, T, H, W) in [-1, 1] to token ids (B, t, h, w) and back; an image
is a clip with T = 1. Every tokenizer is an `Encoder` / quantizer / `Decoder` stack from
`magvit.tokenizers.blocks`, so the contract, the weight init and the save/load code live here once.

Release weights are a folder with `config.json` (`{"format": "magvit-tokenizer", "version": 1,
"config": {...}}`) and `model.safetensors`: plain data, no pickles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from magvit.config import PresetConfig, RegisteredConfig, build_registered, registry_field
from magvit.errors import MagvitError
from magvit.registry import Registry
from magvit.tokenizers.blocks import ConvSpec, Decoder, Encoder, Norm, ResBlock
from magvit.tokenizers.quantizers import QUANTIZERS, Quantizer, QuantizerOutput, VQConfig, build_quantizer
from magvit.weights import load_weights_folder, resolve_folder, save_weights_folder

TOKENIZERS: Registry[Tokenizer] = Registry("tokenizer")

FORMAT, VERSION = "magvit-tokenizer", 1


@dataclass(frozen=True)
class ConvTokenizerConfig(PresetConfig):
    """The keys of every tokenizer's config (vqgan2d, vq3d, causal3d): the `ConvSpec` widths and the
    quantizer, MaskGIT's and MAGVIT's VQ with 1024 codes of dim 256 unless a tokenizer changes it."""

    channels: int = 128  # width of the first stage
    multipliers: tuple[int, ...] = (1, 2, 2, 4)  # stage i is channels * multipliers[i] wide; 2^(len - 1) downsampling
    num_res_blocks: int = 2
    quantizer: RegisteredConfig = registry_field(QUANTIZERS, default=VQConfig(codebook_size=1024, dim=256))


@dataclass(frozen=True)
class Conv3dTokenizerConfig(ConvTokenizerConfig):
    """A 3D tokenizer's keys: also where its downsamplings halve time."""

    # "early" (MAGVIT, section 3.1: the first two), "late" (MAGVIT-v2, section 3.2: the last two) or one
    # flag per downsampling, True where time is halved
    temporal_downsample: Literal["early", "late"] | tuple[bool, ...] = "late"


# A dataclass on purpose: a DeepSpeed engine (0.19) opens its backward when a gradient first reaches a tensor
# it finds in its module's output (tuples, lists, dicts), once per forward; the adaptive GAN weight's
# autograd.grad through `recon` would open and close it before the optimizer's backward. The tokenizer's
# own input never needs a gradient, so ZeRO-3 does not need to see this output (its quantizer's: above).
@dataclass
class TokenizerOutput:
    recon: Tensor  # (B, 3, T, H, W), not clamped
    ids: Tensor  # (B, t, h, w) int64
    quant: QuantizerOutput  # quantized latent, quantizer loss and metrics


def check_tiling(name: str, what: str, size: int, step: int, offset: int = 0) -> None:
    """Raise unless size = offset + step * k for some k >= (1 if offset == 0 else 0)."""
    k, rest = divmod(size - offset, step)
    if rest == 0 and k >= (0 if offset else 1):
        return
    form = f"{offset} + {step}k {what}" if offset else f"{what} divisible by {step}"
    below, above = offset + step * k, offset + step * (k + 1)
    use = f"{below} or {above}" if below >= max(offset, 1) else f"{above}"
    raise MagvitError(f"{name} needs {form}, got {size}: use {use}")


# Named places to halve time, for a network of n downsamplings (len(multipliers) - 1): two of them,
# 4x in time (17 -> 5 frames causally, 16 -> 4 otherwise). MAGVIT (section 3.1) halves time in the
# first two; MAGVIT-v2 (section 3.2) defers it to the last two (the high-resolution stages then see
# every frame). With exactly two downsamplings both are temporal and the names agree.
TEMPORAL_PLACEMENTS: dict[str, Callable[[int], tuple[bool, ...]]] = {
    "early": lambda n: (True, True) + (False,) * (n - 2),
    "late": lambda n: (False,) * (n - 2) + (True, True),
}


def temporal_flags(name: str, placement: str | tuple[bool, ...], downsamplings: int) -> tuple[bool, ...]:
    """`temporal_downsample` ("early", "late" or one flag per downsampling) -> one flag per
    downsampling, True where that downsampling also halves time; MagvitError if it cannot be."""
    if isinstance(placement, str):
        if placement not in TEMPORAL_PLACEMENTS:
            raise MagvitError(
                f"{name} temporal_downsample must be {' or '.join(map(repr, TEMPORAL_PLACEMENTS))} or one flag "
                f"per downsampling ({downsamplings}), got {placement!r}"
            )
        if downsamplings < 2:
            raise MagvitError(
                f"{name} temporal_downsample {placement!r} halves time at two downsamplings but this network "
                f"has {downsamplings}: give one flag per downsampling instead"
            )
        return TEMPORAL_PLACEMENTS[placement](downsamplings)
    flags = tuple(placement)
    if len(flags) != downsamplings or not all(isinstance(f, bool) for f in flags):
        raise MagvitError(
            f"{name} temporal_downsample needs one flag per downsampling ({downsamplings}), got {list(flags)}"
        )
    return flags


def _check_architecture(config: ConvTokenizerConfig) -> None:
    name = config.name
    if (
        config.channels < 1
        or config.num_res_blocks < 1
        or not config.multipliers
        or min(config.multipliers) < 1
    ):
        raise MagvitError(
            f"{name} needs channels, num_res_blocks and multipliers >= 1, got {config.channels}, "
            f"{config.num_res_blocks}, {list(config.multipliers)}"
        )


class Tokenizer(nn.Module):
    """Encoder -> quantizer -> decoder, their `ConvSpec` read from the config: 3D for a
    `Conv3dTokenizerConfig` (its `temporal_downsample`, a placement name or flags, made one flag per
    downsampling), else 2D. A subclass passes the `ConvSpec` choices that make it (`causal`,
    `downsample`, `upsample`, `adaptive_norm`) as `layout`; everything else is shared."""

    def __init__(self, config: ConvTokenizerConfig, **layout: bool | str):
        super().__init__()
        self.config = config
        _check_architecture(config)
        temporal: tuple[bool, ...] = ()
        three_d = isinstance(config, Conv3dTokenizerConfig)
        if three_d:
            temporal = temporal_flags(config.name, config.temporal_downsample, len(config.multipliers) - 1)
        self.quantizer: Quantizer = build_quantizer(config.quantizer)
        self.spec = ConvSpec(
            nd=3 if three_d else 2, channels=config.channels,
            multipliers=tuple(config.multipliers), num_res_blocks=config.num_res_blocks,
            latent_dim=self.quantizer.dim, temporal_downsample=temporal, **layout,
        )
        self.encoder = Encoder(self.spec)
        self.decoder = Decoder(self.spec)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier convs, zero biases; the second conv of each res block starts at zero (the block
        starts as its skip path), and adaptive norms start as plain GroupNorm (scale = shift = 0)."""
        for module in [*self.encoder.modules(), *self.decoder.modules()]:
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in [*self.encoder.modules(), *self.decoder.modules()]:
            if isinstance(module, ResBlock):
                nn.init.zeros_(module.conv2.weight)
            elif isinstance(module, Norm) and module.scale is not None:
                nn.init.zeros_(module.scale.weight)
                nn.init.zeros_(module.shift.weight)

    # -- shapes ---------------------------------------------------------------------------------

    def token_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) of the tokens of a (frames, height, width) clip; MagvitError if it cannot tile."""
        f = 2 ** (len(self.spec.multipliers) - 1)
        name = self.config.name
        check_tiling(name, "height", height, f)
        check_tiling(name, "width", width, f)
        return self._token_frames(frames), height // f, width // f

    def _token_frames(self, frames: int) -> int:
        """Latent frames of a clip: (frames - lead) / 2^(temporal downsamplings) + lead, where lead = 1
        for a causal tokenizer (its first latent frame is the first frame alone, so an image is a
        one-frame video and clips have 1 + 4k frames) and 0 otherwise; 2D tokenizers keep every frame."""
        if frames < 1:
            raise MagvitError(f"{self.config.name} needs at least one frame, got {frames}")
        step = 2 ** sum(self.spec.temporal_downsample)
        lead = 1 if self.spec.causal else 0
        check_tiling(self.config.name, "frames", frames, step, offset=lead)
        return lead + (frames - lead) // step

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def _check_video(self, video: Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise MagvitError(
                f"{self.config.name} takes video (B, 3, T, H, W) in [-1, 1] (an image is T = 1), "
                f"got shape {tuple(video.shape)}"
            )
        self.token_shape(*video.shape[2:])

    # -- the model ------------------------------------------------------------------------------

    def encode_latent(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> z (B, D, t, h, w), before quantization."""
        self._check_video(video)
        return self.encoder(video)

    def decode_latent(self, quantized: Tensor) -> Tensor:
        """(B, D, t, h, w) -> video (B, 3, T, H, W), not clamped."""
        return self.decoder(quantized)

    def forward(self, video: Tensor) -> TokenizerOutput:
        quant = self.quantizer(self.encode_latent(video))
        return TokenizerOutput(recon=self.decode_latent(quant.quantized), ids=quant.ids, quant=quant)

    def encode(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> ids (B, t, h, w) int64 in [0, codebook_size)."""
        return self.quantizer(self.encode_latent(video)).ids

    def decode(self, ids: Tensor) -> Tensor:
        """ids (B, t, h, w) -> video (B, 3, T, H, W), not clamped."""
        if ids.ndim != 4 or ids.dtype.is_floating_point:
            raise MagvitError(
                f"{self.config.name}.decode takes integer ids (B, t, h, w), "
                f"got {ids.dtype} of shape {tuple(ids.shape)}"
            )
        return self.decode_latent(self.embed_ids(ids))

    def code_embeddings(self) -> Tensor:
        """(codebook_size, D): the vector of every code (for the transformer's input embedding)."""
        return self.quantizer.codebook()

    def embed_ids(self, ids: Tensor) -> Tensor:
        """ids (B, t, h, w) -> code vectors (B, D, t, h, w)."""
        return self.quantizer.embed(ids)

    def checkpoint_activations(self, enabled: bool = True) -> None:
        """Activation checkpointing per res block of the encoder and decoder (`loop.checkpointing`):
        training keeps each block's input only and recomputes the block in the backward pass."""
        self.encoder.checkpointing = self.decoder.checkpointing = enabled

    def last_layer_weight(self) -> Tensor:
        """The decoder's final conv weight (VQGAN's adaptive GAN weight uses its gradients)."""
        return self.decoder.conv_out.weight

    # -- release weights ------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `directory`, each atomically."""
        return save_weights_folder(self, directory, FORMAT, VERSION)

    @classmethod
    def from_pretrained(cls, name: str | Path, device: str | torch.device = "cpu",
                        revision: str | None = None) -> Tokenizer:
        """Rebuild a tokenizer from a `save_pretrained` folder (or a Hub id `owner/name`); called on a
        subclass (`VQ3d.from_pretrained`), the folder must hold that kind. MagvitError if anything
        does not match."""
        directory = resolve_folder(name, revision)
        return load_weights_folder(directory, TOKENIZERS, FORMAT, VERSION, "tokenizer", device, kind=cls)


def build_tokenizer(name: str, preset: str = "tiny", **overrides: object) -> Tokenizer:
    """`build_tokenizer("vq3d", "base", quantizer={"name": "fsq"})`; keys validated like a config."""
    config = build_registered(
        TOKENIZERS, {"name": name, "preset": preset, **overrides}, source="build_tokenizer"
    )
    return TOKENIZERS[name].build(config)
