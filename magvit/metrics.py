"""Evaluation metrics: PSNR, SSIM, codebook usage and perplexity, the Frechet distance, the Inception score.

Pixel metrics take clips or images in [-1, 1] with the batch first, (B, 3, T, H, W) or
(B, 3, H, W), and return one value per sample (B,), so callers can average over any number of
batches exactly. SSIM is computed per frame on each RGB channel (Wang et al. 2004: 11x11
Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03) and averaged over frames and channels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from magvit.errors import MagvitError


def _as_frames(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B, T, C, H, W); (B, C, H, W) -> (B, 1, C, H, W); in [0, 1], fp32."""
    if x.ndim == 4:
        x = x.unsqueeze(2)
    if x.ndim != 5:
        raise MagvitError(f"metrics take (B, C, T, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    return ((rearrange(x.float(), "b c t h w -> b t c h w") + 1) / 2).clamp(0, 1)


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per sample (B,), on [0, 1] pixels (peak 1)."""
    a, b = _as_frames(x), _as_frames(y)
    mse = (a - b).pow(2).flatten(1).mean(1)  # (B,)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def region_psnr(x: Tensor, y: Tensor, region: Tensor) -> Tensor:
    """PSNR per sample (B,) over the pixels of `region` only: clips (B, 3, T, H, W) in [-1, 1], region
    (B, 1, T, H, W) bool (e.g. the pixels a task generates); every sample needs a pixel in it."""
    a, b = _as_frames(x), _as_frames(y)  # (B, T, C, H, W)
    where = rearrange(region, "b c t h w -> b t c h w").expand_as(a).float()
    if (where.flatten(1).sum(1) == 0).any():
        raise MagvitError("region_psnr: a sample has no pixel in the region")
    mse = ((a - b).pow(2) * where).flatten(1).sum(1) / where.flatten(1).sum(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size)


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per sample (B,), averaged over frames and channels ([0, 1] pixels).

    Frames smaller than the window use a window as large as the smaller side (odd)."""
    a, b = _as_frames(x), _as_frames(y)
    batch, frames, channels, h, w = a.shape
    size = min(window, h, w)
    size -= 1 - size % 2  # odd
    kernel = _gaussian_window(size, sigma).to(a.device)[None, None].repeat(channels, 1, 1, 1)  # (C, 1, k, k)
    a = rearrange(a, "b t c h w -> (b t) c h w")
    b = rearrange(b, "b t c h w -> (b t) c h w")
    blur = lambda v: F.conv2d(v, kernel, groups=channels)  # valid convolution, as the reference code
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    score = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return rearrange(score.flatten(1).mean(1), "(b t) -> b t", b=batch).mean(1)


def code_histogram(ids: Tensor, codebook_size: int) -> Tensor:
    """Counts (codebook_size,) of every code among `ids` (any shape)."""
    return torch.bincount(ids.flatten().long().cpu(), minlength=codebook_size).double()


def codebook_usage(ids: Tensor, codebook_size: int) -> Tensor:
    """Fraction of the codebook used at least once by `ids`."""
    return (code_histogram(ids, codebook_size) > 0).double().mean()


def perplexity(ids: Tensor, codebook_size: int) -> Tensor:
    """exp(entropy) of the code histogram, in codes: 1 = one code, codebook_size = uniform use."""
    counts = code_histogram(ids, codebook_size)
    p = counts[counts > 0] / counts.sum()
    return torch.exp(-(p * p.log()).sum())


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and covariance (D, D), in float64."""
    f = np.asarray(features.detach().cpu() if torch.is_tensor(features) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise MagvitError(f"Frechet statistics need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))  # (D, D) even for D = 1


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians (FID, FVD).

    tr (S1 S2)^(1/2) = sum of sqrt(eig(A S2 A)) with A = S1^(1/2): A S2 A is symmetric positive
    semi-definite and has the eigenvalues of S1 S2, so two symmetric eigendecompositions replace
    the general matrix square root (no complex round-off to discard).
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise MagvitError(f"Frechet distance: statistics of different sizes {mu1.shape} vs {mu2.shape}")
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(w.clip(min=0))) @ v.T
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.linalg.eigvalsh((middle + middle.T) / 2).clip(min=0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def inception_score(probs: Tensor, splits: int = 10) -> float:
    """exp(E_x KL(p(y|x) || p(y))) from class probabilities (N, classes), averaged over `splits` equal parts
    (at most N), p(y) each part's mean (Salimans et al. 2016; 10 parts in their code): from 1 (every sample
    the same distribution) to the number of classes (each confident, the classes used evenly)."""
    p = probs.detach().double().cpu()
    if p.ndim != 2 or p.shape[0] < 1:
        raise MagvitError(f"the Inception score needs (N >= 1, classes) probabilities, got shape {tuple(p.shape)}")
    p = p / p.sum(1, keepdim=True)
    logs = p.clamp_min(1e-30).log()
    scores = []
    for part, log_part in zip(p.tensor_split(min(splits, len(p))), logs.tensor_split(min(splits, len(p)))):
        marginal = part.mean(0, keepdim=True).clamp_min(1e-30).log()  # (1, classes) log p(y)
        scores.append(((part * (log_part - marginal)).sum(1).mean()).exp())
    return float(torch.stack(scores).mean())
