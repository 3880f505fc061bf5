"""`magvit train-tokenizer`: every shipped config loads, the tiny ones train, a GAN + LPIPS run
checkpoints and resumes exactly, and accelerate runs it on two CPU processes."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from magvit.cli import main
from magvit.errors import MagvitError
from magvit.kinds import load_config
from magvit.tokenizers import Tokenizer
from magvit.training.tokenizer import train_tokenizer

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "configs" / "tokenizer").glob("*.yaml"))
TINY = [p for p in CONFIGS if "tiny" in p.name]
# a short, cheap version of any tiny config
SHORT = ["loop.batch_size=2", "loop.val_batches=1", "loop.log_every=1", "loop.num_workers=0"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_tokenizer_config_loads(path):
    cfg = load_config(path, expect="train_tokenizer")
    assert cfg.tokenizer.name in ("vqgan2d", "vq3d", "causal3d")
    assert (cfg.loss.gan_weight > 0) == (cfg.discriminator is not None)


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.name)
def test_each_tiny_config_trains_and_writes_a_release(path, tmp_path):
    run = tmp_path / "run"
    code = main(["train-tokenizer", str(path), f"run_dir={run}", "loop.steps=2", "loop.val_every=2", *SHORT])
    assert code == 0
    assert [r["step"] for r in _rows(run / "train.csv")] == ["1", "2"]
    val = _rows(run / "val.csv")[-1]
    assert {"psnr", "ssim", "usage", "perplexity"} <= set(val) and float(val["psnr"]) > 0
    assert (run / "samples" / "step-00000002.gif").is_file()
    assert (run / "checkpoints" / "step-00000002" / "state.json").is_file()
    tokenizer = Tokenizer.from_pretrained(run / "tokenizer")
    assert tokenizer.config == load_config(path).tokenizer


GAN_RUN = [
    "data.frames=5", "loop.steps=10", "loop.save_every=5", "loop.val_every=5", "loop.ema_decay=0.9",
    "discriminator.name=stylegan3d", "discriminator.preset=tiny",
    "loss.gan_weight=0.1", "loss.gan_start_step=4", "loss.gan_warmup_steps=4", "loss.lecam_weight=0.01",
    "loss.r1_weight=1.0", "loss.r1_every=2",
    "loss.perceptual_weight=0.1", "loss.perceptual_net=alex", "loss.perceptual_pretrained=false",
    "loss.gradient_weight=0.5",
    "tokenizer.quantizer.entropy_anneal_steps=6", "tokenizer.quantizer.entropy_anneal_factor=3.0",
    *SHORT,
]


def test_gan_lpips_run_checkpoints_and_resumes_exactly(tmp_path):
    config = ROOT / "configs" / "tokenizer" / "causal3d_tiny_digits.yaml"
    run = tmp_path / "run"
    cfg = load_config(config, [f"run_dir={run}", *GAN_RUN])
    train_tokenizer(cfg, quiet=True)
    rows = _rows(run / "train.csv")
    assert len(rows) == 10
    for key in ("rec", "grad_diff", "lpips", "gan_g", "gan_d", "gan_w", "lecam", "r1", "q_entropy_loss"):
        logged = [float(r[key]) for r in rows if r[key] != ""]
        assert logged and all(torch.isfinite(torch.tensor(logged))), key
    assert rows[0]["gan_g"] == "" and rows[4]["gan_g"] != ""  # no GAN term during the warm-up
    # LFQ's entropy weight (0.1 by default) annealed from 3x over 6 steps: row i logs step i + 1
    weights = [float(r["q_entropy_weight"]) for r in rows]
    assert weights[0] == pytest.approx(0.3) and weights[3] == pytest.approx(0.2) and set(weights[6:]) == {0.1}
    ckpt = run / "checkpoints"
    assert [p.name for p in sorted(ckpt.iterdir())] == ["step-00000005", "step-00000010"]
    files = {p.name for p in (ckpt / "step-00000010").iterdir()}
    assert {"tokenizer.safetensors", "ema.safetensors", "disc.safetensors", "lecam.safetensors",
            "opt_g.optim.safetensors", "opt_d.optim.safetensors"} <= files

    with pytest.raises(MagvitError, match="already holds checkpoints"):
        train_tokenizer(cfg, quiet=True)

    # interrupt after step 5 (the GAN on, the entropy weight still annealing): drop what came later, resume,
    # and compare with the full run
    reference = tmp_path / "reference"
    shutil.move(ckpt / "step-00000010", reference)
    shutil.rmtree(run / "tokenizer")
    train_tokenizer(cfg, resume=True, quiet=True)
    resumed = ckpt / "step-00000010"
    for name in ("tokenizer", "ema", "disc", "lecam", "opt_g.optim", "opt_d.optim"):
        before, after = load_file(reference / f"{name}.safetensors"), load_file(resumed / f"{name}.safetensors")
        assert before.keys() == after.keys()
        for key in before:
            assert torch.equal(before[key], after[key]), f"{name}.{key} differs after resume"
    again = _rows(run / "train.csv")
    assert [r["step"] for r in again] == [str(s) for s in range(1, 11)]  # rows after step 5 logged once
    skip = {"clips_per_s"}
    assert [{k: v for k, v in r.items() if k not in skip} for r in again] == [
        {k: v for k, v in r.items() if k not in skip} for r in rows
    ]
    assert (run / "tokenizer" / "model.safetensors").is_file()


def test_vq3d_run_starts_from_an_inflated_vqgan2d(tmp_path):
    """`inflate_from=`: with a zero learning rate the released vq3d is exactly the central inflation."""
    from magvit.tokenizers import build_tokenizer

    torch.manual_seed(1)
    source = build_tokenizer("vqgan2d", "tiny")
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0.0, 0.1)
        source.quantizer.stats_ready.fill_(True)  # as after training: no data init, no dead codes
        source.quantizer.usage.fill_(100.0)
    source.save_pretrained(tmp_path / "vqgan2d")
    run = tmp_path / "run"
    config = ROOT / "configs" / "tokenizer" / "vq3d_tiny_digits.yaml"
    overrides = [f"run_dir={run}", f"inflate_from={tmp_path / 'vqgan2d'}", "optim.lr=0.0", "loop.steps=1",
                 "data.frames=4", *SHORT]
    train_tokenizer(load_config(config, overrides), quiet=True)
    released = Tokenizer.from_pretrained(run / "tokenizer")
    expected = build_tokenizer("vq3d", "tiny").inflate_from(Tokenizer.from_pretrained(tmp_path / "vqgan2d"))
    for key, value in expected.state_dict().items():
        if key != "quantizer.usage":  # the usage EMA counts the one training batch
            assert torch.equal(released.state_dict()[key], value), key


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path, capsys):
    """A job preempted before its first checkpoint and re-queued with --resume: one line, step 0."""
    config = ROOT / "configs" / "tokenizer" / "vqgan2d_tiny_digits.yaml"
    (tmp_path / "train.csv").write_text("step,rec\n1,0.5\n2,0.4\n")  # what the killed run logged
    args = ["train-tokenizer", str(config), "--resume", f"run_dir={tmp_path}", "loop.steps=1", "loop.val_every=1",
            "loop.save_every=1", *SHORT]
    assert main(args) == 0
    said = f"--resume: no checkpoint under {tmp_path / 'checkpoints'} yet; starting from scratch"
    assert said in capsys.readouterr().out
    assert [r["step"] for r in _rows(tmp_path / "train.csv")] == ["1"]
    assert (tmp_path / "checkpoints" / "step-00000001").is_dir()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 mixed precision needs a CUDA GPU")
def test_fp16_runs_save_and_restore_the_grad_scaler(tmp_path):
    config = ROOT / "configs" / "tokenizer" / "causal3d_tiny_digits.yaml"
    common = ["loop.mixed_precision=fp16", "loop.steps=4", "loop.save_every=2", "loop.val_every=4", "loop.keep_last=3",
              *SHORT]
    train_tokenizer(load_config(config, [f"run_dir={tmp_path / 'a'}", *common]), quiet=True)
    scaler = lambda run, step: json.loads((run / "checkpoints" / f"step-{step:08d}" / "state.json").read_text())[
        "grad_scaler"]
    full = tmp_path / "a"
    assert scaler(full, 4)["_growth_tracker"] > scaler(full, 2)["_growth_tracker"] or scaler(full, 4)["scale"] != \
        scaler(full, 2)["scale"]
    # interrupt after step 2 and resume: the scaler continues where it was, it does not start again
    shutil.copytree(full, tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-00000004")
    train_tokenizer(load_config(config, [f"run_dir={tmp_path / 'b'}", *common]), resume=True, quiet=True)
    assert scaler(tmp_path / "b", 4) == scaler(full, 4)


def _accelerate_launch() -> list[str]:
    script = Path(sys.executable).parent / "accelerate"  # the venv's `accelerate` command
    return [str(script), "launch"] if script.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]


def test_accelerate_launch_on_two_cpu_processes(tmp_path):
    """DDP over gloo: LFQ's all-reduced entropy, a DDP discriminator with R1 and LeCAM, and
    validation on the main process only (nothing may wait on the other process there).

    `accelerate launch --cpu --num_processes 2` starts ONE process (its CPU launcher spreads processes
    only through mpirun); `--multi_gpu` starts two through torchrun, and ACCELERATE_USE_CPU makes each
    a gloo process on the CPU."""
    run = tmp_path / "run"
    cmd = [
        *_accelerate_launch(), "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "magvit", "train-tokenizer",
        str(ROOT / "configs" / "tokenizer" / "causal3d_tiny_digits.yaml"), f"run_dir={run}",
        "loop.steps=3", "loop.val_every=3", "data.frames=5", "data.num_samples=8", "discriminator.name=patchgan3d",
        "discriminator.preset=tiny", "loss.gan_weight=0.1", "loss.lecam_weight=0.01", "loss.r1_weight=1.0",
        "loss.r1_every=1", *SHORT,
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        cmd[2:2] = ["--main_process_port", str(s.getsockname()[1])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    if out.returncode != 0 and "gloo" in out.stderr.lower() and "not available" in out.stderr.lower():
        pytest.skip("torch.distributed has no gloo backend on this machine: no CPU multi-process launch")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = _rows(run / "train.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3"] and rows[-1]["gan_d"] != ""
    # 8 clips in batches of 2: 2 steps per epoch on two processes (4 on one), so step 3 opens epoch 1
    assert [r["epoch"] for r in rows] == ["0", "0", "1"]
    assert float(rows[-1]["clips_per_s"]) > 0
    assert (run / "checkpoints" / "step-00000003").is_dir() and (run / "tokenizer" / "config.json").is_file()
