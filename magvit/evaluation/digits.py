"""A small digit classifier for judging generated moving digits, trained by the project itself.

Generated clips have no ground truth to compare with, so quality is measured the way FID / IS do
it, with a classifier: how often a class-conditional sample is recognised as its class, and a
Frechet distance between generated and real clips in the classifier's feature space. Inception
knows nothing of 8x8 handwriting scaled up; this CNN is trained on MovingDigits frames (train
split, digits of writers the test split does not share) in under a minute on a CPU. The default
recipe's weights ship with magvit (`checkpoints/digit-classifier`), so every machine scores with the
same judge (trained on first use, the same recipe gives other weights on another CPU: float rounding).
Any other recipe is trained on first use and cached as safetensors + JSON.

Frames are reduced to one grey channel and resized to 16x16, so the classifier serves any clip
size. A clip is classified by averaging its frames' logits (the digit is in every frame); its
feature is the mean of its frames' penultimate activations (64-d).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from magvit import shipped
from magvit.errors import MagvitError
from magvit.fileio import atomic_path, atomic_write_text
from magvit.weights import load_weights

FORMAT, VERSION = "magvit-digit-classifier", 3
SHIPPED = "digit-classifier"  # the default recipe's weights, under checkpoints/
INPUT = 16  # frames are resized to INPUT x INPUT: a digit spans ~7 pixels, about its 8x8 source


@dataclass(frozen=True)
class Recipe:
    """How the cached classifier was trained; changing it means a new cache entry (see `cache_name`)."""

    # version 2 (2,000 clips, 4 epochs, lr 2e-3) read 92-94% of held-out real clips; this one 97-98%
    clips: int = 6000  # MovingDigits train clips of 4 frames, split over the canvas sizes: 24,000 frames
    frames: int = 4
    sizes: tuple[int, ...] = (16, 32, 64)  # canvases the frames come from (all resized to 16x16 as in use)
    epochs: int = 8
    batch_size: int = 128
    lr: float = 4e-3
    seed: int = 0
    test_clips: int = 300  # test-split clips per canvas size the reported accuracy is measured on


def default_cache_dir() -> Path:
    """$MAGVIT_CACHE, else $XDG_CACHE_HOME/magvit, else ~/.cache/magvit."""
    if os.environ.get("MAGVIT_CACHE"):
        return Path(os.environ["MAGVIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "magvit"


def cache_name(recipe: Recipe) -> str:
    """digit-classifier-v3 for the default recipe, with a digest of the recipe otherwise."""
    if recipe == Recipe():
        return f"digit-classifier-v{VERSION}"
    digest = hashlib.sha1(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:8]
    return f"digit-classifier-v{VERSION}-{digest}"


class DigitClassifier(nn.Module):
    """(N, 3, H, W) frames in [-1, 1] -> logits (N, 10); `features` gives the 64-d penultimate layer."""

    def __init__(self):
        super().__init__()
        conv = lambda cin, cout: nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                               nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(conv(1, 32), conv(32, 64))  # 16 -> 8 -> 4
        self.fc = nn.Linear(64 * 4 * 4, 64)
        self.out = nn.Linear(64, 10)

    @staticmethod
    def prepare(frames: Tensor) -> Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 1, 16, 16) grey."""
        grey = frames.float().mean(1, keepdim=True)
        if grey.shape[-2:] != (INPUT, INPUT):
            grey = F.interpolate(grey, size=(INPUT, INPUT), mode="bilinear", antialias=True, align_corners=False)
        return grey

    def features(self, frames: Tensor, prepared: bool = False) -> Tensor:
        """(N, 3, H, W) frames, or (N, 1, 16, 16) already `prepare`d -> (N, 64)."""
        x = frames if prepared else self.prepare(frames)
        return F.relu(self.fc(self.body(x).flatten(1)))

    def forward(self, frames: Tensor, prepared: bool = False) -> Tensor:
        return self.out(self.features(frames, prepared))  # (N, 10)

    @torch.no_grad()
    def clips(self, videos: Tensor, batch: int = 64) -> tuple[Tensor, Tensor]:
        """videos (B, 3, T, H, W) -> clip logits (B, 10) and clip features (B, 64), frame means, on the CPU."""
        logits, feats = [], []
        for chunk in videos.split(batch):
            frames = rearrange(chunk, "b c t h w -> (b t) c h w").to(self.out.weight.device)
            f = self.features(frames)  # (b * t, 64)
            b = chunk.shape[0]
            feats.append(reduce(f, "(b t) d -> b d", "mean", b=b).cpu())
            logits.append(reduce(self.out(f), "(b t) k -> b k", "mean", b=b).cpu())
        return torch.cat(logits), torch.cat(feats)


