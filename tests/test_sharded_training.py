"""Sharded training on two CPU processes (gloo), launched as a user would, with the shipped accelerate
configs: `accelerate launch --config_file configs/accelerate/{ddp,fsdp2,deepspeed_zero2,deepspeed_zero3}.yaml`.

FSDP2 and DeepSpeed ZeRO-3 against DDP on the same data: the losses agree within 1e-4 (relative) and the
gathered checkpoints within 1e-5; an FSDP2 run resumed from its own checkpoint continues bit for bit;
checkpoints are the same files under every engine, so a DDP checkpoint resumes under FSDP2 and ZeRO-3
(the transformer) and under FSDP2, ZeRO-2 and ZeRO-3 (the tokenizer's GAN: two optimizers, an EMA, the
adaptive weight, LeCAM, R1, LPIPS, LFQ's all-reduced entropy).

accelerate (1.16) runs FSDP and DeepSpeed on accelerator devices only, so the processes here start
through `SHIM`, which changes what accelerate concludes on a CPU and nothing else:
- FSDP: with ACCELERATE_USE_CPU (gloo), accelerate takes an FSDP launch for plain multi-CPU DDP; the
  shim sets the FSDP type and plugin as accelerate does on GPUs.
- DeepSpeed (DS_ACCELERATOR=cpu): DeepSpeed starts the process group, but accelerate counts one process
  of one; the shim reads the count and the rank from the process group.
"""

import csv
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
RTOL = 1e-4  # losses: the engines reduce in other orders (float32 sums)

