"""`magvit bench tokenizers`: tokenizers side by side on the same clips.

Each tokenizer is a saved folder (`load_tokenizer`) or `name:preset` (`build_tokenizer`, random
weights: the table says so). All of them see the same clips at the same size, the only fair
comparison, so a tokenizer whose token grid cannot tile that size is an error that names the
frame counts every tokenizer accepts. Per tokenizer: reconstruction PSNR / SSIM / LPIPS, FVD / FID
when a local feature-extractor file is given, codebook usage and perplexity, tokens per clip and
bits per pixel (tokens x log2(codebook) / pixels, pixels = frames x height x width), parameters,
encode and decode clips/s and the peak memory of one encode + decode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from magvit.bench.features import build_lpips, load_image_extractor, load_video_extractor, lpips_per_clip
from magvit.bench.measure import PeakMemory, autocast, batches, count_parameters, eval_mode, time_call
from magvit.bench.report import Column, Table, environment
from magvit.errors import MagvitError
from magvit.metrics import code_histogram, feature_statistics, frechet_distance, psnr, ssim
from magvit.tokenizers import Tokenizer, build_tokenizer, load_tokenizer


@dataclass
class Candidate:
    label: str  # as the user wrote it
    model: Tokenizer
    random_weights: bool


def resolve_tokenizer(spec: str) -> Candidate:
    """A saved tokenizer folder, or `name:preset` built with random weights."""
    path = Path(spec)
    if path.is_dir():
        return Candidate(spec, load_tokenizer(path), random_weights=False)
    name, sep, preset = spec.partition(":")
    if not sep or not name or not preset:
        raise MagvitError(
            f"tokenizer {spec!r}: not a folder with config.json + model.safetensors, nor name:preset "
            "(e.g. vq3d:tiny)"
        )
    return Candidate(spec, build_tokenizer(name, preset), random_weights=True)


def check_common_shape(candidates: list[Candidate], frames: int, size: int) -> None:
    """MagvitError naming the first tokenizer that cannot tile (frames, size, size) and the fix."""
    for c in candidates:
        try:
            c.model.token_shape(frames, size, size)
            continue
        except MagvitError as e:
            reason = str(e)
        if any(_tiles(c.model, f, size) for f in range(1, 129)):  # the frame count is the problem
            common = [f for f in range(1, 129) if all(_tiles(o.model, f, size) for o in candidates)]
            flag = "--frames"
        else:
            common = [s for s in range(8, 1025, 8) if all(_tiles(o.model, frames, s) for o in candidates)]
            flag = "--size"
        if common:
            nearest = min(common, key=lambda v: (abs(v - (frames if flag == "--frames" else size)), v))
            fix = f"use {flag} {nearest}, which every tokenizer here tiles (all are compared on the same clips)"
        else:
            what = "frame count" if flag == "--frames" else "clip size"
            fix = f"no {what} suits all of them: benchmark these tokenizers in separate runs"
        raise MagvitError(f"tokenizer {c.label} cannot tile {frames}x{size}x{size} clips ({reason}); {fix}")


def _tiles(model: Tokenizer, frames: int, size: int) -> bool:
    try:
        model.token_shape(frames, size, size)
    except MagvitError:
        return False
    return True


def data_options(data: str, frames: int | None, size: int, num_clips: int) -> dict:
    """The dataset config of `--data`: a dataset name (its held-out split) or a folder of videos / images."""
    from magvit.data import DATASETS
    from magvit.data.folders import VIDEO_EXTENSIONS

    if num_clips < 1:
        raise MagvitError(f"--num-clips must be at least 1, got {num_clips}")
    if Path(data).is_dir():
        if any(p.suffix.lower() in VIDEO_EXTENSIONS for p in Path(data).rglob("*")):
            return dict(name="video_folder", root=data, frames=frames or 16, size=size, random_clip=False)
        if frames not in (None, 1):
            raise MagvitError(f"--data {data}: a folder of images gives one-frame clips; drop --frames")
        return dict(name="image_folder", root=data, size=size)
    if data in DATASETS and data not in ("video_folder", "image_folder"):
        held_out = {"moving_digits": dict(split="test", num_samples=num_clips), "bundled_clips": dict(split="val")}
        return dict(name=data, frames=frames or 16, size=size, **held_out.get(data, {}))
    raise MagvitError(
        f"--data {data!r}: not a folder nor a dataset name (moving_digits, bundled_clips, or a folder of videos "
        "or images)"
    )


def load_clips(options: dict, num_clips: int) -> Tensor:
    """`num_clips` evenly spaced clips (N, 3, T, H, W) in [-1, 1] of the dataset `options` describe."""
    from magvit.config import build_registered
    from magvit.data import DATASETS, build_dataset

    dataset = build_dataset(build_registered(DATASETS, options, source="--data"))
    count = min(num_clips, len(dataset))
    # evenly spaced: the clips cover the whole set (all three bundled videos, every digit class)
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().tolist()
    return torch.stack([dataset[i]["video"] for i in indices])  # (N, 3, T, H, W)


COLUMNS = [
    Column("tokenizer", "tokenizer"), Column("weights", "weights"), Column("token_grid", "token grid"),
    Column("tokens_per_clip", "tokens/clip"), Column("codebook_size", "codebook"),
    Column("bits_per_pixel", "bits/pixel"), Column("params_m", "params M"), Column("psnr", "PSNR dB", 4),
    Column("ssim", "SSIM"), Column("lpips", "LPIPS"), Column("fvd", "rFVD"), Column("fid", "rFID"),
    Column("usage_pct", "usage %"), Column("perplexity", "perplexity"),
    Column("encode_clips_per_s", "encode clips/s"), Column("decode_clips_per_s", "decode clips/s"),
    Column("peak_mib", "peak MiB"),
]


@dataclass
class Extractors:
    lpips: torch.nn.Module | None
    video: Callable[[Tensor], Tensor] | None  # I3D: clips -> (B, D)
    image: Callable[[Tensor], Tensor] | None  # Inception: frames -> (N, D)


def _features(extract: Callable[[Tensor], Tensor] | None, clips: Tensor, per_frame: bool) -> Tensor | None:
    if extract is None:
        return None
    if per_frame:
        clips = rearrange(clips, "b c t h w -> (b t) c h w")
    return extract(clips).float().cpu()  # (N, D)


def _frechet(real: list[Tensor], fake: list[Tensor]) -> float:
    return frechet_distance(*feature_statistics(torch.cat(real)), *feature_statistics(torch.cat(fake)))


def bench_one(
    candidate: Candidate, clips: Tensor, extractors: Extractors, real: dict[str, list[Tensor]],
    device: torch.device, dtype: str, batch_size: int, warmup: int, repeats: int,
) -> tuple[dict, str]:
    """One table row, and the kind of peak memory measured."""
    model = candidate.model.to(device)
    frames, height, width = clips.shape[2:]
    t, h, w = model.token_shape(frames, height, width)
    sums = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0}
    histogram = torch.zeros(model.codebook_size, dtype=torch.float64)
    fake: dict[str, list[Tensor]] = {"fvd": [], "fid": []}
    with eval_mode(model), autocast(device, dtype):
        for batch in batches(clips, batch_size):
            x = batch.to(device)
            ids = model.encode(x)  # (B, t, h, w)
            recon = model.decode(ids).float().clamp(-1, 1)  # (B, 3, T, H, W)
            histogram += code_histogram(ids, model.codebook_size)
            sums["psnr"] += psnr(recon, x).sum().item()
            sums["ssim"] += ssim(recon, x).sum().item()
            if extractors.lpips is not None:
                sums["lpips"] += lpips_per_clip(extractors.lpips, recon, x).sum().item()
            for key, extract, per_frame in (("fvd", extractors.video, False), ("fid", extractors.image, True)):
                feats = _features(extract, recon, per_frame)
                if feats is not None:
                    fake[key].append(feats)
        first = clips[:batch_size].to(device)
        ids = model.encode(first)
        encode_s = time_call(lambda: model.encode(first), device, warmup, repeats)
        decode_s = time_call(lambda: model.decode(ids), device, warmup, repeats)
        with PeakMemory(device) as memory:
            model.decode(model.encode(first))
    model.to("cpu")
    n = len(clips)
    p = histogram[histogram > 0] / histogram.sum()
    row = {
        "tokenizer": candidate.label,
        "name": model.config.name,
        "weights": "random" if candidate.random_weights else "trained",
        "token_grid": f"{t}x{h}x{w}",
        "tokens_per_clip": t * h * w,
        "codebook_size": model.codebook_size,
        "bits_per_pixel": t * h * w * math.log2(model.codebook_size) / (frames * height * width),
        "params_m": count_parameters(model) / 1e6,
        "psnr": sums["psnr"] / n,
        "ssim": sums["ssim"] / n,
        "lpips": sums["lpips"] / n if extractors.lpips is not None else None,
        "fvd": _frechet(real["fvd"], fake["fvd"]) if fake["fvd"] else None,
        "fid": _frechet(real["fid"], fake["fid"]) if fake["fid"] else None,
        "usage_pct": 100.0 * (histogram > 0).double().mean().item(),
        "perplexity": math.exp(-(p * p.log()).sum().item()),
        "encode_clips_per_s": len(first) / encode_s,
        "decode_clips_per_s": len(first) / decode_s,
        "peak_mib": memory.bytes / 2**20,
    }
    return row, memory.kind


def bench_tokenizers(
    specs: list[str], data: str, frames: int | None = None, size: int = 64, device: torch.device | str = "cpu",
    dtype: str = "fp32", batch_size: int = 8, num_clips: int = 32, i3d: str | None = None,
    inception: str | None = None, warmup: int = 1, repeats: int = 3, argv: list[str] | None = None,
) -> Table:
    """Benchmark every tokenizer in `specs` on the same `num_clips` clips of `data`; one row each."""
    device = torch.device(device)
    if not specs:
        raise MagvitError("--tokenizers needs at least one tokenizer (a folder or name:preset)")
    if batch_size < 1:
        raise MagvitError(f"--batch-size must be at least 1, got {batch_size}")
    candidates = [resolve_tokenizer(s) for s in specs]
    options = data_options(data, frames, size, num_clips)
    frames = options.get("frames", 1)
    check_common_shape(candidates, frames, size)  # before reading any data: errors come first
    clips = load_clips(options, num_clips)
    lpips_model, lpips_reason = build_lpips(device)
    extractors = Extractors(
        lpips=lpips_model,
        video=load_video_extractor(i3d, device) if i3d else None,
        image=load_image_extractor(inception, device) if inception else None,
    )
    if extractors.video is not None and clips.shape[2] == 1:
        raise MagvitError("--i3d computes FVD on video; these are images (one frame): use --inception for FID")
    real: dict[str, list[Tensor]] = {"fvd": [], "fid": []}
    with torch.inference_mode():
        for batch in batches(clips, batch_size):
            real["fvd"].append(_features(extractors.video, batch.to(device), per_frame=False))
            real["fid"].append(_features(extractors.image, batch.to(device), per_frame=True))
    table = Table(
        "tokenizers", f"Tokenizers on {len(clips)} clips of {data} ({frames}x{size}x{size}), {dtype}",
        COLUMNS, environment=environment(device, argv),
    )
    for candidate in candidates:
        row, memory_kind = bench_one(candidate, clips, extractors, real, device, dtype, batch_size, warmup, repeats)
        table.rows.append(row)
        table.note(f"peak memory: {memory_kind}, one encode + decode of {min(batch_size, len(clips))} clips")
    if any(c.random_weights for c in candidates):
        table.note("weights 'random': name:preset tokenizers are untrained; their quality columns mean nothing")
    if lpips_reason:
        table.note(lpips_reason)
    if not i3d:
        table.note("rFVD n/a: pass --i3d PATH (a local TorchScript or safetensors I3D) to compute it")
    if not inception:
        table.note("rFID n/a: pass --inception PATH (a local TorchScript or safetensors Inception) to compute it")
    if (i3d or inception) and len(clips) < 256:
        table.note(f"rFVD / rFID over only {len(clips)} clips: compare within this table, not with papers (10k+)")
    table.note(f"speed: median of {repeats} timed calls after {warmup} warm-up on a batch of "
               f"{min(batch_size, len(clips))} clips")
    return table
