"""Perceptual metrics that need pretrained networks: LPIPS, FVD (I3D) and FID (Inception).

Nothing here downloads. LPIPS (Zhang et al. 2018) ships its small linear heads inside the `lpips`
package, but its AlexNet backbone comes from torchvision's pretrained weights: the bench checks
that file in the torch hub cache before building, and reports "n/a" with the reason otherwise.
FVD and FID run only on a local weight file the user passes:

- `--i3d PATH` (video): a TorchScript I3D (the common `i3d_torchscript.pt`, called with
  `rescale=False, resize=True, return_features=True` on clips in [-1, 1], or any scripted module
  mapping (B, 3, T, H, W) in [-1, 1] to (B, D)), or a `.safetensors` state dict of the Inception-I3D
  below (parameter names of the widely used PyTorch port; clips resized to 224x224; feature = the
  400 Kinetics logits averaged over the clip, as in the FVD paper).
- `--inception PATH` (frames): a TorchScript module mapping (N, 3, H, W) in [-1, 1] to (N, D) (or
  NVIDIA's `inception-2015-12-05.pt`, which takes uint8 with `return_features=True`), or a
  `.safetensors` state dict of torchvision's `inception_v3` (frames resized to 299x299; feature =
  the 2048-d pool output). The same file gives the Inception score's class probabilities
  (`load_image_probabilities`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from magvit.errors import MagvitError

Extractor = Callable[[Tensor], Tensor]  # clips or frames in [-1, 1] -> features (N, D) float32


# ---------------------------------------------------------------------------------------------
# LPIPS


# torchvision's AlexNet_Weights.IMAGENET1K_V1 file (importing torchvision to ask costs ~2 s)
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def lpips_backbone_file() -> Path:
    """Where torchvision keeps AlexNet's ImageNet weights once downloaded (the LPIPS backbone)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def build_lpips(device: torch.device) -> tuple[nn.Module | None, str]:
    """(LPIPS-AlexNet, "") or (None, why it is n/a). Never downloads."""
    if importlib.util.find_spec("lpips") is None:
        return None, "LPIPS n/a: the lpips package is not installed (pip install lpips)"
    backbone = lpips_backbone_file()
    if not backbone.is_file():
        return None, (
            f"LPIPS n/a: the AlexNet backbone weights are not in the torch hub cache ({backbone}); "
            f"copy {ALEXNET_FILE} there to enable it"
        )
    import lpips

    return lpips.LPIPS(net="alex", verbose=False).to(device).eval(), ""


def lpips_per_clip(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean LPIPS over the frames of each clip: (B, 3, T, H, W) x2 in [-1, 1] -> (B,)."""
    frames = lambda v: rearrange(v.float(), "b c t h w -> (b t) c h w")
    distance = model(frames(x), frames(y)).flatten()  # (B * T,)
    return rearrange(distance, "(b t) -> b t", b=x.shape[0]).mean(1)


# ---------------------------------------------------------------------------------------------
# Inception-I3D (Carreira & Zisserman 2017) for FVD: TensorFlow "SAME" padding, BatchNorm eps 1e-3


def _same_pad(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> Tensor:
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)  # zeros: the inputs of every max pool are post-ReLU, so 0 acts as -inf


class Unit3D(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, bn_relu: bool = True):
        super().__init__()
        self.kernel, self.stride = (kernel,) * 3, (stride,) * 3
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, bias=not bn_relu)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01) if bn_relu else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.bn is not None else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    """Inception module: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | pool -> 1x1, concatenated."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], 3)
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], 3)
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


