"""MagvitPipeline: from_pretrained (folder, run folder, Hub id without downloading), every task method
returns (N, 3, T, H, W) in [-1, 1], the command line gives the same samples, save_pretrained writes a
model card and reloads; ModelInfo reads older folders; tokenizers and transformers from_pretrained."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from magvit import MagvitPipeline
from magvit.cli import main
from magvit.errors import MagvitError
from magvit.inputs import TaskInputs
from magvit.release import ModelInfo, read_info, write_model_folder
from magvit.tasks import TaskOptions


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An untrained model folder: causal3d tiny (9x16x16 clips -> 3x4x4 tokens), tiny transformer,
    10 classes, trained tasks cg, fp, fi, ipc; and a summary.json."""
    from magvit.tokenizers import build_tokenizer
    from magvit.transformer import build_transformer

    root = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(0)
    tokenizer = build_tokenizer("causal3d", "tiny")
    model = build_transformer("tiny", codebook_size=tokenizer.codebook_size, num_classes=10, grid=(3, 4, 4))
    info = ModelInfo(tasks=("cg", "fp", "fi", "ipc"), task_options={"fp": TaskOptions(cond_frames=5)}, num_classes=10,
                     grid=(3, 4, 4), frames=9, size=(16, 16), fps=6.0, condition_rule="any")
    write_model_folder(root / "run" / "model", model, tokenizer, info)
    (root / "run" / "model" / "summary.json").write_text(json.dumps({"tokenizer_psnr": 12.5, "class_accuracy": 0.25}))
    return root / "run" / "model"


@pytest.fixture(scope="module")
def pipe(folder):
    return MagvitPipeline.from_pretrained(folder.parent)  # a run folder means its model/


def _check(videos, n, frames=9):
    assert videos.shape == (n, 3, frames, 16, 16) and videos.dtype == torch.float32
    assert videos.min() >= -1 and videos.max() <= 1


def test_every_task_method_returns_videos_in_range(pipe):
    fast = dict(steps=2, seed=1)
    clip = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    _check(pipe.generate(classes=[3, 7], num=3, **fast), 3)
    _check(pipe.generate(**fast), 1)
    _check(pipe.predict(clip, num=2, **fast), 2)
    _check(pipe.predict(clip[0, :, :5], cond_frames=5, **fast), 1)  # (3, T, H, W), 5 frames: the rest repeats
    _check(pipe.interpolate(torch.cat([clip, clip]), **fast), 2)  # two inputs, one sample each
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = True
    _check(pipe.inpaint(clip, box=(4, 4, 8, 8), **fast), 1)
    _check(pipe.inpaint(clip, **fast), 1)  # ipc: the model's own central region
    _check(pipe.outpaint(clip, mask=mask, **fast), 1)
    _check(pipe.edit(clip[0, :, 0], classes=[5], box=(0, 0, 8, 8), **fast), 1, frames=1)  # an image (3, H, W)


def test_dtype_runs_the_forward_passes_under_autocast(folder):
    pipe = MagvitPipeline.from_pretrained(folder, dtype=torch.bfloat16)
    assert next(pipe.model.parameters()).dtype == torch.float32  # the weights stay float32
    _check(pipe.generate(classes=[1], steps=2), 1)
    _check(pipe.predict(torch.zeros(1, 3, 9, 16, 16), steps=2), 1)


def test_the_same_seed_gives_the_same_samples_and_inputs_are_checked(pipe):
    a = pipe.generate(classes=[1, 2], num=4, batch_size=3, steps=2, seed=5)
    b = pipe.generate(classes=[1, 2], num=4, batch_size=3, steps=2, seed=5)
    assert torch.equal(a, b)
    with pytest.raises(MagvitError, match="decoding options"):
        pipe.generate(stepz=3)
    with pytest.raises(MagvitError, match="16x16"):
        pipe.predict(torch.zeros(1, 3, 9, 32, 32))
    with pytest.raises(MagvitError, match="classes 0 to 9"):
        pipe.generate(classes=[10])


def test_the_command_line_gives_the_pipelines_samples(folder, pipe, tmp_path):
    from magvit.media import make_grid, to_uint8

    args = ["generate", "--checkpoint", str(folder), "--class", "3", "--class", "5", "--num", "3", "--batch-size",
            "2", "--steps", "2", "--seed", "1", "--device", "cpu", "--out", str(tmp_path / "g.png")]
    assert main(args) == 0
    with Image.open(tmp_path / "g.png") as image:
        written = np.asarray(image.convert("RGB"))
    videos = pipe.generate(classes=[3, 5], num=3, batch_size=2, steps=2, seed=1)
    assert np.array_equal(written, to_uint8(make_grid(videos[:, :, :1]))[0])


