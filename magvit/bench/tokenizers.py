"""`magvit bench tokenizers`: tokenizers side by side on the same clips.

Each tokenizer is a saved folder (`Tokenizer.from_pretrained`) or `name:preset` (`build_tokenizer`, random
weights: the table says so). All of them read the same clips at the same size. Token grids tile
different clip lengths (vqgan2d any, MAGVIT's 3D-VQ 4k frames, MAGVIT-v2's causal tokenizer 1 + 4k:
16 and 17 frames in the papers), so each tokenizer reconstructs the longest prefix of the clips its
own tiling rule allows (column `frames`), and the quality is scored twice: on the row's own frames,
and on the frames every row reconstructs (the shortest prefix: the same pixels for every row, the
fair comparison). A tokenizer that tiles no prefix, or not the frame size, is an error naming it and
the fix. Per tokenizer: reconstruction PSNR / SSIM / LPIPS, FVD / FID when a local
feature-extractor file is given, codebook usage and perplexity, how stable the ids are from one latent
frame to the next (the share of positions whose id, or whose bit for LFQ, equals the previous latent
frame's: what a transformer can copy; a tokenizer whose codes all flip on a still scene leaves it
nothing to learn from, BENCHMARKS.md section 12), tokens per clip and bits per pixel
(tokens x log2(codebook) / pixels, pixels = frames x height x width), parameters, encode and decode
clips/s and the peak memory of one encode + decode. With `--compile`, the same tokenizer compiled
(torch.compile of its encoder and decoder, magvit.runtime) is timed next to the eager one, with the
share of its ids equal to the eager ids and its decode's largest difference; with a bf16 / fp16
`--dtype`, the share of ids equal to the fp32 ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from magvit.bench.measure import PeakMemory, batches, count_parameters, eval_mode, time_call
from magvit.bench.report import Column, Table, environment
from magvit.errors import MagvitError
from magvit.evaluation.features import build_lpips, load_image_extractor, load_video_extractor, lpips_per_clip
from magvit.metrics import code_histogram, feature_statistics, frechet_distance, psnr, ssim
from magvit.runtime import autocast, channels_last, compile_tokenizer, eager
from magvit.tokenizers import Tokenizer, build_tokenizer


@dataclass
class Candidate:
    label: str  # as the user wrote it
    model: Tokenizer
    random_weights: bool


def resolve_tokenizer(spec: str) -> Candidate:
    """A saved tokenizer folder, or `name:preset` built with random weights."""
    path = Path(spec)
    if path.is_dir():
        return Candidate(spec, Tokenizer.from_pretrained(path), random_weights=False)
    name, sep, preset = spec.partition(":")
    if not sep or not name or not preset:
        raise MagvitError(
            f"tokenizer {spec!r}: not a folder with config.json + model.safetensors, nor name:preset "
            "(e.g. vq3d:tiny)"
        )
    return Candidate(spec, build_tokenizer(name, preset), random_weights=True)


DEFAULT_FRAMES = 16  # MAGVIT's clip length: by default every row reconstructs at least this many frames
MAX_FRAMES = 128  # the search for a frame count a tokenizer tiles gives up after this many lengths


def _tiling_error(model: Tokenizer, frames: int, size: int) -> str:
    """Why `model` cannot tile (frames, size, size) clips; "" when it can."""
    try:
        model.token_shape(frames, size, size)
    except MagvitError as e:
        return str(e)
    return ""


def _tiles(model: Tokenizer, frames: int, size: int) -> bool:
    return not _tiling_error(model, frames, size)


def _shortest_tiled(model: Tokenizer, size: int, at_least: int = 1) -> int | None:
    """The fewest frames >= `at_least` that `model` tiles at size x size (None: none within MAX_FRAMES)."""
    return next((f for f in range(at_least, at_least + MAX_FRAMES) if _tiles(model, f, size)), None)


def longest_prefix(model: Tokenizer, frames: int, size: int) -> int | None:
    """The most frames <= `frames` that `model` tiles at size x size: the prefix of each clip it
    reconstructs (None: no prefix tiles)."""
    return next((f for f in range(frames, 0, -1) if _tiles(model, f, size)), None)


def default_frames(candidates: list[Candidate], size: int) -> int:
    """The shortest clip from which every tokenizer reconstructs a prefix of at least DEFAULT_FRAMES
    frames, from each one's own tiling rule: 16 for vqgan2d (any) and vq3d (4k), 17 once the causal
    tokenizer (1 + 4k) is among them, which then reconstructs all 17 while vq3d takes the first 16."""
    shortest = [_shortest_tiled(c.model, size, DEFAULT_FRAMES) for c in candidates]
    return max((f for f in shortest if f is not None), default=DEFAULT_FRAMES)


def frames_each(candidates: list[Candidate], frames: int, size: int, video: bool = True) -> list[int]:
    """Frames each tokenizer reconstructs: the longest prefix of the (frames, size, size) clips it tiles.

    MagvitError naming the first tokenizer that tiles no prefix, and the fix: another --size when no
    frame count tiles at this size, else longer clips (--frames, or video instead of images)."""
    prefixes = []
    for c in candidates:
        prefix = longest_prefix(c.model, frames, size)
        if prefix is not None:
            prefixes.append(prefix)
            continue
        shortest = _shortest_tiled(c.model, size)
        if shortest is None:  # no frame count tiles: the frame size is the problem
            sizes = [s for s in range(8, 1025, 8)
                     if all(longest_prefix(o.model, frames, s) is not None for o in candidates)]
            nearest = min(sizes, key=lambda s: (abs(s - size), s)) if sizes else None
            fix = (f"use --size {nearest}, which every tokenizer here tiles (all read the same clips)" if sizes
                   else "no clip size suits all of them: benchmark these tokenizers in separate runs")
        elif video:
            fix = f"use --frames {shortest} or more (each tokenizer reconstructs the longest prefix it tiles)"
        else:
            fix = f"it needs clips of {shortest}+ frames: benchmark it on videos, not images"
        raise MagvitError(
            f"tokenizer {c.label} cannot tile any prefix of {frames}x{size}x{size} clips "
            f"({_tiling_error(c.model, frames, size)}); {fix}"
        )
    return prefixes


def frame_span(frames: int) -> str:
    """The frames a row reconstructs, 0-based and inclusive: 17 -> "0-16"."""
    return f"0-{frames - 1}" if frames > 1 else "0"


def data_options(data: str, frames: int | None, size: int, num_clips: int, default: int = DEFAULT_FRAMES) -> dict:
    """The dataset config of `--data`: a dataset name (its held-out split) or a folder of videos / images.
    Clips have `frames` frames, or `default` when None (images: one)."""
    from magvit.data import DATASETS
    from magvit.data.folders import VIDEO_EXTENSIONS

    if num_clips < 1:
        raise MagvitError(f"--num-clips must be at least 1, got {num_clips}")
    if Path(data).is_dir():
        if any(p.suffix.lower() in VIDEO_EXTENSIONS for p in Path(data).rglob("*")):
            return dict(name="video_folder", root=data, frames=frames or default, size=size, random_clip=False)
        if frames not in (None, 1):
            raise MagvitError(f"--data {data}: a folder of images gives one-frame clips; drop --frames")
        return dict(name="image_folder", root=data, size=size)
    if data in DATASETS and data not in ("video_folder", "image_folder"):
        held_out = {"moving_digits": dict(split="test", num_samples=num_clips), "bundled_clips": dict(split="val")}
        return dict(name=data, frames=frames or default, size=size, **held_out.get(data, {}))
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


QUALITY = [Column("psnr", "PSNR dB", 4), Column("ssim", "SSIM"), Column("lpips", "LPIPS"), Column("fvd", "rFVD"),
           Column("fid", "rFID")]


SPEED_COMPILED = [Column("encode_compiled_clips_per_s", "encode clips/s compiled"),
                  Column("decode_compiled_clips_per_s", "decode clips/s compiled"),
                  Column("compile_s", "compile s"), Column("compiled_ids_equal_pct", "compiled ids = eager %"),
                  Column("compiled_decode_max_diff", "compiled decode max diff")]


def columns(shared: int | None = None, compiled: bool = False, low_precision: bool = False) -> list[Column]:
    """The table's columns; with `shared`, the quality columns again on the first `shared` frames
    (keys `psnr_shared`..., headers "PSNR dB (0-15)"...); with `compiled`, the compiled speed next to
    the eager one; with `low_precision`, the share of ids equal to the fp32 ones."""
    span = frame_span(shared) if shared else ""
    again = [Column(f"{c.key}_shared", f"{c.header} ({span})", c.digits) for c in QUALITY] if shared else []
    ids = [Column("ids_fp32_pct", "ids = fp32 %")] if low_precision else []
    return [
        Column("tokenizer", "tokenizer"), Column("weights", "weights"), Column("frames", "frames"),
        Column("token_grid", "token grid"), Column("tokens_per_clip", "tokens/clip"),
        Column("codebook_size", "codebook"), Column("bits_per_pixel", "bits/pixel"), Column("params_m", "params M"),
        *QUALITY, *again,
        Column("usage_pct", "usage %"), Column("perplexity", "perplexity"),
        Column("same_id_pct", "id = previous %"), Column("same_bit_pct", "bit = previous %"),
        Column("encode_clips_per_s", "encode clips/s"), Column("decode_clips_per_s", "decode clips/s"),
        *(SPEED_COMPILED if compiled else []), *ids, Column("peak_mib", "peak MiB"),
    ]


@dataclass
class Extractors:
    lpips: torch.nn.Module | None
    video: Callable[[Tensor], Tensor] | None  # I3D: clips -> (B, D)
    image: Callable[[Tensor], Tensor] | None  # Inception: frames -> (N, D)


def _features(extractors: Extractors, clips: Tensor) -> dict[str, Tensor]:
    """Features of clips (B, 3, T, H, W) for the extractors given: "fvd" (B, D) from I3D, "fid"
    (B * T, D) from Inception on every frame."""
    out = {}
    if extractors.video is not None:
        out["fvd"] = extractors.video(clips).float().cpu()
    if extractors.image is not None:
        out["fid"] = extractors.image(rearrange(clips, "b c t h w -> (b t) c h w")).float().cpu()
    return out


def real_features(extractors: Extractors, clips: Tensor, device: torch.device, batch_size: int) -> dict[str, Tensor]:
    """`_features` of every real clip (N, 3, T, H, W), batch by batch."""
    parts: dict[str, list[Tensor]] = {}
    with torch.inference_mode():
        for batch in batches(clips, batch_size):
            for key, feats in _features(extractors, batch.to(device)).items():
                parts.setdefault(key, []).append(feats)
    return {key: torch.cat(p) for key, p in parts.items()}


class Quality:
    """PSNR / SSIM / LPIPS sums and reconstruction features on the first `frames` frames of the clips."""

    def __init__(self, frames: int, extractors: Extractors):
        self.frames, self.extractors = frames, extractors
        self.sums = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0}
        self.fake: dict[str, list[Tensor]] = {}
        self.count = 0

    def add(self, recon: Tensor, real: Tensor) -> None:
        recon, real = recon[:, :, : self.frames], real[:, :, : self.frames]  # (B, 3, frames, H, W)
        self.count += len(real)
        self.sums["psnr"] += psnr(recon, real).sum().item()
        self.sums["ssim"] += ssim(recon, real).sum().item()
        if self.extractors.lpips is not None:
            self.sums["lpips"] += lpips_per_clip(self.extractors.lpips, recon, real).sum().item()
        for key, feats in _features(self.extractors, recon).items():
            self.fake.setdefault(key, []).append(feats)

    def scores(self, real: dict[str, Tensor]) -> dict[str, float | None]:
        """Means over the clips, and the Frechet distances to `real`: features of the same frames."""
        scores: dict[str, float | None] = {key: total / self.count for key, total in self.sums.items()}
        if self.extractors.lpips is None:
            scores["lpips"] = None
        for key in ("fvd", "fid"):
            fake = feature_statistics(torch.cat(self.fake[key])) if key in self.fake else None
            scores[key] = frechet_distance(*feature_statistics(real[key]), *fake) if fake else None
        return scores


def bench_one(
    candidate: Candidate, clips: Tensor, shared: int, extractors: Extractors, real: dict[int, dict[str, Tensor]],
    device: torch.device, dtype: str, batch_size: int, warmup: int, repeats: int, compile: bool = False,
    layout: bool = False,
) -> tuple[dict, str]:
    """One table row on `clips` (N, 3, T, H, W), the frames this tokenizer tiles, and the kind of peak
    memory measured. Quality is scored on all T frames and again on the first `shared` frames (those
    every row reconstructs); `real` holds the real clips' features per frame count. `layout`: conv
    weights channels-last (magvit.runtime.channels_last)."""
    model = candidate.model.to(device)
    if layout:
        channels_last(model)
    frames, height, width = clips.shape[2:]
    t, h, w = model.token_shape(frames, height, width)
    # on its own frames, and on the shared prefix when that is shorter
    qualities = [Quality(frames, extractors)] + ([Quality(shared, extractors)] if shared < frames else [])
    histogram = torch.zeros(model.codebook_size, dtype=torch.float64)
    same = torch.zeros(2, dtype=torch.float64)  # ids, bits equal to the previous latent frame's (summed)
    with eval_mode(model), autocast(device, dtype):
        for batch in batches(clips, batch_size):
            x = batch.to(device)
            ids = model.encode(x)  # (B, t, h, w)
            recon = model.decode(ids).float().clamp(-1, 1)  # (B, 3, T, H, W)
            histogram += code_histogram(ids, model.codebook_size)
            same += temporal_agreement(ids, model.codebook_size) * ids[:, 1:].numel()
            for quality in qualities:
                quality.add(recon, x)
        first = clips[:batch_size].to(device)
        ids = model.encode(first)
        encode_s = time_call(lambda: model.encode(first), device, warmup, repeats)
        decode_s = time_call(lambda: model.decode(ids), device, warmup, repeats)
        with PeakMemory(device) as memory:
            model.decode(model.encode(first))
        extra = compiled_speed(model, first, ids, device, dtype, warmup, repeats) if compile else {}
    if dtype != "fp32":  # the quantizer decides in fp32, but on latents the encoder computed in low precision
        with eval_mode(model):
            extra["ids_fp32_pct"] = 100 * (model.encode(first) == ids).double().mean().item()
    model.to("cpu")
    p = histogram[histogram > 0] / histogram.sum()
    row = {
        "tokenizer": candidate.label,
        "name": model.config.name,
        "weights": "random" if candidate.random_weights else "trained",
        "frames": frame_span(frames),
        "num_frames": frames,
        "token_grid": f"{t}x{h}x{w}",
        "tokens_per_clip": t * h * w,
        "codebook_size": model.codebook_size,
        "bits_per_pixel": t * h * w * math.log2(model.codebook_size) / (frames * height * width),
        "params_m": count_parameters(model) / 1e6,
        **qualities[0].scores(real[frames]),
        "shared_frames": frame_span(shared),
        **{f"{key}_shared": value for key, value in qualities[-1].scores(real[shared]).items()},
        "usage_pct": 100.0 * (histogram > 0).double().mean().item(),
        "perplexity": math.exp(-(p * p.log()).sum().item()),
        "same_id_pct": None if t < 2 else 100 * same[0].item() / (len(clips) * (t - 1) * h * w),
        # an id's bits are its code only for LFQ (signs); a VQ / FSQ id's bits mean nothing
        "same_bit_pct": None if t < 2 or model.config.quantizer.name != "lfq" else
        100 * same[1].item() / (len(clips) * (t - 1) * h * w),
        "encode_clips_per_s": len(first) / encode_s,
        "decode_clips_per_s": len(first) / decode_s,
        **extra,
        "peak_mib": memory.bytes / 2**20,
    }
    return row, memory.kind


def temporal_agreement(ids: Tensor, codebook_size: int) -> Tensor:
    """ids (B, t, h, w) -> (2,) float64: the share of positions of latent frames 1..t-1 whose id equals
    the previous latent frame's at the same place, and the share of their bits that do (the bits of the
    id's binary code: LFQ's sign bits; for VQ or FSQ ids only the first share means anything).
    (0, 0) when t < 2."""
    if ids.shape[1] < 2:
        return torch.zeros(2, dtype=torch.float64)
    now, before = ids[:, 1:].long(), ids[:, :-1].long()
    bits = max(1, (codebook_size - 1).bit_length())
    differ = now ^ before  # (B, t-1, h, w): the bits that changed
    flipped = sum(((differ >> b) & 1).double().sum() for b in range(bits))
    return torch.stack([(now == before).double().mean(), 1 - flipped / (differ.numel() * bits)])


def compiled_speed(model: Tokenizer, first: Tensor, ids: Tensor, device: torch.device, dtype: str, warmup: int,
                   repeats: int) -> dict[str, float]:
    """The tokenizer with its encoder and decoder compiled, on the batch `first` whose eager ids are `ids`:
    compile seconds (the first encode and decode), clips/s, ids equal to the eager ones (%), the largest
    difference of the decoded pixels. The model is eager again afterwards."""
    import time

    reference = model.decode(ids).float()  # (B, 3, T, H, W), eager
    compile_tokenizer(model)
    try:
        start = time.perf_counter()
        compiled_ids = model.encode(first)
        recon = model.decode(ids).float()
        compile_s = time.perf_counter() - start
        encode_s = time_call(lambda: model.encode(first), device, warmup, repeats)
        decode_s = time_call(lambda: model.decode(ids), device, warmup, repeats)
    finally:
        eager(model.encoder)
        eager(model.decoder)
    return {
        "encode_compiled_clips_per_s": len(first) / encode_s, "decode_compiled_clips_per_s": len(first) / decode_s,
        "compile_s": compile_s, "compiled_ids_equal_pct": 100 * (compiled_ids == ids).double().mean().item(),
        "compiled_decode_max_diff": (recon - reference).abs().max().item(),
    }


def bench_tokenizers(
    specs: list[str], data: str, frames: int | None = None, size: int = 64, device: torch.device | str = "cpu",
    dtype: str = "fp32", batch_size: int = 8, num_clips: int = 32, i3d: str | None = None,
    inception: str | None = None, warmup: int = 1, repeats: int = 3, argv: list[str] | None = None,
    compile: bool = False, layout: bool = False,
) -> Table:
    """Benchmark every tokenizer in `specs` on the same `num_clips` clips of `data`; one row each.

    Clips have `frames` frames (default: `default_frames`); each tokenizer reconstructs the longest
    prefix it tiles, and every row is also scored on the prefix all of them share. `compile` adds the
    compiled speed, `layout` runs the convs channels-last."""
    device = torch.device(device)
    if not specs:
        raise MagvitError("--tokenizers needs at least one tokenizer (a folder or name:preset)")
    if batch_size < 1:
        raise MagvitError(f"--batch-size must be at least 1, got {batch_size}")
    if frames is not None and frames < 1:
        raise MagvitError(f"--frames must be at least 1, got {frames}")
    candidates = [resolve_tokenizer(s) for s in specs]
    options = data_options(data, frames, size, num_clips, default=default_frames(candidates, size))
    frames = options.get("frames", 1)
    prefixes = frames_each(candidates, frames, size, video="frames" in options)  # errors before reading any data
    shared = min(prefixes)
    clips = load_clips(options, num_clips)
    lpips_model, lpips_reason = build_lpips(device)
    extractors = Extractors(
        lpips=lpips_model,
        video=load_video_extractor(i3d, device) if i3d else None,
        image=load_image_extractor(inception, device) if inception else None,
    )
    if extractors.video is not None and clips.shape[2] == 1:
        raise MagvitError("--i3d computes FVD on video; these are images (one frame): use --inception for FID")
    # the real clips' features on every frame count a row is scored on: (N, D) per clip, (N * T, D) per frame
    real = {f: real_features(extractors, clips[:, :, :f], device, batch_size) for f in sorted(set(prefixes))}
    differ = len(set(prefixes)) > 1
    table = Table(
        "tokenizers", f"Tokenizers on {len(clips)} clips of {data} ({frames}x{size}x{size}), {dtype}"
        + (", channels-last" if layout else ""),
        columns(shared if differ else None, compile, dtype != "fp32"), environment=environment(device, argv),
    )
    for candidate, prefix in zip(candidates, prefixes):
        row, memory_kind = bench_one(candidate, clips[:, :, :prefix], shared, extractors, real, device, dtype,
                                     batch_size, warmup, repeats, compile, layout)
        table.rows.append(row)
        table.note(f"peak memory: {memory_kind}, one encode + decode of {min(batch_size, len(clips))} clips")
    if differ:
        span = frame_span(shared)
        table.note(
            f"frames: each tokenizer reconstructs the longest prefix of the {frames}-frame clips its token grid "
            f"tiles; the ({span}) columns score every row on frames {span}, which all rows reconstruct (the same "
            "pixels for every row: compare rows there). Tokens/clip, bits/pixel, speed and memory are on each "
            "row's own frames"
        )
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
    if compile:
        table.note("compiled: torch.compile of the encoder and decoder (the quantizer stays eager and fp32), timed "
                   "after its first encode + decode (compile s); ids and decoded pixels compared with the eager "
                   "model's on the same batch")
    if dtype != "fp32":
        table.note(f"ids = fp32 %: the {dtype} encoder's ids equal to the fp32 encoder's on the timed batch (the "
                   "quantizer runs in fp32 either way)")
    return table
