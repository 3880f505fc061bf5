"""magvit.runtime and the fast paths it gives the commands: each computes what the reference path does.

- bf16 / fp16: the quantizer decides in fp32, so a trained tokenizer's ids mostly survive; LPIPS is fp32;
- torch.compile: the compiled tokenizer's ids equal the eager ids, its decode is within 1e-4; a failing
  backend gives one warning line and the eager result;
- activation checkpointing: the same loss and gradients (tokenizer and transformer, dropout on);
- channels-last: the same ids, decode within 1e-5;
- TF32: on by default where CUDA is, a user's choice kept;
- extract-tokens on 2 processes: the single-process cache, file for file, and one dataset scan;
- the new command-line flags and `magvit bench train`.
"""

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from magvit import runtime
from magvit.cli import main
from magvit.tokenizers import Tokenizer, build_tokenizer

ROOT = Path(__file__).parents[1]
SHIPPED = ROOT / "checkpoints" / "digits-video"


def test_bf16_ids_equal_fp32_ids_on_the_trained_tokenizer():
    """The shipped digits-video tokenizer on 16 held-out clips: low-precision encoders change a few ids
    (latents near a sign boundary of LFQ), never more than 1%. Measured on the model of 2026-12-05: bf16
    99.84% (5 of 3,072 ids differ), fp16 99.97%. fp16 convolutions are slow on a CPU (1.7 s here),
    hence 16 clips, not more."""
    from magvit.evaluation.digits import moving_digit_clips
    from magvit.evaluation.scores import digits_options

    tokenizer = Tokenizer.from_pretrained(SHIPPED / "tokenizer").eval()
    info = json.loads((SHIPPED / "magvit.json").read_text())
    clips, _ = moving_digit_clips("test", 16, info["frames"], info["size"][0], 0, **digits_options(info))
    with torch.no_grad():
        reference = tokenizer.encode(clips)  # (16, 3, 8, 8)
        shares = {}
        for name in ("bf16", "fp16"):
            with runtime.autocast("cpu", name):
                shares[name] = (tokenizer.encode(clips) == reference).double().mean().item()
    print(f"\nids equal to fp32 on {reference.numel()} tokens: " + ", ".join(f"{k} {100 * v:.2f}%"
                                                                        for k, v in shares.items()))
    assert shares["bf16"] >= 0.99 and shares["fp16"] >= 0.99


def test_the_perceptual_loss_is_fp32_under_autocast():
    from magvit.tokenizers.losses import Perceptual

    loss = Perceptual(net="alex", pretrained_backbone=False)
    a, b = torch.rand(2, 3, 2, 32, 32) * 2 - 1, torch.rand(2, 3, 2, 32, 32) * 2 - 1
    with torch.no_grad():
        plain = loss(a, b)
        with runtime.autocast("cpu", "bf16"):
            low = loss(a, b)
    assert low.dtype == torch.float32 and torch.equal(low, plain)


def _tiny_tokenizer() -> Tokenizer:
    """causal3d with one stage of 8 channels: the compile tests' budget goes to compiling, not running."""
    torch.manual_seed(0)
    return build_tokenizer("causal3d", "tiny", channels=8, multipliers=(1,), temporal_downsample=(),
                           quantizer={"name": "lfq", "bits": 6}).eval()


def test_the_compiled_tokenizer_gives_the_eager_ids(recwarn):
    """Through the tokenizer bench's comparison (magvit.bench.tokenizers.compiled_speed): ids equal,
    decoded pixels within 1e-4 (inductor reorders float sums; measured 1.2e-6)."""
    from magvit.bench.measure import eval_mode
    from magvit.bench.tokenizers import compiled_speed

    tokenizer = _tiny_tokenizer()
    clips = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    with eval_mode(tokenizer):
        ids = tokenizer.encode(clips)
        row = compiled_speed(tokenizer, clips, ids, torch.device("cpu"), "fp32", warmup=0, repeats=1)
    assert not [w for w in recwarn if "--compile" in str(w.message)], "compiled, not the eager fallback"
    assert row["compiled_ids_equal_pct"] == 100.0 and row["compiled_decode_max_diff"] < 1e-4
    assert not runtime.is_compiled(tokenizer.encoder) and set(tokenizer.state_dict()) == set(
        _tiny_tokenizer().state_dict())  # eager again, no `_orig_mod.` in the weights' names


