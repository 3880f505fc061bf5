"""Tokenizer losses (pixels, LPIPS, GAN, LeCAM, R1, adaptive weight, warm-up) and discriminators."""

import pytest
import torch
import torch.nn.functional as F

from magvit.config import build_registered
from magvit.errors import MagvitError
from magvit.tokenizers.discriminators import DISCRIMINATORS, build_discriminator, downsample
from magvit.tokenizers.losses import (
    GAN_LOSSES,
    LeCAM,
    Perceptual,
    adaptive_generator_weight,
    gan_warmup_weight,
    gradient_difference_loss,
    r1_penalty,
    reconstruction_loss,
)


def test_reconstruction_losses():
    a, b = torch.zeros(2, 3, 4, 8, 8), torch.full((2, 3, 4, 8, 8), 0.5)
    assert reconstruction_loss(a, b, "l1").item() == pytest.approx(0.5)
    assert reconstruction_loss(a, b, "l2").item() == pytest.approx(0.25)
    with pytest.raises(MagvitError, match="one of l1, l2"):
        reconstruction_loss(a, b, "l3")


def test_gradient_difference_loss_ignores_offsets_and_penalises_blur():
    real = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    assert gradient_difference_loss(real, real).item() == 0
    assert gradient_difference_loss(real + 0.3, real).item() == pytest.approx(0, abs=1e-6)  # a constant shift
    blurred = F.avg_pool3d(real, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    assert gradient_difference_loss(blurred, real) > 0.1
    # an image (B, 3, H, W): horizontal and vertical differences averaged
    image = torch.zeros(1, 3, 4, 4)
    stripes = image.clone()
    stripes[..., ::2] = 1.0  # every horizontal difference is 1, no vertical one
    assert gradient_difference_loss(stripes, image).item() == pytest.approx(0.5)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache: no backbone weights, and anything written there would show."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return hub


def test_lpips_with_a_random_backbone_runs_offline_and_per_frame(empty_hub):
    perceptual = Perceptual(net="alex", pretrained_backbone=False)
    assert not empty_hub.exists()  # nothing was downloaded or cached
    perceptual.train()
    assert not perceptual.lpips.training  # the frozen metric keeps dropout off
    assert not any(p.requires_grad for p in perceptual.parameters())

    real = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    recon = (real + 0.3 * torch.randn_like(real)).clamp(-1, 1).requires_grad_()
    loss = perceptual(recon, real)
    assert loss.dim() == 0 and loss.item() > 0
    assert perceptual(real, real).item() == pytest.approx(0.0, abs=1e-6)
    # per frame: the clip loss is the mean of the frames' image losses
    frames = [perceptual(recon[:, :, t].detach(), real[:, :, t]) for t in range(3)]
    assert loss.item() == pytest.approx(torch.stack(frames).mean().item(), rel=1e-5)
    loss.backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0


def test_lpips_without_cached_weights_is_one_clear_error(empty_hub):
    with pytest.raises(MagvitError) as info:
        Perceptual(net="vgg", pretrained_backbone=True)
    message = str(info.value)
    assert "\n" not in message and "vgg16-397923af.pth" in message and str(empty_hub / "checkpoints") in message
    assert not empty_hub.exists()
    with pytest.raises(MagvitError, match="LPIPS backbone must be one of"):
        Perceptual(net="resnet", pretrained_backbone=False)


def test_gan_losses_match_their_definitions():
    real, fake = torch.randn(64), torch.randn(64)
    g, d = GAN_LOSSES["non_saturating"]
    bce = F.binary_cross_entropy_with_logits
    assert torch.allclose(g(fake), bce(fake, torch.ones_like(fake)))
    assert torch.allclose(d(real, fake), bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))
    g, d = GAN_LOSSES["hinge"]
    assert torch.allclose(g(fake), -fake.mean())
    # a discriminator beyond the margins has zero hinge loss; inside them it has some
    assert d(torch.full((8,), 1.5), torch.full((8,), -2.0)).item() == 0.0
    assert d(torch.zeros(8), torch.zeros(8)).item() == pytest.approx(2.0)