_MIXED = {  # name: (input channels, branch widths); outputs sum c[0] + c[2] + c[4] + c[5]
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """(B, 3, T, 224, 224) in [-1, 1] -> logits (B, classes) averaged over space and time."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, 7, 2)
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3)
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b, self.Mixed_3c = Mixed(*_MIXED["Mixed_3b"]), Mixed(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, Mixed(*_MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b, self.Mixed_5c = Mixed(*_MIXED["Mixed_5b"]), Mixed(*_MIXED["Mixed_5c"])
        self.logits = Unit3D(1024, num_classes, bn_relu=False)

    def forward(self, x: Tensor) -> Tensor:
        for name, module in self.named_children():
            if name == "logits":
                break
            x = module(x)
        # a global average: at 16x224x224 it equals the original 2x7x7 pool followed by a time mean
        x = x.mean((2, 3, 4), keepdim=True)  # (B, 1024, 1, 1, 1)
        return self.logits(x).flatten(1)  # (B, classes)


# ---------------------------------------------------------------------------------------------
# Loading a feature extractor


def _scripted(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MagvitError(f"{path}: not a TorchScript file ({first}); pass TorchScript or .safetensors") from None


def _argument_names(module: torch.jit.ScriptModule) -> set[str]:
    return {a.name for a in module.forward.schema.arguments}


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise MagvitError(f"{path}: cannot read safetensors ({e})") from None


def _load_into(model: nn.Module, weights: dict[str, Tensor], path: Path) -> nn.Module:
    """Strict load, except BatchNorm's `num_batches_tracked` (older exports lack it)."""
    weights = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if set(weights) != set(expected):
        key = sorted(set(weights) ^ set(expected))[0]
        raise MagvitError(f"{path}: not a {type(model).__name__} state dict (first mismatching key '{key}')")
    wrong = next((k for k, v in weights.items() if v.shape != expected[k]), None)
    if wrong is not None:
        raise MagvitError(
            f"{path}: '{wrong}' has shape {tuple(weights[wrong].shape)}, {type(model).__name__} expects "
            f"{tuple(expected[wrong])}"
        )
    model.load_state_dict(weights, strict=False)
    return model.eval()


def load_video_extractor(path: str | Path, device: torch.device) -> Extractor:
    """An I3D from `path` (TorchScript or safetensors): clips (B, 3, T, H, W) in [-1, 1] -> (B, D)."""
    path = Path(path)
    if not path.is_file():
        raise MagvitError(f"--i3d {path}: no such file")
    if path.suffix == ".safetensors":
        weights = _read_safetensors(path)
        classes = weights["logits.conv3d.weight"].shape[0] if "logits.conv3d.weight" in weights else 400
        model = _load_into(InceptionI3d(classes), weights, path).to(device)

        def extract(clips: Tensor) -> Tensor:
            b = clips.shape[0]
            frames = F.interpolate(rearrange(clips.float(), "b c t h w -> (b t) c h w"), size=(224, 224),
                                   mode="bilinear", align_corners=False)
            return model(rearrange(frames, "(b t) c h w -> b c t h w", b=b))

        return extract
    module = _scripted(path, device)
    if "return_features" in _argument_names(module):
        return lambda clips: module(clips.float(), rescale=False, resize=True, return_features=True).float()
    return lambda clips: module(clips.float()).float().flatten(1)


def _inception_v3(path: Path, device: torch.device) -> nn.Module:
    """torchvision's inception_v3 from a `.safetensors` state dict (its classes from `fc.weight`)."""
    from torchvision.models import inception_v3

    weights = _read_safetensors(path)
    classes = weights["fc.weight"].shape[0] if "fc.weight" in weights else 1000
    net = inception_v3(weights=None, aux_logits="AuxLogits.fc.weight" in weights, init_weights=False,
                       transform_input=False, num_classes=classes)
    return _load_into(net, weights, path).to(device)


def _resized(frames: Tensor) -> Tensor:
    """Frames (N, 3, H, W) -> (N, 3, 299, 299), Inception's input size."""
    return F.interpolate(frames.float(), size=(299, 299), mode="bilinear", align_corners=False)


def _uint8(frames: Tensor) -> Tensor:
    """[-1, 1] -> uint8 pixels, the input of NVIDIA's TorchScript Inception."""
    return ((frames.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def load_image_extractor(path: str | Path, device: torch.device) -> Extractor:
    """An Inception from `path` (TorchScript or safetensors): frames (N, 3, H, W) in [-1, 1] -> (N, D)."""
    path = Path(path)
    if not path.is_file():
        raise MagvitError(f"--inception {path}: no such file")
    if path.suffix == ".safetensors":
        net = _inception_v3(path, device)
        net.fc = nn.Identity()  # the 2048-d pool output is the FID feature
        return lambda frames: net(_resized(frames))
    module = _scripted(path, device)
    if "return_features" in _argument_names(module):  # NVIDIA's detector: uint8 pixels
        return lambda frames: module(_uint8(frames), return_features=True).float()
    return lambda frames: module(frames.float()).float().flatten(1)


def load_image_probabilities(path: str | Path, device: torch.device) -> Extractor:
    """The Inception of `path` as a classifier, for the Inception score: frames (N, 3, H, W) in [-1, 1] ->
    class probabilities (N, classes). torchvision's inception_v3 (.safetensors): the softmax of its logits
    at 299x299; NVIDIA's TorchScript detector: its own probabilities, called with `no_output_bias=True` as
    the original Inception-score code computes them; any other TorchScript module: the softmax of its
    output, read as logits."""
    path = Path(path)
    if not path.is_file():
        raise MagvitError(f"--inception {path}: no such file")
    if path.suffix == ".safetensors":
        net = _inception_v3(path, device)
        return lambda frames: net(_resized(frames)).float().softmax(-1)
    module = _scripted(path, device)
    if "no_output_bias" in _argument_names(module):
        return lambda frames: module(_uint8(frames), no_output_bias=True).float()
    return lambda frames: module(frames.float()).float().flatten(1).softmax(-1)