def test_a_failing_compiler_falls_back_to_eager_with_one_warning():
    def broken_backend(graph, inputs):
        raise RuntimeError("no C++ compiler found")

    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    expected = layer(x)
    runtime.compile_forward(layer, "the test layer", backend=broken_backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = layer(x), layer(x)
    messages = [str(w.message) for w in caught if "--compile" in str(w.message)]
    assert len(messages) == 1 and "the test layer runs eagerly" in messages[0] and "no C++ compiler" in messages[0]
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert list(layer.state_dict()) == ["weight", "bias"]


def _gradients(model, loss_of) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks in both runs
    loss = loss_of(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["tokenizer", "transformer"])
def test_checkpointing_gives_the_same_loss_and_gradients(kind):
    """Recomputed blocks give the plain loss and gradients to 1e-6 (measured: bit for bit on CPU)."""
    from magvit.tokenizers.losses import reconstruction_loss
    from magvit.transformer import build_transformer, token_cross_entropy

    torch.manual_seed(0)
    if kind == "tokenizer":
        model = build_tokenizer("causal3d", "tiny").train()
        clips = torch.rand(2, 3, 5, 16, 16) * 2 - 1

        def loss_of(m):
            out = m(clips)
            return reconstruction_loss(out.recon, clips) + out.quant.loss
    else:
        model = build_transformer("tiny", codebook_size=64, num_classes=2, grid=(2, 4, 4), dropout=0.1).train()
        tokens = torch.randint(64, (3, 2, 4, 4))

        def loss_of(m):
            inputs = tokens.masked_fill(torch.rand(tokens.shape) < 0.5, m.vocab.mask)
            logits = m(inputs, torch.full((3,), m.vocab.task("cg")), m.vocab.cls(torch.tensor([0, 1, 0])))
            return token_cross_entropy(logits, tokens).mean()

    loss, grads = _gradients(model, loss_of)
    model.checkpoint_activations(True)
    loss_ckpt, grads_ckpt = _gradients(model, loss_of)
    assert torch.allclose(loss, loss_ckpt, rtol=0, atol=1e-6) and grads.keys() == grads_ckpt.keys()
    assert all(torch.allclose(grads[n], grads_ckpt[n], rtol=0, atol=1e-6) for n in grads)


def test_channels_last_gives_the_same_ids():
    tokenizer = build_tokenizer("causal3d", "tiny").eval()
    clips = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        ids, recon = tokenizer.encode(clips), tokenizer.decode(tokenizer.encode(clips))
        runtime.channels_last(tokenizer)
        assert tokenizer.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last_3d)
        assert torch.equal(tokenizer.encode(clips), ids)
        assert torch.allclose(tokenizer.decode(ids), recon, rtol=0, atol=1e-5)


