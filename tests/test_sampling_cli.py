"""The sampling commands (generate, predict, interpolate, inpaint, outpaint, edit) end to end on a
tiny untrained model: files and grids written, the YAML form equals the flag form, flags override
the YAML, short checkpoint names, every shipped configs/generate/*.yaml, one-line errors; an existing
output is kept unless --overwrite and an input never is written over; --out in each format its suffix
names; a GIF as input."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from magvit.cli import main
from magvit.inputs import TaskInputs
from magvit.kinds import load_config
from magvit.pipeline import FAMILIES, PROMPTS
from magvit.release import ModelInfo, write_model_folder
from magvit.tasks import TASKS

ROOT = Path(__file__).parents[1]
TRAINED = [t for t in TASKS if t not in PROMPTS]  # the video tasks; edit / inpaint / outpaint borrow a prompt


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model folder (causal3d tiny: 9x16x16 clips -> 3x4x4 tokens; tiny transformer, 10 classes)
    and inputs: a 12-frame and a 3-frame MP4, a PNG image and a PNG mask, all 32x32."""
    from magvit.data import MovingDigits
    from magvit.media import write_image_grid, write_video
    from magvit.tokenizers import build_tokenizer
    from magvit.transformer import build_transformer

    root = tmp_path_factory.mktemp("sampling")
    torch.manual_seed(0)
    tokenizer = build_tokenizer("causal3d", "tiny")
    model = build_transformer("tiny", codebook_size=tokenizer.codebook_size, num_classes=10, grid=(3, 4, 4))
    info = ModelInfo(tasks=tuple(TRAINED), num_classes=10, grid=(3, 4, 4), frames=9, size=(16, 16), fps=8.0,
                     trained_steps=0, weights="raw", condition_rule="any")
    write_model_folder(root / "model", model, tokenizer, info)
    clip = MovingDigits(frames=12, size=32, num_samples=1)[0]["video"]
    write_video(root / "in.mp4", clip)
    write_video(root / "short.mp4", clip[:, :3])
    write_image_grid(root / "in.png", clip[:, :1][None], padding=0)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 4:16] = 255
    Image.fromarray(mask).save(root / "mask.png")
    return root


def _run(*args) -> int:
    return main([str(a) for a in args])


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


COMMON = ["--steps", "2", "--seed", "1", "--device", "cpu"]


@pytest.mark.parametrize("name, args, outputs, grid", [
    ("generate", ["--class", "3", "--class", "5", "--num", "3", "--batch-size", "2"],
     ["out", "out/samples.mp4", "out/samples.gif", "out/samples.png", "out/settings.yaml"], (2, 2)),
    ("predict", ["--video", "in.mp4", "--cond-frames", "1", "--num", "2"], ["pred.mp4", "pred.settings.yaml"], (2, 2)),
    ("interpolate", ["--video", "in.mp4", "--num", "1"], ["interp.gif", "interp.settings.yaml"], (1, 2)),
    ("inpaint", ["--image", "in.png", "--box", "4,4,8,8", "--num", "2"], ["inp.png"], (2, 2)),
    ("inpaint", ["--video", "in.mp4", "--mask", "mask.png", "--num", "1"], ["inpv", "inpv/samples.mp4"], (1, 2)),
    ("outpaint", ["--image", "in.png", "--box", "4,4,8,8", "--num", "1"], ["outp.png"], (1, 2)),
    ("edit", ["--image", "in.png", "--box", "4,4,8,8", "--class", "7", "--num", "1"], ["edit.png"], (1, 2)),
])
def test_each_command_writes_its_grids(files, tmp_path, capsys, name, args, outputs, grid):
    out = tmp_path / outputs[0]
    args = [str(files / a) if a.endswith((".mp4", ".png")) else a for a in args]
    assert _run(name, "--checkpoint", files / "model", *args, *COMMON, "--out", out) == 0, capsys.readouterr().err
    for path in outputs:
        assert (tmp_path / path).exists(), path
    png = out / "samples.png" if out.suffix == "" else out if out.suffix == ".png" else None
    if png is not None:  # rows x columns of 16x16 frames with 2-pixel padding
        assert _png(png).shape[:2] == (2 + grid[0] * 18, 2 + grid[1] * 18)
    settings = out / "settings.yaml" if out.suffix == "" else out.with_name(f"{out.stem}.settings.yaml")
    cfg = load_config(settings, expect="sample")
    assert cfg.task in FAMILIES[name] and cfg.decode.steps == 2 and cfg.seed == 1


