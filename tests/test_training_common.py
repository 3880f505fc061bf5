"""Checkpoints (plain data, atomic, keep-last-K, exact restore), lr schedule, EMA, CSV logs."""

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from magvit.errors import MagvitError
from magvit.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from magvit.training.common import CsvLog, OptimConfig, lr_at, make_ema, truncate_log, update_ema


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.0, 0.99))
    return model, opt


def _train(model, opt, steps):
    for _ in range(steps):
        x = torch.randn(16, 4)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def test_checkpoint_restores_everything_exactly(tmp_path):
    model, opt = _model_and_opt()
    _train(model, opt, 3)
    save_checkpoint(tmp_path, 3, {"model": model}, {"opt": opt}, {"epoch": 1, "next_batch": 2}, keep=2)
    after = [_train(model, opt, 2), random.random(), np.random.rand()]

    model2, opt2 = _model_and_opt(seed=1)  # other weights: all must come from the checkpoint
    state = load_checkpoint(latest_checkpoint(tmp_path), {"model": model2}, {"opt": opt2})
    assert state["step"] == 3 and state["epoch"] == 1 and state["next_batch"] == 2
    again = [_train(model2, opt2, 2), random.random(), np.random.rand()]
    assert again == after, "RNG, optimizer moments and weights all restored"
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_files_are_plain_and_old_ones_are_pruned(tmp_path):
    model, opt = _model_and_opt()
    _train(model, opt, 1)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"model": model}, {"opt": opt}, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    files = {p.name for p in latest_checkpoint(tmp_path).iterdir()}
    assert files == {"model.safetensors", "opt.optim.safetensors", "opt.optim.json", "rng.safetensors", "state.json"}
    json.loads((latest_checkpoint(tmp_path) / "opt.optim.json").read_text())
    (tmp_path / "step-00000009.tmp").mkdir()  # an interrupted write is never picked
    assert latest_checkpoint(tmp_path).name == "step-00000003"


def test_mismatched_checkpoint_is_one_clear_error(tmp_path):
    model, opt = _model_and_opt()
    save_checkpoint(tmp_path, 1, {"model": model}, {"opt": opt}, {}, keep=1)
    other = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Linear(16, 2))
    with pytest.raises(MagvitError, match="of another shape"):
        load_checkpoint(latest_checkpoint(tmp_path), {"model": other}, {})
    with pytest.raises(MagvitError, match="no disc.safetensors"):
        load_checkpoint(latest_checkpoint(tmp_path), {"disc": model}, {})
    with pytest.raises(MagvitError, match="no optimizer state disc_opt"):  # a GAN run resuming a plain run
        load_checkpoint(latest_checkpoint(tmp_path), {"model": model}, {"opt": opt, "disc_opt": opt})
    with pytest.raises(MagvitError, match="not a magvit training checkpoint"):
        load_checkpoint(tmp_path, {"model": model}, {})
    (latest_checkpoint(tmp_path) / "model.safetensors").write_bytes(b"not safetensors")  # a damaged file
    with pytest.raises(MagvitError, match="cannot read safetensors"):
        load_checkpoint(latest_checkpoint(tmp_path), {"model": model}, {})


def test_lr_schedule_warms_up_then_decays():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)


def test_ema_moves_toward_the_model():
    model, _ = _model_and_opt()
    ema = make_ema(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, model, decay=0.9)
    for e, b, p in zip(ema.parameters(), before, model.parameters()):
        assert torch.allclose(e, 0.9 * b + 0.1 * p)
        assert not e.requires_grad


def test_csv_log_appends_and_truncates_on_resume(tmp_path):
    log = CsvLog(tmp_path / "m.csv")
    for step in range(1, 5):
        log.write({"step": step, "loss": 1.0 / step})
    truncate_log(tmp_path / "m.csv", 2)
    CsvLog(tmp_path / "m.csv").write({"step": 3, "loss": 0.5})
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "step,loss" and [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]