def moving_digit_clips(split: str, count: int, frames: int, size: int, seed: int,
                       **options: object) -> tuple[Tensor, Tensor]:
    """`count` MovingDigits clips (N, 3, T, size, size) of `split` and their labels (N,); `options` are
    further MovingDigits arguments (speed, start, ...)."""
    from magvit.data import MovingDigits

    ds = MovingDigits(frames=frames, size=size, split=split, num_samples=count, seed=seed, **options)
    samples = [ds[i] for i in range(count)]
    return torch.stack([s["video"] for s in samples]), torch.tensor([s["label"] for s in samples])


def _training_frames(recipe: Recipe) -> tuple[Tensor, Tensor]:
    """Prepared frames (N, 1, 16, 16) from every canvas size, and their labels: the classifier sees
    digits exactly as `prepare` delivers them from a 16, 32 or 64 pixel clip."""
    xs, ys = [], []
    for i, size in enumerate(recipe.sizes):
        count = recipe.clips // len(recipe.sizes)
        videos, labels = moving_digit_clips("train", count, recipe.frames, size, recipe.seed + i)
        xs.append(DigitClassifier.prepare(rearrange(videos, "n c t h w -> (n t) c h w")))
        ys.append(labels.repeat_interleave(recipe.frames))
    return torch.cat(xs), torch.cat(ys)


def train_classifier(recipe: Recipe = Recipe(), quiet: bool = False) -> tuple[DigitClassifier, dict]:
    """Train on the train split; report clip accuracy on held-out test-split clips of every size."""
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        x, y = _training_frames(recipe)
        model = DigitClassifier()
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
        steps = recipe.epochs * -(-len(x) // recipe.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
        model.train()
        for epoch in range(recipe.epochs):
            for idx in torch.randperm(len(x)).split(recipe.batch_size):
                loss = F.cross_entropy(model(x[idx], prepared=True), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if not quiet:
                print(f"digit classifier: epoch {epoch + 1}/{recipe.epochs}, loss {loss.item():.3f}", flush=True)
    model.eval()
    accuracy = {}
    for size in recipe.sizes:
        videos, labels = moving_digit_clips("test", recipe.test_clips, recipe.frames, size, seed=1)
        accuracy[str(size)] = (model.clips(videos)[0].argmax(1) == labels).float().mean().item()
    info = {
        "test_clip_accuracy": min(accuracy.values()),  # the worst canvas size
        "test_clip_accuracy_by_size": accuracy,
        "train_seconds": time.perf_counter() - start,
    }
    return model, info


def save_classifier(model: DigitClassifier, directory: Path, recipe: Recipe, info: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata={"format": FORMAT})
    meta = {"format": FORMAT, "version": VERSION, "recipe": asdict(recipe), **info}
    atomic_write_text(directory / "config.json", json.dumps(meta, indent=2) + "\n")
    return directory


def load_classifier(directory: Path, recipe: Recipe) -> tuple[DigitClassifier, dict]:
    config, weights = directory / "config.json", directory / "model.safetensors"
    try:
        meta = json.loads(config.read_text())
        state = load_file(str(weights))
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise MagvitError(f"{directory}: cannot read the cached digit classifier ({e}); delete the folder") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise MagvitError(f"{config}: not a version {VERSION} digit classifier; delete the folder to retrain")
    if meta.get("recipe") != json.loads(json.dumps(asdict(recipe))):
        raise MagvitError(f"{config}: trained with another recipe than the one asked for; delete the folder to retrain")
    model = DigitClassifier()
    load_weights(model, state, str(weights))
    return model.eval(), meta


def digit_classifier(cache_dir: str | Path | None = None, recipe: Recipe = Recipe(),
                     quiet: bool = False) -> tuple[DigitClassifier, dict]:
    """The classifier of `recipe` and its JSON info: the shipped weights for the default recipe (unless
    `cache_dir` is given), else the cached ones, else trained now and cached."""
    found = shipped.find("checkpoints", SHIPPED) if cache_dir is None and recipe == Recipe() else None
    if found is not None:
        return load_classifier(found, recipe)
    directory = Path(cache_dir or default_cache_dir()) / cache_name(recipe)
    if (directory / "config.json").is_file() and (directory / "model.safetensors").is_file():
        return load_classifier(directory, recipe)
    if not quiet:
        print(f"training the digit classifier once (cached in {directory})", flush=True)
    model, info = train_classifier(recipe, quiet=quiet)
    save_classifier(model, directory, recipe, info)
    return load_classifier(directory, recipe)