def test_image_tasks_borrow_a_trained_prompt(files, tmp_path):
    _run("edit", "--checkpoint", files / "model", "--image", files / "in.png", "--box", "0,0,8,8", *COMMON,
         "--out", tmp_path / "e.png")
    _run("inpaint", "--checkpoint", files / "model", "--image", files / "in.png", "--box", "0,0,8,8", *COMMON,
         "--out", tmp_path / "i.png")
    edit, inpaint = (load_config(tmp_path / f"{n}.settings.yaml") for n in ("e", "i"))
    assert (edit.task, edit.prompt) == ("edit", "cg") and (inpaint.task, inpaint.prompt) == ("inpaint", "ipc")


def test_yaml_form_equals_flag_form_and_flags_override(files, tmp_path):
    flags = ["--checkpoint", files / "model", "--video", files / "in.mp4", "--cond-frames", "1", "--num", "2",
             "--steps", "3", "--seed", "4", "--temperature", "0.8", "--device", "cpu"]
    assert _run("predict", *flags, "--out", tmp_path / "a") == 0
    settings = yaml.safe_load((tmp_path / "a" / "settings.yaml").read_text())
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**settings, "out": str(tmp_path / "b")}))
    assert _run("predict", tmp_path / "p.yaml") == 0
    assert np.array_equal(_png(tmp_path / "a" / "samples.png"), _png(tmp_path / "b" / "samples.png"))
    assert (tmp_path / "a" / "samples.gif").read_bytes() == (tmp_path / "b" / "samples.gif").read_bytes()
    again = yaml.safe_load((tmp_path / "b" / "settings.yaml").read_text())
    assert {**again, "out": None} == {**settings, "out": None}

    # flags and key=value override the YAML
    assert _run("predict", tmp_path / "p.yaml", "--steps", "1", "seed=9", "--out", tmp_path / "c") == 0
    over = load_config(tmp_path / "c" / "settings.yaml")
    assert over.decode.steps == 1 and over.seed == 9 and over.decode.temperature == 0.8


def test_short_checkpoint_names_resolve_under_checkpoints(files, tmp_path, monkeypatch):
    import shutil

    from magvit import shipped

    packaged = tmp_path / "_shipped"
    shutil.copytree(files / "model", packaged / "checkpoints" / "digits-tiny")
    monkeypatch.setattr(shipped, "PACKAGED", packaged)
    assert _run("generate", "--checkpoint", "digits-tiny", "--num", "1", *COMMON, "--out", tmp_path / "g.png") == 0


