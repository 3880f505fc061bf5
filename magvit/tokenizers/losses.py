"""Tokenizer training losses: pixels, LPIPS, GAN terms and their regularisers.

MAGVIT (section 3.1 and its appendix) trains its 3D-VQ with pixel L2 (1.0), a perceptual loss (0.1), a
GAN loss (0.1) whose generator term VQGAN balances against the reconstruction gradient, an R1
penalty (10) and optionally LeCAM on the discriminator; MAGVIT-v2 uses the same family. Every
function here takes clips (B, 3, T, H, W) in [-1, 1] or a discriminator's logits of any shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from magvit.errors import MagvitError

# ---------------------------------------------------------------------------------------------
# Pixels and LPIPS

_RECONSTRUCTION = {"l1": F.l1_loss, "l2": F.mse_loss}


def reconstruction_loss(recon: Tensor, real: Tensor, kind: str = "l2") -> Tensor:
    """Mean absolute ("l1") or squared ("l2") error over every pixel."""
    if kind not in _RECONSTRUCTION:
        raise MagvitError(f"reconstruction loss must be one of {', '.join(_RECONSTRUCTION)}, got {kind!r}")
    return _RECONSTRUCTION[kind](recon, real)


def gradient_difference_loss(recon: Tensor, real: Tensor) -> Tensor:
    """Mean |grad recon - grad real| over the horizontal and vertical pixel differences of every frame
    (the gradient difference loss of Mathieu et al. 2016): a pixel loss alone is minimised by a blur,
    this term is not, and it needs no pretrained network. Clips (B, 3, T, H, W) or images (B, 3, H, W)."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # (..., H, W - 1)
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # (..., H - 1, W)
    return (F.l1_loss(dx(recon), dx(real)) + F.l1_loss(dy(recon), dy(real))) / 2


# torchvision's ImageNet weights for each LPIPS backbone, as named in the torch hub cache
BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def backbone_weights_path(net: str) -> Path:
    """Where torchvision looks for the ImageNet weights of `net` (it would download them there)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


class Perceptual(nn.Module):
    """LPIPS (Zhang et al. 2018) through the `lpips` package, frame by frame, averaged.

    The linear calibration layers ship inside the `lpips` package. The VGG16 / AlexNet backbone
    needs torchvision's ImageNet weights in the torch hub cache; nothing is downloaded at run time.
    `pretrained_backbone=False` builds a randomly initialised backbone instead (tests, smoke runs):
    the loss still compares deep features, but it is not the calibrated perceptual metric.
    The network is frozen and stays in eval mode (its dropout is off) even inside a training model.
    """

    def __init__(self, net: str = "vgg", pretrained_backbone: bool = True):
        super().__init__()
        if net not in BACKBONE_FILES:
            raise MagvitError(f"LPIPS backbone must be one of {', '.join(BACKBONE_FILES)}, got {net!r}")
        weights = backbone_weights_path(net)
        if pretrained_backbone and not weights.is_file():
            raise MagvitError(
                f"LPIPS needs torchvision's ImageNet {net} weights {weights.name}, not found in {weights.parent}: "
                f"copy the file there (set TORCH_HOME to move the cache), or set loss.perceptual_pretrained=false"
            )
        import lpips

        with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=` argument
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
            self.lpips = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained_backbone, verbose=False)
        self.lpips.requires_grad_(False)
        self.lpips.eval()

    def train(self, mode: bool = True) -> Perceptual:
        super().train(mode)
        self.lpips.eval()  # a frozen metric: no dropout, whatever the parent module's mode
        return self

    def forward(self, recon: Tensor, real: Tensor) -> Tensor:
        """(B, 3, T, H, W) or (B, 3, H, W), both in [-1, 1] -> scalar mean LPIPS over frames."""
        if recon.ndim == 5:
            recon, real = (rearrange(x, "b c t h w -> (b t) c h w") for x in (recon, real))
        # fp32 under any autocast: LPIPS sums squared differences of unit-normalised features, and once
        # reconstructions are close those differences fall below bf16's 8-bit mantissa
        with torch.autocast(recon.device.type, enabled=False):
            return self.lpips(recon.float(), real.float()).mean()


# ---------------------------------------------------------------------------------------------
# GAN losses: (generator loss on fake logits, discriminator loss on real and fake logits)


def hinge_generator(fake: Tensor) -> Tensor:
    return -fake.mean()


def hinge_discriminator(real: Tensor, fake: Tensor) -> Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] (geometric GAN; MAGVIT-v2, VQGAN)."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def non_saturating_generator(fake: Tensor) -> Tensor:
    """-log sigmoid(D(G(z))) (Goodfellow et al. 2014; MAGVIT, StyleGAN)."""
    return F.softplus(-fake).mean()


def non_saturating_discriminator(real: Tensor, fake: Tensor) -> Tensor:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


GAN_LOSSES: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]] = {
    "hinge": (hinge_generator, hinge_discriminator),
    "non_saturating": (non_saturating_generator, non_saturating_discriminator),
}


# ---------------------------------------------------------------------------------------------
# Discriminator regularisers


class LeCAM(nn.Module):
    """LeCAM regulariser (Tseng et al., CVPR 2021): anchors the discriminator's predictions.

    Keeps EMAs of the mean real and fake logits (buffers, so they are checkpointed) and penalises
    real logits above the fake anchor and fake logits below the real anchor:
    R = E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2]. The EMAs are updated before the
    penalty is computed, with the batch means averaged over processes so every process agrees.
    """

    def __init__(self, decay: float = 0.999):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise MagvitError(f"LeCAM decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                means = torch.stack([real_logits.float().mean(), fake_logits.float().mean()])  # (2,)
                if dist.is_available() and dist.is_initialized():
                    dist.all_reduce(means)
                    means /= dist.get_world_size()
                self.ema_real.lerp_(means[0], 1 - self.decay)
                self.ema_fake.lerp_(means[1], 1 - self.decay)
        return (
            F.relu(real_logits.float() - self.ema_fake).pow(2).mean()
            + F.relu(self.ema_real - fake_logits.float()).pow(2).mean()
        )


def r1_penalty(real_logits: Tensor, real_inputs: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): 1/2 E_x ||grad_x D(x)||^2 on real data, differentiable.

    With the 1/2 inside, the weight is StyleGAN's gamma (MAGVIT: 10). `real_inputs` must have
    `requires_grad=True` and `real_logits` must be computed from it.
    """
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_inputs, create_graph=True)
    return 0.5 * grad.float().pow(2).flatten(1).sum(1).mean()


# ---------------------------------------------------------------------------------------------
# Generator-side weights


def adaptive_generator_weight(
    nll_loss: Tensor, g_loss: Tensor, last_layer_weight: Tensor, max_weight: float = 1e4
) -> Tensor:
    """VQGAN (Esser et al. 2021, eq. 7): ||grad nll|| / (||grad g|| + 1e-4) at the decoder's last layer.

    Scales the GAN term so that its gradient at the output layer is as large as the reconstruction
    term's; clamped to [0, max_weight] and detached (a weight, not a loss).
    """
    (nll_grad,) = torch.autograd.grad(nll_loss, last_layer_weight, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)
    weight = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


def gan_warmup_weight(step: int, start: int, warmup_steps: int) -> float:
    """0 before `start` (the discriminator warm-up), then a linear ramp to 1 over `warmup_steps`."""
    if step < start:
        return 0.0
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / warmup_steps)