def test_tf32_is_on_by_default_where_cuda_is_and_a_choice_is_kept(monkeypatch):
    matmul, conv = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime, "_tf32_chosen", False)
    try:
        runtime.default_tf32()
        assert torch.backends.cuda.matmul.fp32_precision == "tf32" == torch.backends.cudnn.conv.fp32_precision
        runtime.use_tf32(False)
        runtime.default_tf32()  # a command starting later leaves the user's choice alone
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = matmul, conv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_extract_tokens_on_two_processes_writes_the_one_process_cache(tmp_path):
    """Two processes (gloo, as `accelerate launch` starts them): the same shard files and index as one
    process; the image folder is scanned on process 0 only (its one skipped file is reported there alone)."""
    from magvit.config import from_dict
    from magvit.training.tokens import extract_tokens
    from magvit.training.transformer import TransformerTrainConfig

    rng = np.random.default_rng(0)
    for i in range(11):
        (tmp_path / "images" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"images/c{i % 2}/{i}.png")
    (tmp_path / "images" / "c0" / "broken.png").write_bytes(b"")
    data = {"name": "image_folder", "root": str(tmp_path / "images"), "size": 32}
    raw = {"kind": "train_transformer", "tokenizer": str(SHIPPED / "tokenizer"), "data": data,
           "transformer": {"name": "masked", "preset": "tiny"}, "tasks": {"cg": 1.0, "ipc": 1.0}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped file
        one = extract_tokens(from_dict(TransformerTrainConfig, raw), tmp_path / "one", batch_size=2, shard_size=3,
                             quiet=True)

    port, two = _free_port(), tmp_path / "two"
    command = [sys.executable, "-m", "magvit", "extract-tokens", str(tmp_path / "cfg.yaml"), "--out", str(two),
               "--device", "cpu", "--batch-size", "2", "--shard-size", "3"]
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                  "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r), "OMP_NUM_THREADS": "1"})
            for r in range(2)]
    logs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs
    assert [("skipped 1 of 12 files" in log) for log in logs] == [True, False], logs
    assert [log.count("wrote") for log in logs] == [1, 0]

    index = json.loads((one / "index.json").read_text())
    assert json.loads((two / "index.json").read_text()) == index
    assert index["splits"]["train"] == {"count": 11, "shards": [f"train-0000{j}.safetensors" for j in range(4)]}
    for name in index["splits"]["train"]["shards"] + index["splits"]["val"]["shards"]:
        a, b = load_file(str(one / name)), load_file(str(two / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sampling_flags_reach_the_settings(tmp_path):
    out = tmp_path / "samples.png"
    assert main(["generate", "--checkpoint", str(SHIPPED), "--num", "2", "--steps", "2", "--dtype", "bf16",
                 "--no-cuda-graph", "--device", "cpu", "--out", str(out)]) == 0
    settings = yaml.safe_load((tmp_path / "samples.settings.yaml").read_text())
    assert settings["dtype"] == "bf16" and settings["compile"] is False
    assert settings["decode"]["cuda_graph"] is False and settings["decode"]["compile"] is False


def test_training_and_quickstart_flags_set_the_config_keys():
    from magvit.cli import build_parser
    from magvit.cli.recipes import quickstart_overrides as _quickstart_overrides
    from magvit.cli.train import training_overrides as _training_overrides
    from magvit.config import parse_overrides
    from magvit.quickstart import quickstart_config

    args = build_parser().parse_args(["train", "x.yaml", "loop.steps=3", "--dtype", "fp32", "--compile"])
    assert parse_overrides(_training_overrides(args)) == {"loop.mixed_precision": "no", "loop.compile": True,
                                                          "loop.steps": 3}
    args = build_parser().parse_args(["quickstart", "--dtype", "bf16", "report.seed=2"])
    cfg = quickstart_config(None, parse_overrides(_quickstart_overrides(args)))
    assert cfg.tokenizer.loop.mixed_precision == cfg.transformer.loop.mixed_precision == "bf16"
    assert cfg.report.dtype == "bf16" and cfg.report.seed == 2


def test_bench_train_reports_speed_memory_and_mfu(tmp_path, capsys):
    assert main(["bench", "train", "--tokenizers", "causal3d:tiny", "--transformers", "tiny", "--batch", "2",
                 "--frames", "5", "--size", "16", "--grid", "2,4,4", "--checkpointing", "both", "--repeats", "1",
                 "--peak-tflops", "1", "--out", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "train.json").read_text())
    rows = table["rows"]
    assert [(r["model"].split()[0], r["checkpointing"]) for r in rows] == [
        ("causal3d:tiny", False), ("causal3d:tiny", True), ("transformer", False), ("transformer", True)]
    for row in rows:
        assert row["clips_per_s"] > 0 and row["tokens_per_s"] > row["clips_per_s"] and row["gflop_per_step"] > 0
        assert row["mfu_pct"] == pytest.approx(100 * row["tflops"] / 1.0)
    assert rows[2]["tokens_per_s"] == pytest.approx(32 * rows[2]["clips_per_s"])  # 2x4x4 tokens per grid
    assert main(["bench", "train", "--transformers", "tiny", "--dtype", "fp16"]) == 2  # fp16 needs CUDA
    assert "fp16 training needs a CUDA GPU" in capsys.readouterr().err


def _no_compiler(*args, **kwargs):
    raise RuntimeError("torch.compile is not supported here")


@pytest.mark.parametrize("recipe", ["train-tokenizer", "train"])
def test_the_training_speed_options_train_the_same_weights(recipe, tmp_path, monkeypatch):
    """loop.checkpointing plus loop.compile (here without a compiler: the one-warning eager fallback) plus,
    for the tokenizer, channels_last: the weights after a few steps are those of the plain run (1e-5:
    channels-last convolutions sum in another order; measured 0 for the transformer)."""
    if recipe == "train-tokenizer":
        config = ROOT / "configs" / "tokenizer" / "causal3d_tiny_digits.yaml"
        common = ["data.frames=5", "data.size=16", "data.num_samples=8", "loop.steps=2", "loop.batch_size=2",
                  "loop.val_every=2", "loop.val_batches=1", "loop.save_every=2"]
        options = ["loop.checkpointing=true", "channels_last=true", "--compile"]
        weights = "tokenizer/model.safetensors"
    else:
        tokens = {"kind": "train_transformer", "tokenizer": str(SHIPPED / "tokenizer"),
                  "transformer": {"name": "masked", "preset": "tiny", "dropout": 0.1},
                  "data": {"name": "moving_digits", "frames": 9, "size": 32, "num_samples": 8},
                  "val_data": {"name": "moving_digits", "frames": 9, "size": 32, "num_samples": 4, "split": "val"},
                  "tasks": {"cg": 1.0, "fp": 1.0}, "preview": {"num": 0},
                  "loop": {"steps": 3, "batch_size": 4, "val_every": 3, "save_every": 3, "val_batches": 1}}
        config = tmp_path / "train.yaml"
        config.write_text(yaml.safe_dump(tokens))
        common, options, weights = [], ["loop.checkpointing=true", "--compile"], "model/model.safetensors"
    assert main([recipe, str(config), f"run_dir={tmp_path / 'plain'}", *common]) == 0
    monkeypatch.setattr(torch, "compile", _no_compiler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([recipe, str(config), f"run_dir={tmp_path / 'fast'}", *common, *options]) == 0
    fallbacks = [str(w.message) for w in caught if "--compile" in str(w.message)]
    assert len(fallbacks) == (2 if recipe == "train-tokenizer" else 1), fallbacks  # encoder + decoder | transformer
    plain, fast = (load_file(str(tmp_path / run / weights)) for run in ("plain", "fast"))
    assert plain.keys() == fast.keys()
    assert all(torch.allclose(plain[k], fast[k], rtol=0, atol=1e-5) for k in plain)


def test_bench_tokenizers_reports_the_ids_a_low_precision_keeps(tmp_path):
    assert main(["bench", "tokenizers", "--tokenizers", str(SHIPPED / "tokenizer"), "--frames", "9", "--size", "32",
                 "--num-clips", "4", "--batch-size", "4", "--dtype", "bf16", "--repeats", "1", "--warmup", "0",
                 "--out", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "tokenizers.json").read_text())
    assert "ids = fp32 %" in [c["header"] for c in table["columns"]] and "bf16" in table["title"]
    assert 99.0 <= table["rows"][0]["ids_fp32_pct"] <= 100.0


def test_deepspeed_is_told_the_cpu_only_without_cuda_and_never_over_the_users_choice(monkeypatch):
    """DeepSpeed's detection logs a warning in every command on a CPU machine (accelerate imports it when
    installed): the CLI names the CPU, which DeepSpeed would pick anyway; a user's value and a CUDA
    machine are left alone."""
    import os

    from magvit.runtime import quiet_deepspeed_detection

    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    quiet_deepspeed_detection()
    assert os.environ["DS_ACCELERATOR"] == "cpu"
    monkeypatch.setenv("DS_ACCELERATOR", "xpu")
    quiet_deepspeed_detection()
    assert os.environ["DS_ACCELERATOR"] == "xpu"
    monkeypatch.delenv("DS_ACCELERATOR")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    quiet_deepspeed_detection()
    assert "DS_ACCELERATOR" not in os.environ