def test_inpaint_needs_a_region_unless_the_model_has_fixed_region_tasks(files, tmp_path, capsys):
    import json
    import shutil

    shutil.copytree(files / "model", tmp_path / "cg_only")
    meta = json.loads((tmp_path / "cg_only" / "magvit.json").read_text())
    (tmp_path / "cg_only" / "magvit.json").write_text(json.dumps({**meta, "tasks": ["cg"]}))
    assert _run("inpaint", "--checkpoint", tmp_path / "cg_only", "--image", files / "in.png", *COMMON,
                "--out", tmp_path / "x") == 2
    assert "give --box or --mask" in capsys.readouterr().err
    assert _run("inpaint", "--checkpoint", tmp_path / "cg_only", "--image", files / "in.png", "--box", "2,2,4,4",
                "--class", "1", *COMMON, "--out", tmp_path / "y.png") == 0  # class-conditional inpainting (cg)
    assert _run("inpaint", "--checkpoint", files / "model", "--image", files / "in.png", *COMMON,
                "--out", tmp_path / "z.png") == 0  # ipc: its own central region
    assert load_config(tmp_path / "z.settings.yaml").task == "ipc"


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "generate").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sampling_config_runs_as_shipped(tmp_path, monkeypatch, capsys, path):
    """Each file with its own checkpoint and input, run as its header says from another folder (the
    shipped lookup), only fewer samples and decoding steps: the model was trained on the task (or on
    the prompt an image task borrows), and its input is the kind it was trained on."""
    from magvit.release import find_model_folder, read_info

    raw = yaml.safe_load(path.read_text())
    command = next(c for c, tasks in FAMILIES.items() if raw["task"] in tasks)
    assert f"magvit {command} configs/generate/{path.name}" in path.read_text()
    info = read_info(find_model_folder(raw["checkpoint"]))
    if "input" in raw:  # real clips for the real-video model, digits for the digits model
        assert str(raw["input"]).startswith("bundled:") == (info.data["name"] == "bundled_clips"), raw["input"]
    monkeypatch.chdir(tmp_path)
    assert _run(command, f"configs/generate/{path.name}", "num=1", "decode.steps=2", "out=o") == 0, \
        capsys.readouterr().err
    settings = load_config(tmp_path / "o" / "settings.yaml", expect="sample")
    assert settings.task == raw["task"] and settings.prompt in info.tasks
    assert (tmp_path / "o" / "samples.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["predict", "--video", "short.mp4", "--cond-frames", "5"], "has 3 frame(s); task fp needs 5"),
    (["predict", "--video", "in.mp4", "--cond-frames", "9"], "a whole number of frames from 1 to 8"),
    (["predict", "--video", "in.mp4", "--cond-frames", "7"], "touch every token of the 3x4x4 grid"),
    (["predict", "--video", "in.mp4", "condition_rule=most"],
     "'condition_rule': must be one of 'any', 'all', got 'most'"),
    (["interpolate", "--video", "short.mp4"], "task fi needs 9"),
    (["predict", "--video", "missing.mp4"], "video file not found"),
    (["inpaint", "--image", "in.png", "--box", "10,10,8,8"], "lies outside the 16x16 frame"),
    (["inpaint", "--image", "in.png", "--box", "1,2,3"], "--box must be top,left,height,width"),
    (["inpaint", "--image", "in.png", "--box", "-5,0,8,8"], "--box -5,0,8,8 (top,left,height,width) lies outside"),
    (["generate", "--task", "uncond", "--class", "3"], "task uncond takes no class"),
    (["generate", "--class", "12"], "classes 0 to 9"),
    (["generate", "--task", "fp"], "task 'fp' runs with `magvit predict`"),
    (["generate", "--prompt", "edit"], "not 'edit' (prompt)"),
    (["generate", "--schedule", "bogus"], "unknown mask schedule"),
    (["generate", "--checkpoint", "no-such-model"], "checkpoint 'no-such-model' not found"),
])
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, capsys, args, message):
    args = [str(files / a) if a.endswith((".mp4", ".png")) else a for a in args]
    if "--checkpoint" not in args:
        args += ["--checkpoint", str(files / "model")]
    assert _run(*args, *COMMON, "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err, err


def test_condition_rule_comes_from_the_model_folder(files, tmp_path):
    """A model folder written before the rule was recorded conditioned only fully given blocks (all)."""
    import json
    import shutil

    from magvit.pipeline import MagvitPipeline

    shutil.copytree(files / "model", tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "magvit.json").read_text())
    del meta["condition_rule"]
    (tmp_path / "old" / "magvit.json").write_text(json.dumps(meta))
    for folder, rule, expected in [(files / "model", None, "any"), (tmp_path / "old", None, "all"),
                                   (tmp_path / "old", "any", "any")]:
        pipe = MagvitPipeline.from_pretrained(folder)
        cond = pipe.condition("fp", TaskInputs(input=files / "in.mp4", cond_frames=3, condition_rule=rule))
        # causal3d 9 frames: frame 0 | 1-4 | 5-8; 3 frames given fill latent frame 0 and touch latent frame 1
        touched = cond.latent_mask[0].flatten(1).any(1).tolist()
        assert touched == ([True, True, False] if expected == "any" else [True, False, False]), (folder, expected)