@pytest.mark.parametrize("name", GAN_LOSSES)
def test_each_gan_loss_trains_a_discriminator_and_pushes_the_generator(name):
    g_loss, d_loss = GAN_LOSSES[name]
    real, fake = torch.randn(256, 2) + 2, torch.randn(256, 2) - 2
    disc = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(disc.parameters(), lr=0.1)
    for _ in range(50):
        loss = d_loss(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert disc(real).mean() > 0 > disc(fake).mean()
    # the generator's gradient moves fake samples towards the real ones
    moving = fake.clone().requires_grad_()
    g_loss(disc(moving)).backward()
    assert (-moving.grad.mean(0) @ (real.mean(0) - fake.mean(0))).item() > 0


def test_lecam_tracks_logits_and_penalises_only_crossings():
    lecam = LeCAM(decay=0.5)
    assert set(lecam.state_dict()) == {"ema_real", "ema_fake"}  # checkpointed with the run
    real, fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    lecam(real, fake)
    assert lecam.ema_real.item() == pytest.approx(1.0) and lecam.ema_fake.item() == pytest.approx(-1.0)
    lecam(real, fake)
    assert lecam.ema_real.item() == pytest.approx(1.5) and lecam.ema_fake.item() == pytest.approx(-1.5)
    lecam.eval()  # no update in eval
    # real logits above the fake anchor and fake logits below the real anchor are penalised
    value = lecam(torch.tensor([-1.5, 0.5]), torch.tensor([1.5, -0.5]))
    assert value.item() == pytest.approx(0.5 * 2.0**2 + 0.5 * 2.0**2)
    assert lecam(torch.tensor([-2.0]), torch.tensor([2.0])).item() == 0.0
    assert lecam.ema_real.item() == pytest.approx(1.5)
    with pytest.raises(MagvitError, match="decay"):
        LeCAM(decay=1.0)


def test_r1_is_half_the_squared_input_gradient_and_differentiable():
    w = torch.randn(3 * 2 * 4 * 4, requires_grad=True)
    x = torch.randn(5, 3, 2, 4, 4, requires_grad=True)
    logits = x.flatten(1) @ w  # D(x) = w.x, so grad_x D = w for every sample
    penalty = r1_penalty(logits, x)
    assert penalty.item() == pytest.approx(0.5 * w.pow(2).sum().item(), rel=1e-5)
    (grad_w,) = torch.autograd.grad(penalty, w)
    assert torch.allclose(grad_w, w, atol=1e-5)  # d/dw of 1/2 ||w||^2


def test_adaptive_weight_balances_gradients_at_the_last_layer():
    layer = torch.nn.Parameter(torch.randn(4, 4))
    nll, g = 3.0 * layer.sum(), -0.5 * layer.sum()
    weight = adaptive_generator_weight(nll, g, layer)
    assert not weight.requires_grad
    assert weight.item() == pytest.approx(3.0 * 4 / (0.5 * 4 + 1e-4), rel=1e-5)
    assert adaptive_generator_weight(nll, 0.0 * layer.sum(), layer, max_weight=100.0).item() == 100.0


def test_gan_warmup_weight():
    assert [gan_warmup_weight(s, 10, 0) for s in (0, 9, 10, 50)] == [0.0, 0.0, 1.0, 1.0]
    assert [gan_warmup_weight(s, 10, 4) for s in (9, 10, 11, 13, 14)] == [0.0, 0.25, 0.5, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------
# Discriminators


def _tiny(name, **overrides):
    return build_discriminator(build_registered(DISCRIMINATORS, {"name": name, "preset": "tiny", **overrides}))


@pytest.mark.parametrize("frames", [1, 4, 5, 16])
@pytest.mark.parametrize("name", ["patchgan2d", "patchgan3d", "stylegan3d"])
def test_discriminators_take_any_number_of_frames(name, frames):
    disc = _tiny(name)
    video = torch.rand(2, 3, frames, 32, 32, requires_grad=True) * 2 - 1
    logits = disc(video)
    if name == "patchgan2d":
        assert logits.shape[:2] == (2 * frames, 1)
    elif name == "patchgan3d":
        halve = lambda t: (t - 1) // 2 + 1  # kernel 3, padding 1, stride 2 over time
        assert logits.shape[:3] == (2, 1, halve(halve(frames)))  # tiny: the first two convs halve time
    else:
        assert logits.shape == (2, 1)
    assert torch.isfinite(logits).all()
    (grad,) = torch.autograd.grad(logits.sum(), video)  # R1 needs input gradients
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["patchgan2d", "patchgan3d", "stylegan3d"])
def test_a_sample_logits_do_not_depend_on_the_rest_of_the_batch(name):
    """Real and fake go through one forward pass in the recipe: that must not mix them."""
    disc = _tiny(name).eval()
    clips = torch.rand(3, 3, 4, 32, 32) * 2 - 1
    together = disc(clips)
    alone = torch.cat([disc(clips[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_patchgan2d_judges_each_frame_on_its_own():
    disc = _tiny("patchgan2d").eval()
    clip = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    per_frame = torch.cat([disc(clip[:, :, t : t + 1]) for t in range(3)])
    assert torch.allclose(disc(clip), per_frame, atol=1e-6)


def test_blur_downsampling_halves_long_axes_and_keeps_single_frames():
    x = torch.ones(1, 2, 1, 8, 6)
    for blur in (True, False):
        y = downsample(x, blur)
        assert y.shape == (1, 2, 1, 4, 3)
    assert torch.allclose(downsample(x, True)[..., 1:-1, 1:-1], torch.ones(1, 2, 1, 2, 1))  # a low-pass filter
    assert downsample(torch.ones(1, 1, 16, 4, 4), True).shape == (1, 1, 8, 2, 2)


def test_discriminator_errors_are_one_line():
    with pytest.raises(MagvitError, match="at least 12x12"):
        _tiny("patchgan3d")(torch.zeros(1, 3, 4, 8, 8))
    with pytest.raises(MagvitError, match=r"\(B, 3, T, H, W\)"):
        _tiny("stylegan3d")(torch.zeros(1, 3, 32, 32))
    with pytest.raises(MagvitError, match="channels"):
        _tiny("patchgan2d", channels=0)
