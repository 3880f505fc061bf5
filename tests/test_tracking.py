"""Watching runs: loop.log_with sends the CSVs' scalars and the validation previews to accelerate's
trackers (tensorboard event files checked here), `magvit plot` draws the curves, `magvit bench --out`
writes a bar chart."""

import pytest
import yaml
from PIL import Image

from magvit.cli import main

pytest.importorskip("tensorboard")

DATA = {"name": "moving_digits", "frames": 5, "size": 16, "num_samples": 4}
LOOP = {"steps": 2, "batch_size": 2, "log_every": 1, "val_every": 2, "save_every": 2, "val_batches": 1,
        "log_with": ["tensorboard"]}


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = [p.parent for p in folder.rglob("events.out.tfevents.*") if p.parent.name == "magvit"]
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events.Tags()


def _train(tmp_path, command, config):
    path = tmp_path / f"{command}.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main([command, str(path)]) == 0


def test_tokenizer_run_logs_scalars_and_previews_to_tensorboard_and_plots(tmp_path, capsys):
    run = tmp_path / "tok"
    _train(tmp_path, "train-tokenizer", {"kind": "train_tokenizer", "run_dir": str(run), "data": DATA, "loop": LOOP,
                                         "tokenizer": {"name": "causal3d", "preset": "tiny"}})
    tags = _events(run / "logs")
    assert {"train/rec", "train/lr", "val/psnr", "val/usage"} <= set(tags["scalars"]), tags["scalars"]
    assert "val/reconstruction" in tags["images"]
    assert main(["plot", str(run)]) == 0 and f"wrote {run / 'curves.png'}" in capsys.readouterr().out
    with Image.open(run / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 600
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0 and (tmp_path / "c.png").is_file()
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no train.csv or val.csv" in capsys.readouterr().err


def test_transformer_run_logs_scalars_and_sample_previews(tmp_path):
    from magvit.tokenizers import build_tokenizer

    tokenizer = build_tokenizer("causal3d", "tiny").save_pretrained(tmp_path / "tokenizer")
    run = tmp_path / "tr"
    _train(tmp_path, "train", {"kind": "train_transformer", "run_dir": str(run), "tokenizer": str(tokenizer),
                               "data": DATA, "tasks": {"cg": 1.0}, "loop": LOOP, "preview": {"num": 1, "steps": 2},
                               "transformer": {"name": "masked", "preset": "tiny", "layers": 1, "width": 32,
                                               "heads": 2}})
    tags = _events(run / "logs")
    assert {"train/loss", "train/mask", "val/cg.mask_ce", "val/unigram_entropy"} <= set(tags["scalars"])
    assert "val/samples" in tags["images"]


def test_trackers_that_cannot_run_are_one_line(tmp_path, monkeypatch):
    import importlib.util

    from magvit.errors import MagvitError
    from magvit.training.common import make_accelerator

    with pytest.raises(MagvitError, match="unknown tracker 'tensorbored'"):
        make_accelerator("no", 1, ("tensorbored",), tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(MagvitError, match="wandb is not installed; pip install wandb"):
        make_accelerator("no", 1, ("wandb",), tmp_path)


def test_bench_tables_get_a_bar_chart(tmp_path):
    from magvit.bench.report import Column, Table, chart_series, write_table

    table = Table("sweep", "a sweep", [Column("schedule", "schedule"), Column("steps", "steps"),
                                      Column("acc", "accuracy %"), Column("note", "note")])
    table.rows = [{"schedule": "cosine", "steps": 4, "acc": 50.0, "note": "x"},
                  {"schedule": "cosine", "steps": 8, "acc": None, "note": "y"},
                  {"schedule": "linear", "steps": 4, "acc": 40.0, "note": "z"}]
    labels, series = chart_series(table)
    assert labels == ["cosine, 4", "cosine, 8", "linear, 4"] and series == [("accuracy %", [50.0, None, 40.0])]
    paths = write_table(table, tmp_path)
    assert tmp_path / "sweep.png" in paths
    with Image.open(tmp_path / "sweep.png") as image:
        assert image.format == "PNG"
