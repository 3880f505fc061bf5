"""How a trained model is scored: on held-out clips of the data it was trained on, each task on the
pixels it generates, next to its trivial baseline (copy-last-frame, the linear blend, the padding) and
its tokenizer's ceiling; class-conditional samples with the project's digit classifier
(`magvit.evaluation.digits`, trained once and cached):

(a) class accuracy: the share of class-conditional samples (task cg) the classifier assigns to
    the class they were generated for (real test clips give the ceiling);
(b) a Frechet distance between generated and real test clips in the classifier's 64-d feature
    space (two disjoint sets of real clips give the floor);
(c) frame prediction (task fp): PSNR / SSIM of the predicted frames against the ground truth,
    next to the copy-last-frame baseline and the tokenizer's round trip (the ceiling: the model
    can only produce what the tokenizer decodes).

Samples come from the pipeline's one decode path (`MagvitPipeline.decode_batches`), as `magvit
generate` makes them. The metric functions (`class_accuracy`, `classifier_frechet`,
`frame_prediction_scores`, `copy_last_frame`) take plain tensors. Users: `magvit bench quality`, the
quickstart's report, `magvit reproduce`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from magvit.bench.measure import batches
from magvit.decode import DecodeConfig
from magvit.errors import MagvitError
from magvit.evaluation.digits import DigitClassifier, moving_digit_clips
from magvit.metrics import feature_statistics, frechet_distance, psnr, region_psnr, ssim
from magvit.pipeline import MagvitPipeline
from magvit.release import ModelInfo
from magvit.tasks import NO_OPTIONS, TASKS, Condition, TaskOptions, layout_of

SCHEDULES = ("cosine", "square", "linear", "sqrt")
STEPS = (4, 8, 12, 16)

# ---------------------------------------------------------------------------------------------
# Metric functions


def class_accuracy(classifier: DigitClassifier, videos: Tensor, labels: Tensor) -> float:
    """Share of clips (B, 3, T, H, W) in [-1, 1] that the classifier assigns to `labels` (B,)."""
    logits, _ = classifier.clips(videos)
    return (logits.argmax(1) == labels.cpu()).float().mean().item()


def classifier_frechet(classifier: DigitClassifier, fake: Tensor, real: Tensor | tuple) -> float:
    """Frechet distance between two sets of clips in the classifier's feature space (>= 2 clips each);
    `real` may be given as its feature statistics (mean, covariance) when it is scored against often."""
    _, f_fake = classifier.clips(fake)
    reference = real if isinstance(real, tuple) else feature_statistics(classifier.clips(real)[1])
    return frechet_distance(*feature_statistics(f_fake), *reference)


def copy_last_frame(video: Tensor, cond_frames: int) -> Tensor:
    """The baseline prediction: the last given frame repeated over the rest of the clip."""
    last = video[:, :, cond_frames - 1 : cond_frames]
    return torch.cat([video[:, :, :cond_frames], last.expand(-1, -1, video.shape[2] - cond_frames, -1, -1)], 2)


def frame_prediction_scores(prediction: Tensor, target: Tensor, cond_frames: int) -> dict[str, float]:
    """PSNR / SSIM on the predicted frames only (those after the first `cond_frames`), for the
    prediction and for the copy-last-frame baseline; clips (B, 3, T, H, W) in [-1, 1]."""
    if not 1 <= cond_frames < target.shape[2]:
        raise MagvitError(f"frame prediction needs 1 <= cond_frames < frames, got {cond_frames} of {target.shape[2]}")
    future = lambda v: v[:, :, cond_frames:].float().cpu()
    truth, copy = future(target), future(copy_last_frame(target, cond_frames))
    pred = future(prediction).clamp(-1, 1)
    return {
        "psnr": psnr(pred, truth).mean().item(), "ssim": ssim(pred, truth).mean().item(),
        "copy_psnr": psnr(copy, truth).mean().item(), "copy_ssim": ssim(copy, truth).mean().item(),
    }


# ---------------------------------------------------------------------------------------------
# Sampling from a model folder


def sample(release: MagvitPipeline, task: str, cfg: DecodeConfig, seed: int, batch_size: int, count: int,
           classes: Tensor | None = None, conds: list[Condition] | None = None, ids: bool = False):
    """`count` decoded clips (N, 3, T, H, W) in [-1, 1] on the CPU, `batch_size` per decode call, through
    the pipeline's one decode path (`MagvitPipeline.decode_batches`); `conds` holds one Condition per
    call (for conditional tasks). The raw decode (no paste-back): the scores are taken on the generated
    pixels, and the per-latent-frame rows on every frame the model decodes. With `ids`, also the token
    ids (N, t, h, w) the clips were decoded from."""
    condition = None if conds is None else lambda k, a, b: conds[k]
    videos, made = release.decode_batches(task, dataclasses.replace(cfg, paste_back=False), seed, count, batch_size,
                                          condition=condition, classes=classes)
    return (videos, made) if ids else videos


@torch.no_grad()
def task_conditions(release: MagvitPipeline, task: str, clips: Tensor, batch_size: int,
                    options: TaskOptions = NO_OPTIONS) -> list[Condition]:
    """One condition per decode call (`batch_size` clips each) of `task` on `clips` (N, 3, T, H, W), with the
    options the task was trained with (then `options`: a protocol's cond_frames) and the model's condition
    rule (the Evaluator, `magvit eval`)."""
    info, tokenizer = release.info, release.tokenizer
    device = next(release.model.parameters()).device
    built = TASKS.build(task)
    with release.autocast():
        return [built.condition(b.to(device), tokenizer, info.condition_rule, options.over(info.options(task)))
                for b in batches(clips, batch_size)]


def real_clips(frames: int, size: int, count: int, seed: int, **options: object) -> tuple[Tensor, Tensor]:
    """`count` MovingDigits test clips and labels; `options` (speed, start, ...) as the model was trained
    (see `digits_options`)."""
    return moving_digit_clips("test", count, frames, size, seed, **options)


def held_out_clips(info: ModelInfo, count: int, seed: int,
                   motion_quantile: float | None = None) -> tuple[Tensor, Tensor | None]:
    """Up to `count` held-out clips (N, 3, T, H, W) of the data the model was trained on, and their labels
    (None without labels): moving digits from its test split (moving as in training), any other dataset
    from its `val` split (the config magvit.json records, with split=val and no flips). With
    `motion_quantile` (not for digits), only the windows whose mean absolute frame-to-frame change is at
    or above that quantile of the split's windows."""
    data = dict(info.data or {})
    if data.get("name", "moving_digits") == "moving_digits":
        return real_clips(info.frames, info.size[0], count, seed, **digits_options(info))
    from magvit.config import from_dict
    from magvit.data import DATASETS, build_dataset

    entry = DATASETS[data["name"]]
    fields = {f.name for f in dataclasses.fields(entry.config)}
    if "split" not in fields:
        raise MagvitError(f"{data['name']} has no held-out split to score a model on; train on a dataset with "
                          "a val split (moving_digits, bundled_clips, video_folder)")
    data.update(split="val", **({"flip": False} if "flip" in fields else {}))
    dataset = build_dataset(from_dict(entry.config, data))
    candidates = torch.arange(len(dataset))
    if motion_quantile is not None:
        change = torch.stack([frame_change(dataset[int(i)]["video"]) for i in candidates])  # (windows,)
        candidates = candidates[change >= change.quantile(motion_quantile)]
    spread = torch.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().long().unique()
    items = [dataset[int(candidates[i])] for i in spread]  # over the whole split (every source video)
    labels = torch.tensor([d["label"] for d in items]) if all("label" in d for d in items) else None
    return torch.stack([d["video"] for d in items]), labels


def frame_change(clip: Tensor) -> Tensor:
    """Mean absolute change between consecutive frames of a clip (3, T, H, W) in [-1, 1]: how much it moves."""
    return (clip[:, 1:] - clip[:, :-1]).abs().mean()


def digits_options(info: ModelInfo | Mapping[str, Any]) -> dict[str, object]:
    """How the model's moving digits move (speed, start, size of the digit, how many), from the training
    data its model folder records (`ModelInfo`, or magvit.json as a dict); {} (the defaults) for other
    data or older folders."""
    data = (info.data if isinstance(info, ModelInfo) else info.get("data")) or {}
    if data.get("name") != "moving_digits":
        return {}
    return {k: data[k] for k in ("speed", "start", "digit_size", "num_digits") if k in data}


class Evaluator:
    """Everything a model is scored with on held-out moving digits: the real clips, the conditions of
    the conditional tasks, the classifier. `score` is one row of the quality bench; the quickstart
    builds its report from `class_samples`, `predict` and `reconstruct`."""

    def __init__(self, release: MagvitPipeline, classifier: DigitClassifier | None, num: int, batch_size: int,
                 seed: int, motion_quantile: float | None = None):
        frames, height, width = release.clip
        if height != width:
            raise MagvitError(f"{release.directory}: moving digits are square, this model makes {height}x{width}")
        self.release, self.classifier, self.batch_size, self.seed = release, classifier, batch_size, seed
        info = release.info
        tasks = set(info.tasks)
        self.digits = (info.data or {}).get("name", "moving_digits") == "moving_digits"
        # the digit classifier scores samples of a moving-digits model only
        self.cg = "cg" in tasks and info.num_classes == 10 and classifier is not None and self.digits
        self.uncond = "uncond" in tasks and classifier is not None and self.digits  # Frechet without classes
        self.fp = next((t for t in ("fp", "cfp") if t in tasks), None)
        # fewer than `num` when the val split is small; `motion_quantile`: the moving windows only
        self.real, self.labels = held_out_clips(info, num, seed, None if self.digits else motion_quantile)
        self.num = len(self.real)
        self.motion = torch.stack([frame_change(c) for c in self.real]).mean().item()  # how much these clips move
        if self.digits:  # disjoint test clips: the Frechet floor
            self.reference, _ = real_clips(frames, height, num, seed + 1, **digits_options(info))
        self.classes = torch.arange(self.num) % 10
        if self.fp:
            self.conds = self.conditions(self.fp)
            self.cond_frames = int(self.conds[0].pixel_mask[0, 0, :, 0, 0].sum())

    @functools.cached_property
    def real_statistics(self) -> tuple:
        """The real clips' feature statistics (mean, covariance): every Frechet distance is taken to them."""
        return feature_statistics(self.classifier.clips(self.real)[1])

    def conditions(self, task: str, clips: Tensor | None = None) -> list[Condition]:
        """One condition per decode call (`batch_size` clips each) of `task` on `clips` (default: the real
        clips), with the options and the condition rule the model was trained with."""
        return task_conditions(self.release, task, self.real if clips is None else clips, self.batch_size)

    def predict(self, task: str, cfg: DecodeConfig, clips: Tensor | None = None,
                classes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """`task` on `clips` (default: the real clips), decoded with `cfg` (a generator seeded by `seed`
        per decode call) -> the condition clips (N, 3, T, H, W), the given pixels (N, 1, T, H, W) bool and
        the samples (N, 3, T, H, W), on the CPU."""
        conds = self.conds if task == self.fp and clips is None else self.conditions(task, clips)
        given = torch.cat([c.pixels.float().clamp(-1, 1).cpu() for c in conds])
        mask = torch.cat([c.pixel_mask.cpu() for c in conds])
        return given, mask, sample(self.release, task, cfg, self.seed, self.batch_size, len(given), classes=classes,
                                   conds=conds)

    def task_scores(self, task: str, cfg: DecodeConfig) -> dict[str, Any]:
        """`task` on the real clips, scored on the pixels it generates: PSNR there for the model, for the
        padding the task conditions with (copy-last-frame for fp, the linear blend of the two ends for fi,
        the replicated or zeroed region of the spatial tasks) and for the tokenizer's round trip (the
        ceiling); SSIM on whole frames, the generated frames only. -> {"scores", "given" (the padded
        condition clips, N, 3, T, H, W), "prediction", "ids" (N, t, h, w), "conds"}."""
        conds = self.conds if task == self.fp else self.conditions(task)
        given = torch.cat([c.pixels.float().clamp(-1, 1).cpu() for c in conds])
        made = ~torch.cat([c.pixel_mask.cpu() for c in conds])  # (N, 1, T, H, W): the generated pixels
        pred, ids = sample(self.release, task, cfg, self.seed, self.batch_size, self.num, conds=conds, ids=True)
        real, recon = self.real, self.reconstruction
        frames = made.flatten(3).any(-1)[:, 0].any(0)  # (T,) frames with a generated pixel
        ssim_of = lambda v: ssim(v[:, :, frames], real[:, :, frames]).mean().item()
        scores = {"psnr": region_psnr(pred, real, made).mean().item(), "ssim": ssim_of(pred),
                  "baseline_psnr": region_psnr(given, real, made).mean().item(), "baseline_ssim": ssim_of(given),
                  "ceiling_psnr": region_psnr(recon, real, made).mean().item(), "ceiling_ssim": ssim_of(recon)}
        return {"scores": scores, "given": given, "prediction": pred, "ids": ids, "conds": conds}

    @torch.no_grad()
    def latent_frames(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        """Where a temporal task (fp, fi) loses against its baseline, per latent frame of the token grid, from
        a `task_scores` result: the pixel frames the latent frame decodes to, whether it is a condition
        position, PSNR of the tokenizer's round trip (the ceiling), of the baseline (the padding: copy-last
        for fp) and of the model; the model's token accuracy against the tokenizer's tokens of the truth,
        next to that of the condition tokens z~ (the padded clip's tokens: the baseline in token space)."""
        tok, truth = self.release.tokenizer, self.truth_ids
        z_cond = torch.cat([c.tokens.cpu() for c in result["conds"]])  # (N, t, h, w)
        is_cond = torch.cat([c.latent_mask.cpu() for c in result["conds"]])
        recon, ids = self.reconstruction, result["ids"]
        rows = []
        for j, (a, b) in enumerate(layout_of(tok, *self.release.clip).time_blocks):
            score = lambda v, a=a, b=b: psnr(v[:, :, a:b], self.real[:, :, a:b]).mean().item()
            rows.append({
                "latent_frame": j, "frames": f"{a}-{b - 1}" if b - a > 1 else str(a),
                "condition": bool(is_cond[:, j].all()), "tokenizer_psnr": score(recon),
                "baseline_psnr": score(result["given"]), "model_psnr": score(result["prediction"]),
                "token_accuracy": (ids[:, j] == truth[:, j]).float().mean().item(),
                "baseline_token_accuracy": (z_cond[:, j] == truth[:, j]).float().mean().item(),
            })
        return rows

    def class_samples(self, classes: Tensor, cfg: DecodeConfig) -> tuple[Tensor, float]:
        """Class-conditional samples (cg) of `classes` and the share the classifier assigns to them."""
        fake = sample(self.release, "cg", cfg, self.seed, self.batch_size, len(classes), classes=classes)
        return fake, class_accuracy(self.classifier, fake, classes)

    @functools.cached_property
    @torch.no_grad()
    def truth_ids(self) -> Tensor:
        """The tokenizer's ids of the real clips (N, t, h, w), encoded once: the round trip and the token
        accuracies of every task are taken against them."""
        tok = self.release.tokenizer
        device = next(tok.parameters()).device
        with self.release.autocast():
            return torch.cat([tok.encode(b.to(device)).cpu() for b in batches(self.real, self.batch_size)])

    @functools.cached_property
    @torch.no_grad()
    def reconstruction(self) -> Tensor:
        """The tokenizer's round trip of the real clips (the ceiling of every score), decoded once."""
        tok = self.release.tokenizer
        device = next(tok.parameters()).device
        with self.release.autocast():
            return torch.cat([tok.decode(ids.to(device)).float().clamp(-1, 1).cpu()
                              for ids in self.truth_ids.split(self.batch_size)])

    def score(self, cfg: DecodeConfig) -> dict[str, Any]:
        """Class accuracy, Frechet distance and frame-prediction scores of samples decoded with `cfg`."""
        row: dict[str, Any] = {"class_accuracy": None, "frechet": None, "fp_psnr": None, "fp_ssim": None}
        start = time.perf_counter()
        if self.cg:
            fake, accuracy = self.class_samples(self.classes, cfg)
            row["class_accuracy"] = 100 * accuracy
            row["frechet"] = classifier_frechet(self.classifier, fake, self.real_statistics)
        elif self.uncond:
            fake = sample(self.release, "uncond", cfg, self.seed, self.batch_size, self.num)
            row["frechet"] = classifier_frechet(self.classifier, fake, self.real_statistics)
        if self.fp:
            labels = self.labels if self.fp == "cfp" else None
            _, _, pred = self.predict(self.fp, cfg, classes=labels)  # guidance applies to cfp only (decode)
            scores = frame_prediction_scores(pred, self.real, self.cond_frames)
            row["fp_psnr"], row["fp_ssim"] = scores["psnr"], scores["ssim"]
        row["seconds"] = time.perf_counter() - start
        return row

    def references(self) -> list[dict[str, Any]]:
        """Rows that bound the model: real clips (classifier ceiling, Frechet floor), copy-last-frame,
        the tokenizer's round trip."""
        row = lambda **values: {"method": None, **dict.fromkeys(("class_accuracy", "frechet", "fp_psnr", "fp_ssim")),
                                **values}
        accuracy = 100 * class_accuracy(self.classifier, self.real, self.labels)
        floor = classifier_frechet(self.classifier, self.reference, self.real)
        rows = [row(method="real test clips", class_accuracy=accuracy, frechet=floor)]
        if self.fp:
            scores = frame_prediction_scores(self.reconstruction, self.real, self.cond_frames)
            rows.append(row(method="copy last frame", fp_psnr=scores["copy_psnr"], fp_ssim=scores["copy_ssim"]))
            rows.append(row(method="tokenizer round trip (ceiling)", fp_psnr=scores["psnr"], fp_ssim=scores["ssim"]))
        return rows
