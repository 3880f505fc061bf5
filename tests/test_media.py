"""Writing clips and grids, and reading them back with either reader (decord, PyAV): the same frames,
counts, fps and one-line errors; every format the suffix names (AVI, WebM, MKV, JPEG) as a real file of
it; GIF and animated WebP read through Pillow whatever the reader; writes atomic."""

import numpy as np
import pytest
import torch

from magvit.errors import MagvitError, first_line
from magvit.media import (
    VIDEO_READERS,
    from_uint8,
    make_grid,
    open_video,
    read_video,
    to_uint8,
    video_reader_name,
    write_grid,
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
    back, fps, _ = read_video(path)
    assert back.shape == clip.shape and fps == pytest.approx(10, rel=0.01)
    quality = psnr(back[None], clip[None]).item()
    assert quality > 30, f"MP4 round trip PSNR {quality:.1f} dB"


def test_mp4_with_odd_sides(tmp_path, reader):
    clip = torch.rand(3, 5, 15, 21) * 2 - 1
    back, _, _ = read_video(write_video(tmp_path / "odd.mp4", clip))
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
    with pytest.raises(MagvitError, match="unsupported video format '.xyz'; use one of .mp4, .gif, .mkv, .webm, .avi"):
        write_video(tmp_path / "x.xyz", torch.zeros(3, 2, 8, 8))
    with pytest.raises(MagvitError, match=r"cannot write '.tif'; use one of .mp4, .*, .png, .jpg, .jpeg"):
        write_grid(tmp_path / "x.tif", torch.zeros(1, 3, 2, 8, 8))
    assert not (tmp_path / "x.xyz").exists() and not (tmp_path / "x.tif").exists()
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


@pytest.mark.parametrize("suffix, container, codec", [
    (".avi", "avi", "mpeg4"), (".webm", "matroska,webm", "vp9"), (".mkv", "matroska,webm", "h264"),
])
def test_each_video_suffix_writes_a_real_file_of_that_format(tmp_path, digit_clips, suffix, container, codec):
    import av

    path = write_grid(tmp_path / f"grid{suffix}", digit_clips, fps=10)  # (3, 16, 36, 70) grid
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and path.is_file()
    with av.open(str(path)) as video:
        stream = video.streams.video[0]
        assert video.format.name == container and stream.codec_context.name == codec
        frames = [frame.to_ndarray(format="rgb24") for frame in video.decode(stream)]
    assert len(frames) == 16 and frames[0].shape == (36, 70, 3)
    quality = psnr(from_uint8(np.stack(frames))[None], make_grid(digit_clips)[None]).item()
    assert quality > 25, f"{suffix} round trip PSNR {quality:.1f} dB"


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".png"])
def test_image_suffixes_write_the_first_frames_grid_in_that_format(tmp_path, digit_clips, suffix):
    from PIL import Image

    path = write_grid(tmp_path / f"grid{suffix}", digit_clips)
    with Image.open(path) as image:
        assert image.format == ("PNG" if suffix == ".png" else "JPEG") and image.size == (70, 36)
        pixels = np.asarray(image.convert("RGB"))
    assert np.abs(pixels.astype(int) - to_uint8(make_grid(digit_clips[:, :, :1]))[0].astype(int)).mean() < 4


def test_a_killed_write_leaves_no_file_under_the_final_name(tmp_path, digit_clips, monkeypatch):
    import imageio.v3 as iio

    def killed(path, *args, **kwargs):
        open(path, "wb").write(b"half a video")  # the writer had started
        raise KeyboardInterrupt

    monkeypatch.setattr(iio, "imwrite", killed)
    for name in ("clip.mp4", "clip.gif", "clip.avi"):
        with pytest.raises(KeyboardInterrupt):
            write_video(tmp_path / name, digit_clips[0])
    assert list(tmp_path.iterdir()) == [], "neither the final name nor a temporary file is left"


def test_a_gif_reads_with_its_frame_count_whatever_the_reader(tmp_path, digit_clips, reader):
    """Pillow's GIF writer merges identical consecutive frames into one longer frame: reading counts
    it as many times as it lasts, so the clip comes back with all its frames (decord could not read a
    GIF at all)."""
    clip = digit_clips[0].clone()  # (3, 16, 32, 32)
    clip[:, 4:9] = clip[:, 4:5]  # five identical frames, stored as one
    for fps in (8, 5, 24):
        back, read_fps, _ = read_video(write_video(tmp_path / f"clip{fps}.gif", clip, fps=fps))
        assert back.shape == (3, 16, 32, 32) and read_fps == pytest.approx(fps, rel=0.05)
        assert np.abs(to_uint8(back).astype(int) - to_uint8(clip).astype(int)).max() <= 8
    assert len(open_video(tmp_path / "clip8.gif")) == 16
    assert read_video(tmp_path / "clip8.gif", max_frames=6)[0].shape == (3, 6, 32, 32)


def test_an_animated_webp_reads_as_a_clip(tmp_path, digit_clips, reader):
    from PIL import Image

    frames = to_uint8(digit_clips[1][:, :6])  # (6, 32, 32, 3)
    Image.fromarray(frames[0]).save(tmp_path / "clip.webp", save_all=True, lossless=True, duration=100, loop=0,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    back, fps, _ = read_video(tmp_path / "clip.webp")
    assert back.shape == (3, 6, 32, 32) and fps == pytest.approx(10)
    assert np.array_equal(to_uint8(back), frames)


def test_read_errors_are_whole_lines(tmp_path, reader):
    (tmp_path / "bad.gif").write_text("not a gif")
    with pytest.raises(MagvitError, match=r"bad.gif: cannot decode video \(cannot identify image file .*bad.gif'\)$"):
        read_video(tmp_path / "bad.gif")
    # decord's message for a GIF, as it was: its "[time] file.cc:line: " prefix goes, nothing is cut
    decord = ("[11:08:24] /github/workspace/src/video/video_reader.cc:270: [/tmp/fp.gif] Failed to measure "
              "duration/frame-count due to broken metadata.")
    whole = "[/tmp/fp.gif] Failed to measure duration/frame-count due to broken metadata."
    assert first_line(RuntimeError(decord)) == whole
    long = " ".join(["word"] * 80)
    assert first_line(ValueError(long + "\nsecond line")) == long and first_line(OSError()) == "OSError"