def test_save_helpers_and_save_pretrained_with_a_model_card(folder, pipe, tmp_path):
    videos = pipe.generate(num=2, steps=2)
    for name in ("s.gif", "s.mp4", "s.png"):
        assert pipe.save(videos, tmp_path / name).is_file()
    out = pipe.save_pretrained(tmp_path / "mine")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "magvit.json", "tokenizer",
                                                "README.md", "summary.json"}
    card = (out / "README.md").read_text()
    assert "tokenizer PSNR on held-out clips (dB) | 12.5" in card and 'MagvitPipeline.from_pretrained("mine")' in card
    again = MagvitPipeline.from_pretrained(out)
    assert again.info == pipe.info
    assert torch.equal(again.generate(classes=[2], steps=2, seed=3), pipe.generate(classes=[2], steps=2, seed=3))


def test_save_keeps_existing_files_and_never_writes_over_an_input(folder, tmp_path):
    from magvit.media import read_video, write_video

    pipe = MagvitPipeline.from_pretrained(folder)
    write_video(tmp_path / "clip.mp4", torch.rand(3, 9, 32, 32) * 2 - 1)  # resized to 16 (decord misreads 16 px)
    kept = (tmp_path / "clip.mp4").read_bytes()
    future = pipe.predict(tmp_path / "clip.mp4", steps=2)
    for overwrite in (False, True):
        with pytest.raises(MagvitError, match="clip.mp4 is also an input .* never written over, even with --overwrite"):
            pipe.save(future, tmp_path / "clip.mp4", overwrite=overwrite)
    assert (tmp_path / "clip.mp4").read_bytes() == kept
    pipe.save(future, tmp_path / "f.mp4")
    with pytest.raises(MagvitError, match=r"f.mp4 exists: pass --overwrite \(overwrite=True\) to replace it"):
        pipe.save(future, tmp_path / "f.mp4", fps=2)
    assert read_video(tmp_path / "f.mp4")[1] == pytest.approx(6)
    pipe.save(future, tmp_path / "f.mp4", fps=2, overwrite=True)
    assert read_video(tmp_path / "f.mp4")[1] == pytest.approx(2)
    pipe.save(future, tmp_path / "f.jpg")
    with Image.open(tmp_path / "f.jpg") as image:
        assert image.format == "JPEG"
    with pytest.raises(MagvitError, match="cannot write '.bmp'; use one of .mp4"):
        pipe.save(future, tmp_path / "f.bmp")


