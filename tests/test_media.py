"""Writing clips and grids, and reading them back with either reader (decord, PyAV): the same frames,
counts, fps and one-line errors."""

import numpy as np
import pytest
import torch

from magvit.errors import MagvitError
from magvit.media import (
    VIDEO_READERS,
    from_uint8,
    make_grid,
    open_video,
    read_video,
    to_uint8,
    video_reader_name,
    write_image_grid,
    write_video,
)
from magvit.metrics import psnr


@pytest.fixture(params=VIDEO_READERS)
def reader(request, monkeypatch):
    """Each test that takes it runs once per reader (skipped where that reader is not installed)."""
    pytest.importorskip({"decord": "decord", "pyav": "av"}[request.param])
    monkeypatch.setenv("MAGVIT_VIDEO_READER", request.param)
    return request.param


def test_mp4_round_trip(tmp_path, digit_clips, reader):
    clip = digit_clips[0]  # (3, 16, 32, 32)
    path = write_video(tmp_path / "clip.mp4", clip, fps=10)
    back, fps = read_video(path)
    assert back.shape == clip.shape and fps == pytest.approx(10, rel=0.01)
    quality = psnr(back[None], clip[None]).item()
    assert quality > 30, f"MP4 round trip PSNR {quality:.1f} dB"


def test_mp4_with_odd_sides(tmp_path, reader):
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


def test_bad_files_give_one_clear_error(tmp_path, capfd, reader):
    with pytest.raises(MagvitError, match="not found"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(MagvitError, match="cannot decode"):
        read_video(tmp_path / "bad.mp4")
    data = write_video(tmp_path / "ok.mp4", torch.zeros(3, 8, 16, 16)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(MagvitError, match="cannot decode"):
        read_video(tmp_path / "cut.mp4")
    assert capfd.readouterr().err == "", "the decoder's own error output is silenced: the MagvitError is the one line"
    with pytest.raises(MagvitError, match="unsupported video format"):
        write_video(tmp_path / "x.avi", torch.zeros(3, 2, 8, 8))
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"


def test_both_readers_give_the_same_frames(tmp_path, digit_clips):
    pytest.importorskip("decord")
    pytest.importorskip("av")
    path = write_video(tmp_path / "clip.mp4", digit_clips[0], fps=12)
    readers = {name: open_video(path, name) for name in VIDEO_READERS}
    assert {len(r) for r in readers.values()} == {16} and {round(r.fps, 3) for r in readers.values()} == {12.0}
    for indices in ([0, 15], [3, 5, 7, 9], [2, 1, 2]):  # any order, repeats, after an earlier read
        batches = [r.get_batch(indices) for r in readers.values()]
        assert batches[0].shape == (len(indices), 32, 32, 3) and batches[0].dtype == np.uint8
        assert np.abs(batches[0].astype(int) - batches[1].astype(int)).max() <= 2


def test_the_reader_is_decord_where_installed_else_pyav(monkeypatch):
    import builtins

    monkeypatch.delenv("MAGVIT_VIDEO_READER", raising=False)
    real_import = builtins.__import__

    def without_decord(name, *args, **kwargs):
        if name == "decord":
            raise ImportError("no decord wheel for this platform")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_decord)
    assert video_reader_name() == "pyav"
    monkeypatch.setenv("MAGVIT_VIDEO_READER", "opencv")
    with pytest.raises(MagvitError, match="MAGVIT_VIDEO_READER must be one of decord, pyav"):
        video_reader_name()