SHIM = """
import os, sys
import torch.distributed as dist
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

init_state, init_partial = AcceleratorState.__init__, PartialState.__init__

def fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    init_state(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin

def process_count_from_the_group(self, *args, **kwargs):
    init_partial(self, *args, **kwargs)
    if dist.is_initialized() and self.num_processes == 1 < dist.get_world_size():
        PartialState._shared_state.update(num_processes=dist.get_world_size(), process_index=dist.get_rank(),
                                          local_process_index=int(os.environ["LOCAL_RANK"]))

AcceleratorState.__init__, PartialState.__init__ = fsdp_on_cpu, process_count_from_the_group
from magvit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _launch(tmp: Path, config: str, args: list[str]) -> None:
    """`accelerate launch --config_file configs/accelerate/<config>.yaml --num_processes 2` of `magvit ARGS`."""
    shim = tmp / "shim.py"
    shim.write_text(SHIM)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(sys.executable).parent / "accelerate"
    launch = [str(script), "launch"] if script.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if config.startswith("deepspeed"):
        env["DS_ACCELERATOR"] = "cpu"  # accelerate refuses DeepSpeed when told the device is the CPU
    else:
        env["ACCELERATE_USE_CPU"] = "true"
    cmd = [*launch, "--config_file", str(CONFIGS / f"{config}.yaml"), "--num_processes", "2",
           "--main_process_port", str(port), str(shim), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    if out.returncode != 0 and "gloo" in out.stderr.lower() and "not available" in out.stderr.lower():
        pytest.skip("torch.distributed has no gloo backend on this machine")
    assert out.returncode == 0, out.stderr[-4000:]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "train.csv").open() as f:
        return list(csv.DictReader(f))


def _without_speed(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "clips_per_s"} for r in rows]


def _close_rows(a: list[dict], b: list[dict], skip=("clips_per_s", "task", "grad_norm")) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ra:
            if key not in skip and ra[key] != "":
                assert float(ra[key]) == pytest.approx(float(rb[key]), rel=RTOL, abs=1e-6), (ra["step"], key)


def _files(run: Path, step: int) -> dict[str, dict[str, torch.Tensor]]:
    folder = run / "checkpoints" / f"step-{step:08d}"
    return {p.name: load_file(str(p)) for p in sorted(folder.glob("*.safetensors")) if p.name != "rng.safetensors"}


def _close_files(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for key in a[name]:
            torch.testing.assert_close(a[name][key].float(), b[name][key].float(), atol=atol, rtol=0,
                                       msg=lambda m, name=name, key=key: f"{name} {key}: {m}")


def _interrupted_copy(run: Path, to: Path, keep: int) -> Path:
    """`run` as a job killed after its step-`keep` checkpoint would have left it."""
    shutil.copytree(run, to)
    for folder in (to / "checkpoints").iterdir():
        if int(folder.name.split("-")[1]) > keep:
            shutil.rmtree(folder)
    return to


@pytest.fixture(scope="module")
def transformer_config(tmp_path_factory) -> Path:
    from magvit.tokenizers import build_tokenizer

    tmp = tmp_path_factory.mktemp("sharded")
    torch.manual_seed(0)
    tokenizer = build_tokenizer("causal3d", "tiny").save_pretrained(tmp / "tokenizer")
    raw = {
        "kind": "train_transformer", "tokenizer": str(tokenizer),
        "transformer": {"name": "masked", "preset": "tiny", "dropout": 0.0},
        "data": {"name": "moving_digits", "frames": 9, "size": 16, "num_samples": 16},
        "val_data": {"name": "moving_digits", "frames": 9, "size": 16, "num_samples": 4, "split": "val"},
        "tasks": {"cg": 1.0, "fp": 1.0},
        "optim": {"lr": 0.003, "betas": [0.9, 0.96], "warmup_steps": 2},
        "loop": {"steps": 5, "batch_size": 2, "val_every": 5, "save_every": 2, "val_batches": 1, "log_every": 1,
                 "ema_decay": 0.9, "keep_last": 5},
        "preview": {"num": 0},
    }
    path = tmp / "transformer.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ddp_transformer(transformer_config, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp") / "run"
    _launch(run.parent, "ddp", ["train", str(transformer_config), f"run_dir={run}"])
    # 16 clips in batches of 2 over 2 processes: 4 steps per epoch, so step 5 opens epoch 1 (one process: 0)
    assert [r["epoch"] for r in _rows(run)] == ["0", "0", "0", "0", "1"]
    return run


@pytest.mark.slow  # two or three launches of two processes
def test_fsdp2_transformer_matches_ddp_and_resumes_bit_for_bit(transformer_config, ddp_transformer, tmp_path):
    run = tmp_path / "fsdp2"
    _launch(tmp_path, "fsdp2", ["train", str(transformer_config), f"run_dir={run}"])
    _close_rows(_rows(run), _rows(ddp_transformer))
    _close_files(_files(run, 5), _files(ddp_transformer, 5), atol=1e-5)  # weights, EMA, AdamW state
    assert (run / "model" / "model.safetensors").is_file()

    resumed = _interrupted_copy(run, tmp_path / "resumed", keep=2)
    _launch(tmp_path, "fsdp2", ["train", str(transformer_config), f"run_dir={resumed}", "--resume"])
    _close_files(_files(resumed, 5), _files(run, 5), atol=0.0)
    assert _without_speed(_rows(resumed)) == _without_speed(_rows(run))


@pytest.mark.slow  # two or three launches of two processes
def test_a_ddp_checkpoint_resumes_under_deepspeed_zero3(transformer_config, ddp_transformer, tmp_path):
    _needs_deepspeed()
    run = _interrupted_copy(ddp_transformer, tmp_path / "zero3", keep=2)
    _launch(tmp_path, "deepspeed_zero3", ["train", str(transformer_config), f"run_dir={run}", "--resume"])
    _close_rows(_rows(run), _rows(ddp_transformer))
    _close_files(_files(run, 5), _files(ddp_transformer, 5), atol=1e-5)


# a 4-step GAN tokenizer run, checkpoints at steps 2 and 4; D's gradient is clipped (its norm is about 3 here)
TOKENIZER_GAN = ["train-tokenizer", str(ROOT / "configs" / "tokenizer" / "causal3d_tiny_digits.yaml"),
                 "data.frames=5", "data.num_samples=16", "loop.steps=4", "loop.save_every=2", "loop.val_every=4",
                 "loop.batch_size=2", "loop.val_batches=1", "loop.log_every=1", "loop.keep_last=5",
                 "discriminator.name=stylegan3d", "discriminator.preset=tiny", "loss.gan_weight=0.1",
                 "loss.lecam_weight=0.01", "disc_optim.grad_clip=0.5"]


# the GAN with everything that differentiates twice or reduces across processes: R1 every step (D
# differentiated twice), the adaptive weight (D and the decoder's last layer), LeCAM, LPIPS (a random
# backbone), the EMA and LFQ's entropy all-reduce
TOKENIZER_GAN_FULL = [*TOKENIZER_GAN, "loss.r1_weight=1.0", "loss.r1_every=1", "loss.perceptual_weight=0.1",
                      "loss.perceptual_net=alex", "loss.perceptual_pretrained=false"]


@pytest.fixture(scope="module")
def ddp_tokenizer_gan(tmp_path_factory) -> Path:
    """A 4-step GAN tokenizer run under DDP (checkpoints at steps 2 and 4)."""
    run = tmp_path_factory.mktemp("ddp_gan") / "run"
    _launch(run.parent, "ddp", [*TOKENIZER_GAN_FULL, f"run_dir={run}"])
    return run


def _gan_resumed(ddp: Path, tmp: Path, engine: str) -> Path:
    """DDP's step-2 checkpoint resumed under `engine`: the resumed steps 3-4 match DDP's own. Returns the
    resumed run."""
    run = _interrupted_copy(ddp, tmp / engine, keep=2)
    _launch(tmp, engine, [*TOKENIZER_GAN_FULL, f"run_dir={run}", "--resume"])
    rows = _rows(run)
    assert rows[-1]["gan_d"] != "" and rows[-1]["gan_g"] != "" and rows[-1]["r1"] != ""  # the GAN ran
    _close_rows(rows, _rows(ddp))
    # tokenizer, disc, EMA, LeCAM, both AdamW states; Adam divides by sqrt(v), so the engines' other
    # reduction order in a near-zero gradient moves a weight by up to ~1.3e-5 here (measured, fused AdamW)
    _close_files(_files(run, 4), _files(ddp, 4), atol=3e-5)
    assert (run / "tokenizer" / "model.safetensors").is_file()
    return run


def _needs_deepspeed() -> None:
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed: pip install 'magvit[deepspeed]'")
    pytest.importorskip("transformers", reason="accelerate's DeepSpeed plugin imports transformers")


@pytest.mark.slow  # two launches of two processes
def test_a_ddp_tokenizer_gan_checkpoint_resumes_under_fsdp2(ddp_tokenizer_gan, tmp_path):
    """The generator and discriminator as two FSDP2 roots (two optimizers, both clipped), the sharded EMA."""
    _gan_resumed(ddp_tokenizer_gan, tmp_path, "fsdp2")


@pytest.mark.slow  # two launches of two processes
def test_a_ddp_tokenizer_gan_checkpoint_resumes_under_deepspeed_zero2(ddp_tokenizer_gan, tmp_path):
    """The generator and discriminator as two ZeRO-2 engines; R1 differentiates a forward of its own."""
    _needs_deepspeed()
    _gan_resumed(ddp_tokenizer_gan, tmp_path, "deepspeed_zero2")


@pytest.mark.slow  # two launches of two processes
def test_a_ddp_tokenizer_gan_checkpoint_resumes_under_deepspeed_zero3(ddp_tokenizer_gan, tmp_path):
    """Both models' weights in pieces (ZeRO-3 gathers each module's for its forward and its backward):
    the adaptive weight's and R1's second differentiation each get a forward of their own."""
    _needs_deepspeed()
    _gan_resumed(ddp_tokenizer_gan, tmp_path, "deepspeed_zero3")


@pytest.mark.slow  # two launches of two processes
@pytest.mark.parametrize("engine", ["deepspeed_zero2", "deepspeed_zero3"])
def test_a_deepspeed_tokenizer_gan_resumes_its_own_checkpoint_bit_for_bit(engine, tmp_path):
    """Under the same engine and process count a killed GAN run continues exactly: every weight, EMA,
    LeCAM and AdamW state and every logged loss as the uninterrupted run's."""
    _needs_deepspeed()
    run = tmp_path / "run"
    _launch(tmp_path, engine, [*TOKENIZER_GAN_FULL, f"run_dir={run}"])
    resumed = _interrupted_copy(run, tmp_path / "resumed", keep=2)
    _launch(tmp_path, engine, [*TOKENIZER_GAN_FULL, f"run_dir={resumed}", "--resume"])
    _close_files(_files(resumed, 4), _files(run, 4), atol=0.0)
    assert _without_speed(_rows(resumed)) == _without_speed(_rows(run))


