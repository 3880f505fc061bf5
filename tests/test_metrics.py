"""Metric functions against values known in closed form or computed by an independent reference."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from magvit.errors import MagvitError
from magvit.metrics import (
    _gaussian_window,
    codebook_usage,
    feature_statistics,
    frechet_distance,
    perplexity,
    psnr,
    ssim,
)


def test_psnr_of_known_noise():
    # +-0.2 in [-1, 1] is +-0.1 in [0, 1] pixels: MSE 0.01, PSNR = 10 log10(1 / 0.01) = 20 dB
    x = torch.rand(3, 3, 4, 8, 8) - 0.5  # stays inside [-1, 1] after the noise: no clamping
    signs = torch.randint(0, 2, x.shape) * 2 - 1
    out = psnr(x, x + 0.2 * signs)
    assert out.shape == (3,)
    assert torch.allclose(out, torch.full((3,), 20.0), atol=1e-4)
    # halving the noise amplitude gains 20 log10(2) dB
    assert torch.allclose(psnr(x, x + 0.1 * signs) - out, torch.full((3,), 20 * math.log10(2)), atol=1e-4)


def test_psnr_images_and_clips_agree():
    x, y = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.allclose(psnr(x, y), psnr(x[:, :, None], y[:, :, None]))


def test_ssim_of_identical_images_is_one():
    x = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert (ssim(x, noisy) < 0.95).all()
    assert torch.allclose(ssim(x, noisy), ssim(noisy, x), atol=1e-6)  # symmetric


def test_ssim_of_constant_images_has_closed_form():
    # no variance: SSIM = (2 p q + C1) / (p^2 + q^2 + C1) with p, q the [0, 1] pixel values
    p, q = 0.2, 0.7
    x = torch.full((1, 3, 16, 16), 2 * p - 1)
    y = torch.full((1, 3, 16, 16), 2 * q - 1)
    c1 = 0.01**2
    expected = (2 * p * q + c1) / (p * p + q * q + c1)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-3)  # fp32 E[x^2] - E[x]^2 round-off


def test_ssim_matches_a_brute_force_weighted_window():
    # an 11x11 image is one window position: the Gaussian-weighted statistics by hand, in float64
    a, b = np.random.default_rng(0).random((2, 11, 11))
    w = _gaussian_window(11, 1.5).double().numpy()
    mu_a, mu_b = (w * a).sum(), (w * b).sum()
    var_a, var_b = (w * a * a).sum() - mu_a**2, (w * b * b).sum() - mu_b**2
    cov = (w * a * b).sum() - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    to_clip = lambda v: (torch.from_numpy(v).float() * 2 - 1).expand(1, 3, 11, 11)
    assert ssim(to_clip(a), to_clip(b)).item() == pytest.approx(expected, abs=1e-5)


def _scipy_frechet(mu1, s1, mu2, s2):
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


@pytest.mark.parametrize("dim", [1, 4, 16])
def test_frechet_distance_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    f1 = rng.normal(size=(200, dim))
    f2 = rng.normal(size=(300, dim)) @ rng.normal(size=(dim, dim)) * 0.7 + 0.5
    (mu1, s1), (mu2, s2) = feature_statistics(f1), feature_statistics(torch.from_numpy(f2))
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_one_dimensional_gaussians():
    # N(m1, a^2) vs N(m2, b^2): (m1 - m2)^2 + (a - b)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == pytest.approx(
        4.0 + 1.0
    )


def test_frechet_rejects_mismatched_or_too_few_features():
    with pytest.raises(MagvitError, match="different sizes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(MagvitError, match="N >= 2"):
        feature_statistics(np.zeros((1, 3)))


def test_usage_and_perplexity_on_known_histograms():
    ids = torch.tensor([[0, 0, 1, 1]])
    assert codebook_usage(ids, 8).item() == pytest.approx(2 / 8)
    assert perplexity(ids, 8).item() == pytest.approx(2.0)
    uniform = torch.arange(16).repeat(5)
    assert codebook_usage(uniform, 16).item() == 1.0
    assert perplexity(uniform, 16).item() == pytest.approx(16.0)
    skewed = torch.tensor([3, 3, 3, 7])  # p = (3/4, 1/4)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert perplexity(skewed, 10).item() == pytest.approx(math.exp(entropy))
    assert perplexity(torch.zeros(50, dtype=torch.long), 10).item() == pytest.approx(1.0)