def test_non_finite_guard_skips_then_stops_with_one_line():
    from types import SimpleNamespace

    from magvit.training.common import NonFiniteGuard

    guard, single = NonFiniteGuard(limit=2), SimpleNamespace(num_processes=1)
    nan = torch.tensor(float("nan"))
    assert guard.ok(single, torch.tensor(1.0), 0)
    assert not guard.ok(single, nan, 1) and not guard.ok(single, nan, 2)
    assert guard.ok(single, torch.tensor(1.0), 3)  # a finite loss resets the count
    assert not guard.ok(single, nan, 4) and not guard.ok(single, torch.tensor(float("inf")), 5)
    with pytest.raises(MagvitError, match="NaN/inf 3 times in a row at step 6"):
        guard.ok(single, nan, 6)


def test_apply_gradients_steps_clips_and_clears():
    from magvit.training.common import apply_gradients, make_accelerator

    accelerator = make_accelerator("no", 1)
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    loss = (model(torch.randn(8, 4)) * 100).pow(2).mean()
    norm = apply_gradients(accelerator, opt, loss, model.parameters(), grad_clip=1.0)
    assert norm is not None and float(norm) > 1.0  # the norm before clipping
    step = (model.weight.detach() - before).norm()
    assert 0 < float(step) <= 0.1 + 1e-6  # lr x a gradient clipped to norm 1
    assert all(p.grad is None for p in model.parameters())
    assert apply_gradients(accelerator, opt, model(torch.randn(8, 4)).sum(), model.parameters(), None) is None


def test_checkpoints_carry_the_fp16_grad_scaler(tmp_path):
    model, opt = _model_and_opt()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    for _ in range(4):  # finite steps: the growth counter moves, the scale doubles after 3
        scaler.scale(model(torch.randn(16, 4)).pow(2).mean()).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    saved = scaler.state_dict()
    assert saved["scale"] == 2048.0 and saved["_growth_tracker"] == 1
    save_checkpoint(tmp_path, 4, {"model": model}, {"opt": opt}, {}, keep=1, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    state = load_checkpoint(latest_checkpoint(tmp_path), {"model": model}, {"opt": opt}, scaler=fresh)
    assert fresh.state_dict() == saved and "grad_scaler" not in state
    save_checkpoint(tmp_path, 5, {"model": model}, {"opt": opt}, {}, keep=1)  # no scaler (fp32, bf16): nothing
    assert "grad_scaler" not in json.loads((latest_checkpoint(tmp_path) / "state.json").read_text())


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    """mkstemp makes 0600 and safetensors replaces the file it writes: released weights must still be
    readable by others (a 0600 model.safetensors once shipped in checkpoints/)."""
    import os
    import stat

    from safetensors.torch import save_file

    from magvit.fileio import atomic_path, atomic_write_text

    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "w.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))
        atomic_write_text(tmp_path / "c.json", "{}")
    finally:
        os.umask(umask)
    for name in ("w.safetensors", "c.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_the_held_out_version_of_a_data_config_has_no_random_augmentation():
    """Validation without a `val_data` section: the held-out split where the data has one, the same
    files otherwise, and in both cases no random clip, crop or flip (every validation sees the same
    clips: the bundled clips' val windows were flipped at random before)."""
    from magvit.data import build_dataset
    from magvit.data.bundled import BundledClipsConfig
    from magvit.data.folders import VideoFolderConfig
    from magvit.training.common import held_out_version

    train = BundledClipsConfig(frames=5, size=16, flip=True, crop_from=20, hop=1)
    val = held_out_version(train)
    assert (val.split, val.flip, val.crop_from, val.frames) == ("val", False, 20, 5)
    first = build_dataset(val)[0]["video"]
    assert torch.equal(build_dataset(replace(val, seed=7))[0]["video"], first)  # nothing left to chance
    folder = held_out_version(VideoFolderConfig(root="clips", frames=4, size=8, random_crop=True, flip=True))
    assert (folder.random_clip, folder.random_crop, folder.flip, folder.root) == (False, False, False, "clips")