def test_shipped_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert names == {"ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3"}
    for name in sorted(names):
        config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
        assert config.num_machines == 1 and config.mixed_precision == "no", name
    assert load_config_from_file(str(CONFIGS / "fsdp2.yaml")).fsdp_config["fsdp_version"] == 2
    stages = {n: load_config_from_file(str(CONFIGS / f"{n}.yaml")).deepspeed_config["zero_stage"]
              for n in ("deepspeed_zero2", "deepspeed_zero3")}
    assert stages == {"deepspeed_zero2": 2, "deepspeed_zero3": 3}


def test_a_mismatched_checkpoint_is_refused_before_the_engine_loads_it(tmp_path):
    """The sharded resume checks each optimizer state against the run's parameters (one line, no
    traceback from inside FSDP or DeepSpeed); no process group is needed: the check comes first."""
    from types import SimpleNamespace

    from magvit.errors import MagvitError
    from magvit.training.checkpoint import save_checkpoint
    from magvit.training.sharding import Sharding

    small, large = torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    opt = torch.optim.AdamW(small.parameters())
    small(torch.ones(1, 2)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path, 1, {"model": small}, {"opt": opt}, {"step": 1}, keep=1)
    sharding = Sharding(SimpleNamespace(is_main_process=True), "deepspeed")
    loaded = []
    sharding.load_optimizer_state = lambda name, saved: loaded.append(name)  # the engine's part, not tested here
    sharding.pairs, sharding.names = {"opt": (large, None)}, {"opt": [n for n, _ in large.named_parameters()]}
    with pytest.raises(MagvitError, match=r"optimizer state opt holds parameter groups of \[2\] parameters; "
                                          r"this run's has \[4\]"):
        sharding.load_optimizers(path)
    sharding.pairs["disc"], sharding.names["disc"] = (small, None), ["weight", "bias"]
    sharding.names["opt"] = ["weight", "bias"]
    with pytest.raises(MagvitError, match="no optimizer state disc"):  # a GAN run resuming a plain checkpoint
        sharding.load_optimizers(path)
    assert loaded == ["opt"]  # the matching state went through to the engine