def test_predict_one_frame_and_interpolate_on_a_vq3d_model(tmp_path, capsys):
    """MAGVIT's protocols on its 3D-VQ: BAIR's 1-frame prediction, Kinetics' 5, first/last-frame interpolation."""
    from magvit.data import MovingDigits
    from magvit.media import write_video
    from magvit.tokenizers import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer("vq3d", "tiny").save_pretrained(tmp_path / "tokenizer")  # 16 frames -> 4
    train = {"kind": "train_transformer", "run_dir": str(tmp_path / "run"), "tokenizer": str(tokenizer),
             "transformer": {"name": "masked", "preset": "tiny", "layers": 1, "width": 32, "heads": 2},
             "data": {"name": "moving_digits", "frames": 16, "size": 16, "num_samples": 4},
             "tasks": {"fp": 1.0, "fi": 1.0}, "task_options": {"fp": {"cond_frames": 1}},
             "loop": {"steps": 2, "batch_size": 2, "val_every": 2, "save_every": 2, "val_batches": 1},
             "preview": {"num": 0}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    assert _run("train", tmp_path / "train.yaml") == 0, capsys.readouterr().err
    clip = MovingDigits(frames=16, size=32, num_samples=1)[0]["video"]  # resized to 16 (decord misreads 16 px)
    write_video(tmp_path / "in.mp4", clip)
    model = tmp_path / "run" / "model"
    for command, extra, given in [("predict", ["--cond-frames", "1"], [0]), ("predict", ["--cond-frames", "5"],
                                  list(range(5))), ("interpolate", [], [0, 15])]:
        out = tmp_path / f"{command}{len(extra)}{len(given)}"
        assert _run(command, "--checkpoint", model, "--video", tmp_path / "in.mp4", *extra, "--num", "1", *COMMON,
                    "--out", out) == 0, capsys.readouterr().err
        settings = load_config(out / "settings.yaml")
        assert settings.task == ("fp" if command == "predict" else "fi")
        assert (out / "samples.mp4").is_file()
    from magvit.pipeline import MagvitPipeline

    pipe = MagvitPipeline.from_pretrained(model)
    assert pipe.info.condition_rule == "any"
    _, latent = TASKS.build("fi").masks(pipe.tokenizer, 1, 16, 16, 16, "any")
    assert latent[0].flatten(1).any(1).tolist() == [True, False, False, True]  # latent frames 0 and 3


def test_an_existing_output_is_kept_unless_overwrite(files, tmp_path, capsys):
    args = ["generate", "--checkpoint", files / "model", "--num", "1", *COMMON]
    assert _run(*args, "--out", tmp_path / "g.png") == 0
    assert _run(*args, "--out", tmp_path / "out") == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    for out, taken in [(tmp_path / "g.png", tmp_path / "g.png"), (tmp_path / "out", tmp_path / "out" / "samples.mp4")]:
        assert _run(*args, "--seed", "2", "--out", out) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"magvit: error: {taken} exists: pass --overwrite (overwrite=True) to replace it, or write to " \
                      "another path", err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before, "nothing was touched"
    assert _run(*args, "--seed", "2", "--out", tmp_path / "g.png", "--overwrite") == 0
    assert (tmp_path / "g.png").read_bytes() != before[tmp_path / "g.png"]
    assert load_config(tmp_path / "g.settings.yaml").seed == 2


def test_an_input_is_never_written_over_even_with_overwrite(files, tmp_path, capsys):
    import shutil

    clip = shutil.copy(files / "in.mp4", tmp_path / "clip.mp4")
    mask = shutil.copy(files / "mask.png", tmp_path / "m.png")
    (tmp_path / "link.mp4").symlink_to(clip)
    kept = {p: Path(p).read_bytes() for p in (clip, mask)}
    model = ["--checkpoint", files / "model", "--num", "1", *COMMON, "--overwrite"]
    for args, out in [(["predict", "--video", clip], clip), (["predict", "--video", tmp_path / "link.mp4"], clip),
                      (["inpaint", "--video", clip, "--mask", mask], mask)]:
        assert _run(*args, *model, "--out", out) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{out} is also an input" in err and "never written over" in err, err
    assert {p: Path(p).read_bytes() for p in kept} == kept and sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.mp4", "link.mp4", "m.png"]
    # re-running a result's settings.yaml into its own folder would write over the settings it reads
    assert _run("predict", "--video", clip, *model, "--out", tmp_path / "a") == 0
    assert _run("predict", tmp_path / "a" / "settings.yaml", "--overwrite") == 2
    assert "settings.yaml is also an input" in capsys.readouterr().err
    assert _run("predict", tmp_path / "a" / "settings.yaml", "--out", tmp_path / "b") == 0


def test_out_suffixes_write_their_formats_and_others_are_one_line(files, tmp_path, capsys):
    import av

    args = ["--checkpoint", files / "model", "--num", "2", *COMMON]
    assert _run("predict", "--video", files / "in.mp4", "--cond-frames", "1", *args, "--out", tmp_path / "p.avi") == 0
    with av.open(str(tmp_path / "p.avi")) as video:  # a file, not a folder: condition | result, 2 rows of 16x16
        assert video.format.name == "avi" and video.streams.video[0].codec_context.name == "mpeg4"
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video.streams.video[0])]
    assert len(frames) == 9 and frames[0].shape == (2 + 2 * 18, 2 + 2 * 18, 3)
    assert load_config(tmp_path / "p.settings.yaml").task == "fp"
    assert _run("generate", *args, "--out", tmp_path / "g.jpg") == 0
    with Image.open(tmp_path / "g.jpg") as image:
        assert image.format == "JPEG" and image.size == (2 + 2 * 18, 2 + 18)
    capsys.readouterr()
    assert _run("generate", *args, "--out", tmp_path / "x.mov") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write '.mov' files" in err and ".avi, .png, .jpg, .jpeg" in err, err
    assert not (tmp_path / "x.mov").exists(), "no folder named x.mov"
    assert _run("generate", *args, "--out", f"{tmp_path / 'v1.5'}/") == 0  # a folder, said with a slash
    assert (tmp_path / "v1.5" / "samples.mp4").is_file()


