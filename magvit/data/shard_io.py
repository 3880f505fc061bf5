"""Samples as WebDataset tar members, for `magvit.data.shards`: encoding a sample to bytes and back,
and writing and reading tar files.

A sample is the run of consecutive members sharing a key (`000000042.mp4`, `000000042.cls`, ...), as
WebDataset groups them. Video is an MP4 (H.264 in 4:4:4 at crf 10 through PyAV: visually lossless,
mean error about 0.1 of 255) or an `.npy` of uint8 frames (exact); a token cache's sample is one
`.safetensors` member holding its tokens, conditions and masks.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from magvit.data.base import resize_crop
from magvit.errors import MagvitError

MP4_CRF = 10  # x264 constant quality; 0 would be lossless in YUV (the RGB <-> YUV rounding stays)
Members = dict[str, bytes]  # extension -> bytes of one sample


def _pyav():
    try:
        import av
    except ImportError:
        raise MagvitError("mp4 shards need PyAV: pip install av (or magvit[pyav]), or write encode=frames") from None
    return av


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
    """(T, H, W, 3) uint8 -> an MP4 file's bytes (H.264, yuv444p: no chroma subsampling)."""
    av = _pyav()
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        stream.options = {"crf": str(MP4_CRF)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def decode_mp4(data: bytes) -> np.ndarray:
    """An MP4 file's bytes -> (T, H, W, 3) uint8."""
    with _pyav().open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def video_samples(dataset: Dataset, encode: str, fps: float) -> Iterator[tuple[str, Members]]:
    """(key, members) of every sample of a map-style dataset, in its order; `encode`: mp4 | frames."""
    from magvit.media import to_uint8

    items = getattr(dataset, "items", None)  # a folder dataset's files: sample i from items[i]
    for i in range(len(dataset)):
        sample = dataset[i]
        frames = to_uint8(sample["video"])  # (T, H, W, 3)
        if encode == "mp4":
            members = {"mp4": encode_mp4(frames, fps)}
        else:
            buffer = io.BytesIO()
            np.save(buffer, frames, allow_pickle=False)
            members = {"npy": buffer.getvalue()}
        if "label" in sample:
            members["cls"] = str(int(sample["label"])).encode()
        source = str(items[i]) if items is not None else f"{type(dataset).__name__}[{i}]"
        meta = {"index": i, "source": source, "frames": frames.shape[0], "size": list(frames.shape[1:3])}
        members["json"] = json.dumps(meta).encode()
        yield f"{i:09d}", members


def decode_sample(members: Members, frames: int | None = None, size: int | None = None) -> dict[str, Any]:
    """One sample's members -> {"video": (3, T, H, W) in [-1, 1], "label"?} (the first `frames` frames,
    the centre square resized to `size`, when set), or a token cache's {"tokens", "label" (-1: none),
    "cond.<task>", "mask.<task>"}."""
    if "safetensors" in members:
        from safetensors.torch import load

        out: dict[str, Any] = {"label": int(members["cls"]) if "cls" in members else -1}
        for key, value in load(members["safetensors"]).items():
            out[key] = value.bool() if key.startswith("mask.") else value.long()
        return out
    from magvit.media import from_uint8

    clip = decode_mp4(members["mp4"]) if "mp4" in members else np.load(io.BytesIO(members["npy"]), allow_pickle=False)
    if frames is not None:
        if len(clip) < frames:
            raise ValueError(f"{len(clip)} frames, fewer than frames={frames}")
        clip = clip[:frames]
    pixels = torch.from_numpy(np.ascontiguousarray(clip))  # (T, H, W, 3) uint8
    sample: dict[str, Any] = {"video": resize_crop(pixels, size) if size else from_uint8(pixels)}
    if "cls" in members:
        sample["label"] = int(members["cls"])
    return sample


def write_tar(path: Path, samples: Iterator[tuple[str, Members]]) -> int:
    """Write the samples' members as one tar file; -> how many samples."""
    count = 0
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            count += 1
    return count


def read_tar(path: Path, wanted: set[int]) -> Iterator[tuple[int, Members]]:
    """(sample number in the shard, members) of the `wanted` samples, in order; the members of the others
    are skipped unread (tarfile seeks past them). Stops after the last wanted sample."""
    last, number, key, members = max(wanted), -1, None, {}
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            stem, _, extension = info.name.rsplit("/", 1)[-1].partition(".")
            if stem != key:  # a new sample begins
                if number in wanted:
                    yield number, members
                if number >= last:
                    return
                number, key, members = number + 1, stem, {}
            if number in wanted:
                members[extension] = tar.extractfile(info).read()
    if number in wanted:
        yield number, members
