"""Writing clips and grids, and reading them back with decord."""

import numpy as np
import pytest
import torch

from magvit.errors import MagvitError
from magvit.media import from_uint8, make_grid, read_video, to_uint8, write_image_grid, write_video
from magvit.metrics import psnr


def test_mp4_round_trip_through_decord(tmp_path, digit_clips):
    clip = digit_clips[0]  # (3, 16, 32, 32)
    path = write_video(tmp_path / "clip.mp4", clip, fps=10)
    back, fps = read_video(path)
    assert back.shape == clip.shape and fps == pytest.approx(10, rel=0.01)
    quality = psnr(back[None], clip[None]).item()
    assert quality > 30, f"MP4 round trip PSNR {quality:.1f} dB"


def test_mp4_with_odd_sides(tmp_path):
    clip = torch.rand(3, 5, 15, 21) * 2 - 1
    back, _ = read_video(write_video(tmp_path / "odd.mp4", clip))
    assert back.shape == (3, 5, 16, 22)


def test_gif_round_trip(tmp_path, digit_clips):
    from PIL import Image, ImageSequence

    path = write_video(tmp_path / "clip.gif", digit_clips[1], fps=5)
    with Image.open(path) as gif:
        assert gif.info["loop"] == 0
        # Pillow merges identical consecutive frames into one of the summed duration: expand them back
        frames = []
        for f in ImageSequence.Iterator(gif):
            repeat, rest = divmod(f.info["duration"], 200)
            assert rest == 0
            frames += [np.asarray(f.convert("RGB"))] * repeat
    assert len(frames) == 16 and frames[0].shape == (32, 32, 3)
    assert np.abs(np.stack(frames).astype(int) - to_uint8(digit_clips[1]).astype(int)).max() <= 8


def test_grid_and_png(tmp_path, digit_clips):
    from PIL import Image

    grid = make_grid(digit_clips, nrow=2, padding=2)
    assert grid.shape == (3, 16, 36, 70)
    assert torch.equal(grid[:, :, 2:34, 36:68], digit_clips[1])
    path = write_image_grid(tmp_path / "g.png", digit_clips[:, :, :1])
    assert Image.open(path).size == (70, 36)


def test_uint8_conversions_round_trip():
    frames = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    assert np.array_equal(to_uint8(from_uint8(frames)), frames.numpy())


def test_bad_files_give_one_clear_error(tmp_path, capfd):
    with pytest.raises(MagvitError, match="not found"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(MagvitError, match="cannot decode"):
        read_video(tmp_path / "bad.mp4")
    assert capfd.readouterr().err == "", "decord's own C++ error output is silenced: the MagvitError is the one line"
    with pytest.raises(MagvitError, match="unsupported video format"):
        write_video(tmp_path / "x.avi", torch.zeros(3, 2, 8, 8))
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"