def test_a_gif_is_an_input_video(files, tmp_path, capsys):
    """A GIF written by magvit itself (decord cannot count a GIF's frames; Pillow reads it)."""
    from magvit.media import read_video, write_video

    clip, _, _ = read_video(files / "in.mp4")  # (3, 12, 32, 32)
    write_video(tmp_path / "in.gif", clip, fps=8)
    assert read_video(tmp_path / "in.gif")[0].shape == (3, 12, 32, 32)
    assert _run("predict", "--checkpoint", files / "model", "--video", tmp_path / "in.gif", "--cond-frames", "5",
                "--num", "1", *COMMON, "--out", tmp_path / "p.gif") == 0, capsys.readouterr().err
    assert read_video(tmp_path / "p.gif")[0].shape[1] == 9


def test_guidance_and_classes_are_the_pythons_names_and_no_flag_is_abbreviated(files, tmp_path, capsys):
    """--guidance (alias --cfg) and --classes (alias --class) set what guidance= and classes= set;
    `--guidance 2` is the weight, never an abbreviation of --guidance-schedule, and a prefix of a flag
    is not taken for it."""
    args = ["generate", "--checkpoint", files / "model", *COMMON]
    for flags, name in [(["--guidance", "2", "--classes", "3", "5"], "a.png"),
                        (["--cfg", "2", "--class", "3", "--class", "5"], "b.png")]:
        assert _run(*args, *flags, "--out", tmp_path / name) == 0, capsys.readouterr().err
        settings = load_config(tmp_path / name.replace(".png", ".settings.yaml"))
        assert settings.decode.guidance == 2.0 and settings.decode.guidance_schedule == "constant"
        assert settings.classes == (3, 5) and settings.num == 2
    assert _png(tmp_path / "a.png").tobytes() == _png(tmp_path / "b.png").tobytes()
    capsys.readouterr()
    for abbreviated in (["--guid", "2"], ["--check", str(files / "model")], ["--temp", "0.5"]):
        with pytest.raises(SystemExit) as bad:  # argparse's exit, one line
            _run(*args, *abbreviated, "--out", tmp_path / "c.png")
        err = capsys.readouterr().err.strip()
        assert bad.value.code == 2 and err.count("\n") == 0 and f"unrecognized arguments: {abbreviated[0]}" in err
    with pytest.raises(SystemExit):
        _run(*args, "--classes", "3", "steps=2", "--out", tmp_path / "d.png")
    assert "'steps=2' is not a class number (put key=value overrides before --classes" in capsys.readouterr().err


def test_a_quickstart_or_run_folder_names_its_model(files, tmp_path, capsys):
    """`--checkpoint runs/quickstart` (the quickstart's --out) finds <out>/transformer/model; a folder
    holding no model says where one is looked for."""
    import shutil

    shutil.copytree(files / "model", tmp_path / "quickstart" / "transformer" / "model")
    assert _run("generate", "--checkpoint", tmp_path / "quickstart", *COMMON, "--out", tmp_path / "g.png") == 0
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert _run("generate", "--checkpoint", tmp_path / "empty", *COMMON, "--out", tmp_path / "new" / "h") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a model folder" in err and "<folder>/transformer/model" in err, err
    assert not (tmp_path / "new").exists(), "a failed run leaves no empty --out folder behind"


def test_edit_on_a_model_without_classes_names_class_labels(files, tmp_path, capsys):
    import json
    import shutil

    shutil.copytree(files / "model", tmp_path / "uncond")
    meta = json.loads((tmp_path / "uncond" / "magvit.json").read_text())
    (tmp_path / "uncond" / "magvit.json").write_text(json.dumps({**meta, "tasks": ["uncond", "ipc"], "num_classes": 0}))
    assert _run("edit", "--checkpoint", tmp_path / "uncond", "--image", files / "in.png", "--box", "4,4,8,8",
                "--classes", "3", *COMMON, "--out", tmp_path / "e.png") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs a class-conditional model (trained with class labels, task cg)" in err
    assert "with no classes" in err and "`inpaint` regenerates a region without a class" in err, err
    assert not (tmp_path / "e.png").exists()