def test_save_pretrained_keeps_a_folder_that_holds_something_else(folder, tmp_path):
    pipe = MagvitPipeline.from_pretrained(folder)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(MagvitError, match="mine exists and is not empty: pass overwrite=True"):
        pipe.save_pretrained(tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    pipe.save_pretrained(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine" and (tmp_path / "mine" / "magvit.json").is_file()
    again = MagvitPipeline.from_pretrained(tmp_path / "mine")
    kept = {f: f.read_bytes() for f in (tmp_path / "mine").rglob("*") if f.is_file()}
    for overwrite in (False, True):  # the folder it was loaded from holds its inputs: never written over
        with pytest.raises(MagvitError, match="is the folder this model was loaded from"):
            again.save_pretrained(tmp_path / "mine", overwrite=overwrite)
    assert {f: f.read_bytes() for f in (tmp_path / "mine").rglob("*") if f.is_file()} == kept
    pipe.save_pretrained(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MagvitError, match="is a file"):
        pipe.save_pretrained(tmp_path / "file", overwrite=True)


def test_a_hub_id_goes_through_snapshot_download(folder, monkeypatch):
    """Nothing is downloaded: snapshot_download is replaced by a function returning the local folder."""
    import huggingface_hub

    calls = []

    def fake(repo_id, revision=None, **kwargs):
        calls.append((repo_id, revision))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    pipe = MagvitPipeline.from_pretrained("someone/digits-model", revision="v1")
    assert calls == [("someone/digits-model", "v1")] and pipe.info.tasks == ("cg", "fp", "fi", "ipc")

    def offline(repo_id, revision=None, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("no connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(MagvitError, match="someone/other: no such local folder"):
        MagvitPipeline.from_pretrained("someone/other")


def test_model_info_reads_older_folders_and_keeps_unknown_keys(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "old")
    raw = json.loads((tmp_path / "old" / "magvit.json").read_text())
    for key in ("condition_rule", "grid", "weights", "data"):
        raw.pop(key, None)
    raw["future_key"] = {"a": 1}
    (tmp_path / "old" / "magvit.json").write_text(json.dumps(raw))
    info = read_info(tmp_path / "old")
    assert info.condition_rule == "all" and info.grid is None and info.extra == {"future_key": {"a": 1}}
    assert info.clip == (9, 16, 16) and info.options("fp") == TaskOptions(cond_frames=5)
    assert info.to_json()["future_key"] == {"a": 1} and ModelInfo.from_json(info.to_json()) == info
    raw["frames"] = "nine"
    (tmp_path / "old" / "magvit.json").write_text(json.dumps(raw))
    with pytest.raises(MagvitError, match="key 'frames': must be an integer"):
        read_info(tmp_path / "old")


def test_tokenizer_and_transformer_from_pretrained(folder):
    from magvit.tokenizers import Causal3d, Tokenizer, VQ3d
    from magvit.transformer import MaskedTransformer

    assert isinstance(Tokenizer.from_pretrained(folder / "tokenizer"), Causal3d)
    with pytest.raises(MagvitError, match="not a VQ3d"):
        VQ3d.from_pretrained(folder / "tokenizer")
    model = MaskedTransformer.from_pretrained(folder)
    assert model.config.num_classes == 10
    with pytest.raises(MagvitError, match="checkpoint 'nope' not found"):
        MagvitPipeline.from_pretrained("nope")


def test_a_tokenizer_the_transformer_was_not_trained_on_is_one_line(folder, tmp_path, capsys):
    """Same codebook size, other token grid (a vq3d cannot tile the model's 9-frame clips)."""
    from magvit.tokenizers import build_tokenizer

    shutil.copytree(folder, tmp_path / "mm")
    shutil.rmtree(tmp_path / "mm" / "tokenizer")
    build_tokenizer("vq3d", "tiny", quantizer={"name": "vq", "codebook_size": 1024, "dim": 16}).save_pretrained(
        tmp_path / "mm" / "tokenizer")
    with pytest.raises(MagvitError, match="is not the one the transformer in .* was trained on"):
        MagvitPipeline.from_pretrained(tmp_path / "mm")
    assert main(["generate", "--checkpoint", str(tmp_path / "mm"), "--num", "1", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "was trained on" in err


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=2.5), "argument 'steps': must be an integer, got float 2.5"),
    (dict(num=2.5), "argument 'num': must be an integer, got float 2.5"),
    (dict(num=0), "num (--num) and batch_size (--batch-size) must be >= 1, got 0"),
    (dict(batch_size="4"), "argument 'batch_size': must be an integer, got str '4'"),
    (dict(seed=1.0), "argument 'seed': must be an integer, got float 1.0"),
    (dict(seed=True), "argument 'seed': must be an integer, got bool True"),
    (dict(temperature="hot"), "argument 'temperature': must be a number, got str 'hot'"),
    (dict(temperature=-1), "temperatures must be >= 0"),
    (dict(top_p=2.0), "top_p must be in (0, 1]"),
    (dict(schedule="bogus"), "unknown mask schedule 'bogus'"),
    (dict(guidance_schedule="steep"), "argument 'guidance_schedule': must be one of"),
    (dict(classes=3), "argument 'classes': must be a list, got int 3"),
    (dict(classes=[1.5]), "argument 'classes[0]': must be an integer, got float 1.5"),
    (dict(task=7), "argument 'task': must be str, got int 7"),
])
def test_python_arguments_are_checked_as_the_command_line_checks_them(pipe, kwargs, message):
    """A wrong type or value is one MagvitError line naming the argument, never a TypeError from inside."""
    with pytest.raises(MagvitError) as caught:
        pipe.generate(**kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def _one_line(call):
    with pytest.raises(MagvitError) as caught:
        call()
    text = str(caught.value)
    assert "\n" not in text and len(text) < 300, text
    return text


def test_python_inputs_that_cannot_be_videos_are_one_short_line(pipe):
    """An empty tensor, a NumPy array (named by its shape, not printed), NaN pixels, a soft mask, a task of
    another method and classes for a task without them: each one MagvitError line in Python's words."""
    clip = torch.zeros(1, 3, 9, 16, 16)
    assert "the input tensor is empty" in _one_line(lambda: pipe.predict(torch.zeros(1, 3, 0, 16, 16)))
    text = _one_line(lambda: pipe.predict(np.zeros((3, 9, 16, 16), np.float32)))
    assert "got a ndarray of shape (3, 9, 16, 16)" in text
    nan = clip.clone()
    nan[0, 0, 0, 0, 0] = float("nan")
    assert "NaN or infinite" in _one_line(lambda: pipe.predict(nan))
    assert "threshold it" in _one_line(lambda: pipe.inpaint(clip, mask=torch.full((16, 16), 0.3)))
    pipe.inpaint(clip, mask=torch.ones(16, 16), steps=1)  # a 0/1 float mask is a mask
    text = _one_line(lambda: pipe.predict(clip, task="fi"))
    assert "task 'fi' runs with `magvit interpolate` (MagvitPipeline.interpolate)" in text
    assert "runs with `magvit interpolate`" in _one_line(lambda: pipe.sample("predict", TaskInputs(task="fi")))
    assert "classes given (--classes / classes=), but task fp" in _one_line(lambda: pipe.predict(clip, classes=[1]))


def test_a_model_description_with_impossible_values_is_one_line(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "magvit.json").read_text())
    for key, value in (("num_classes", -1), ("fps", 0), ("tasks", [])):
        (tmp_path / "m" / "magvit.json").write_text(json.dumps({**raw, key: value}))
        assert "a model has at least one task, num_classes >= 0" in _one_line(
            lambda: MagvitPipeline.from_pretrained(tmp_path / "m"))


def test_python_and_the_command_line_share_their_defaults(folder, pipe, tmp_path):
    """num: one sample per class given, else 1, in Python, in SampleConfig and on the command line;
    device: auto (CUDA when there is one) in from_pretrained, SampleConfig and --device; a range or a
    tensor of classes is the list it holds."""
    import inspect

    from magvit.runtime import resolve_device
    from magvit.sampling import SampleConfig

    assert inspect.signature(MagvitPipeline.from_pretrained).parameters["device"].default == "auto"
    assert SampleConfig.__dataclass_fields__["device"].default == "auto"
    assert pipe.device == resolve_device("auto")
    with pytest.raises(MagvitError, match="unknown device 'cdua'; use auto, cpu, cuda or cuda:N"):
        MagvitPipeline.from_pretrained(folder, device="cdua")
    assert SampleConfig.__dataclass_fields__["num"].default is None
    assert pipe.generate(steps=1).shape[0] == 1
    assert pipe.generate(classes=[3, 5], steps=1).shape[0] == 2
    assert pipe.generate(classes=range(3), steps=1).shape[0] == 3
    assert pipe.generate(classes=torch.tensor([1, 2]), steps=1).shape[0] == 2
    assert pipe.predict(torch.zeros(1, 3, 9, 16, 16), steps=1).shape[0] == 1
    for args, num in [([], 1), (["--classes", "3", "5"], 2), (["--class", "3", "--class", "5", "--class", "7"], 3)]:
        out = tmp_path / f"g{num}.png"
        assert main(["generate", "--checkpoint", str(folder), *args, "--steps", "1", "--out", str(out)]) == 0
        settings = yaml.safe_load(out.with_name(f"{out.stem}.settings.yaml").read_text())
        assert settings["num"] == num and settings["device"] == "auto"


def test_every_model_folder_has_a_card_with_its_scores(folder, tmp_path):
    """write_model_folder (training) writes the card; a summary.json beside it puts the scores in it;
    the shipped checkpoints carry theirs."""
    from magvit import shipped
    from magvit.release import load_model_folder, write_model_card

    card = (folder / "README.md").read_text()  # written with the folder, before its summary.json
    assert "causal3d tokenizer" in card and "## Scores" not in card
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    write_model_card(copy, *load_model_folder(copy))
    assert "tokenizer PSNR on held-out clips (dB) | 12.5" in (copy / "README.md").read_text()
    for name in shipped.names("checkpoints"):
        card = (shipped.find("checkpoints", name) / "README.md").read_text()
        assert f"# {name}" in card and "## Scores (summary.json)" in card
