"""`magvit train` and `magvit extract-tokens`: the transformer learns beyond the unigram baseline on
moving digits, a resumed run equals the uninterrupted one, the token cache equals tokenizing on the
fly, the release folder holds what sampling needs, and bad settings are one line with exit code 2."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from magvit.cli import main
from magvit.config import from_dict
from magvit.errors import MagvitError
from magvit.kinds import load_config
from magvit.training.tokens import TokenCache, extract_tokens, open_token_source
from magvit.training.transformer import (
    TransformerLossConfig,
    TransformerTrainConfig,
    check_config,
    commit_loss,
    evaluate,
    train_transformer,
)

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """An untrained causal3d tiny (9x16x16 clips -> 3x4x4 tokens, 2^10 codes): the transformer must
    learn ITS tokens; a tokenizer need not be good for that."""
    from magvit.tokenizers import build_tokenizer

    torch.manual_seed(0)
    return build_tokenizer("causal3d", "tiny").save_pretrained(tmp_path_factory.mktemp("tok") / "tokenizer")


def _config(tmp: Path, tokenizer_dir: Path, **changes) -> dict:
    raw = {
        "kind": "train_transformer", "run_dir": str(tmp / "run"), "tokenizer": str(tokenizer_dir),
        "transformer": {"name": "masked", "preset": "tiny", "dropout": 0.0},
        "data": {"name": "moving_digits", "frames": 9, "size": 16, "num_samples": 16},
        "val_data": {"name": "moving_digits", "frames": 9, "size": 16, "num_samples": 8, "split": "val"},
        "tasks": {"cg": 1.0, "fp": 1.0, "ipc": 0.5},
        "optim": {"lr": 0.003, "betas": [0.9, 0.96], "warmup_steps": 2},
        "loop": {"steps": 4, "batch_size": 4, "val_every": 2, "save_every": 2, "val_batches": 1, "log_every": 1,
                 "ema_decay": 0.9},
        "preview": {"num": 2, "steps": 2},
    }
    for key, value in changes.items():  # sections merge, everything else is replaced
        raw[key] = {**raw[key], **value} if key in ("data", "val_data", "loop", "optim", "preview") else value
    return raw


def _write(path: Path, raw: dict) -> str:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_learns_masked_tokens_beyond_the_unigram_baseline(tmp_path, tokenizer_dir):
    # 60 steps: held-out CE 0.79 of the unigram entropy (40 steps: 0.85, 120: 0.77), against the 0.9 asserted
    raw = _config(tmp_path, tokenizer_dir, tokens=str(tmp_path / "cache"), tasks={"cg": 1.0},
                  data={"num_samples": 256}, val_data={"num_samples": 64},
                  loop={"steps": 60, "batch_size": 32, "val_every": 10**6, "save_every": 10**6, "log_every": 20,
                        "val_batches": 2, "ema_decay": None},
                  preview={"num": 0}, optim={"lr": 0.003, "betas": [0.9, 0.96], "warmup_steps": 20})
    cfg = from_dict(TransformerTrainConfig, raw)
    extract_tokens(cfg, batch_size=64, quiet=True)
    train_transformer(cfg, quiet=True)

    train = TokenCache(tmp_path / "cache", "train")
    counts = torch.stack([train[i]["tokens"] for i in range(len(train))]).flatten().bincount(minlength=1024)
    p = counts[counts > 0].double() / counts.sum()
    unigram = float(-(p * p.log()).sum())  # nats: the best context-free model of the training tokens

    from magvit.transformer import MaskedTransformer

    model = MaskedTransformer.from_pretrained(tmp_path / "run" / "model")
    held_out = evaluate(model, open_token_source(cfg), ["cg"], batches=2, batch_size=32, seed=123)
    print(f"\nheld-out masked-token CE {held_out['cg.mask_ce']:.3f} nats vs unigram entropy of the training "
          f"tokens {unigram:.3f} nats (held-out tokens' own histogram: {held_out['unigram_entropy']:.3f})")
    assert held_out["cg.mask_ce"] < 0.9 * unigram
    assert held_out["cg.mask_ce"] < held_out["unigram_entropy"]  # beats even the held-out set's own histogram


def test_resume_cache_and_release(tmp_path, tokenizer_dir):
    # the uninterrupted run, on the fly, through the CLI
    raw = _config(tmp_path, tokenizer_dir)
    assert main(["train", _write(tmp_path / "a.yaml", raw)]) == 0
    run_a = tmp_path / "run"

    # crash after the step-2 checkpoint: a copy without the later state, resumed
    run_b = tmp_path / "run_b"
    shutil.copytree(run_a, run_b)
    shutil.rmtree(run_b / "checkpoints" / "step-00000004")
    shutil.rmtree(run_b / "model")
    assert main(["train", _write(tmp_path / "b.yaml", {**raw, "run_dir": str(run_b)}), "--resume"]) == 0
    assert _same(_weights(run_a), _weights(run_b))
    last_a, last_b = (load_file(str(r / "checkpoints/step-00000004/opt.optim.safetensors")) for r in (run_a, run_b))
    assert _same(last_a, last_b)
    rows = [[r.split(",")[:-1] for r in (run / "train.csv").read_text().splitlines()] for run in (run_a, run_b)]
    assert rows[0] == rows[1] and len(rows[0]) == 5  # header + 4 steps, each logged once (clips/s aside)

    # the token cache path gives the same run as tokenizing on the fly
    cache = tmp_path / "cache"
    assert main(["extract-tokens", str(tmp_path / "a.yaml"), "--out", str(cache), "--batch-size", "3",
                 "--shard-size", "5", "--device", "cpu"]) == 0
    index = json.loads((cache / "index.json").read_text())
    assert index["splits"]["train"]["count"] == 16 and len(index["splits"]["train"]["shards"]) == 4
    assert index["grid"] == [3, 4, 4] and index["tasks"]["fp"] == {"use_class": False, "refine": True}
    run_c = tmp_path / "run_c"
    assert main(["train", str(tmp_path / "a.yaml"), f"run_dir={run_c}", f"tokens={cache}"]) == 0
    assert _same(_weights(run_a), _weights(run_c))

    # the release folder: transformer, tokenizer copy, metadata; sample previews were written
    meta = json.loads((run_a / "model" / "magvit.json").read_text())
    assert meta["tasks"] == ["cg", "fp", "ipc"] and meta["num_classes"] == 10 and meta["grid"] == [3, 4, 4]
    assert meta["frames"] == 9 and meta["size"] == [16, 16] and meta["tokenizer"] == "tokenizer"
    assert meta["condition_rule"] == "any" and meta["loss_normalize"] == "positions"
    assert (run_a / "model" / "tokenizer" / "model.safetensors").is_file()
    assert sorted(p.name for p in (run_a / "samples").iterdir()) == ["step-00000002.gif", "step-00000004.gif"]
    val = (run_a / "val.csv").read_text().splitlines()
    assert val[0].startswith("step,cg.mask_ce,cg.mask_acc,fp.mask_ce") and len(val) == 3


def test_cached_tokens_equal_the_tokenizer(tmp_path, tokenizer_dir):
    from magvit.data import MovingDigits
    from magvit.tasks import TASKS
    from magvit.tokenizers import Tokenizer

    raw = _config(tmp_path, tokenizer_dir, tasks={"fi": 1.0}, data={"num_samples": 3}, val_data={"num_samples": 2})
    cache = extract_tokens(from_dict(TransformerTrainConfig, raw), tmp_path / "cache", batch_size=2, quiet=True)
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    clips = torch.stack([MovingDigits(frames=9, size=16, num_samples=3)[i]["video"] for i in range(3)])
    cond = TASKS.build("fi").condition(clips, tokenizer)
    cached = TokenCache(cache, "train")
    for i in range(3):
        assert torch.equal(cached[i]["tokens"], tokenizer.encode(clips[i : i + 1])[0])
        assert torch.equal(cached[i]["cond.fi"], cond.tokens[i])
        assert torch.equal(cached[i]["mask.fi"], cond.latent_mask[i])
    with pytest.raises(Exception, match="no conditions for task"):
        TokenCache(cache, "train", tasks=("fp",))
    assert json.loads((cache / "index.json").read_text())["condition_rule"] == "any"
    strict = from_dict(TransformerTrainConfig, {**raw, "tokens": str(cache), "condition_rule": "all"})
    with pytest.raises(MagvitError, match="extracted with condition_rule=any, the config sets all"):
        open_token_source(strict)


def test_a_token_cache_holds_every_variant_of_a_random_crop_set(tmp_path, tokenizer_dir):
    """`variants: 2`: the cache's train split is the set's two draws one after the other (sample N + i =
    sample i as epoch 1 draws it), each equal to tokenizing that draw; the held-out split is as before."""
    from magvit.data import build_dataset
    from magvit.data.bundled import BundledClipsConfig
    from magvit.tokenizers import Tokenizer

    clips = {"name": "bundled_clips", "frames": 9, "size": 16, "crop_from": 24, "flip": True, "hop": 60}
    raw = {**_config(tmp_path, tokenizer_dir, tasks={"fp": 1.0}), "data": {**clips, "variants": 2},
           "val_data": {**clips, "split": "val"}}  # in place of the moving digits (not merged with them)
    cache = extract_tokens(from_dict(TransformerTrainConfig, raw), tmp_path / "cache", batch_size=4, quiet=True)
    options = {k: v for k, v in clips.items() if k != "name"}
    data = build_dataset(BundledClipsConfig(**options))
    n = len(data)
    cached, val = TokenCache(cache, "train"), TokenCache(cache, "val")
    assert len(cached) == 2 * n and len(val) == len(build_dataset(BundledClipsConfig(**options, split="val")))
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    for epoch, i in ((0, 0), (1, 0), (1, n - 1)):
        data.set_epoch(epoch)
        want = tokenizer.encode(data[i]["video"][None])[0]
        assert torch.equal(cached[epoch * n + i]["tokens"], want), (epoch, i)
    assert not torch.equal(cached[0]["tokens"], cached[n]["tokens"]), "epoch 1 is another crop / flip"


def test_commit_loss_normalisations():
    """positions (MAGVIT): sum of per-position weighted CE / N; per_kind: the weighted sum of each kind's mean."""
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 3, 3, 1, 16)
    tokens = torch.randint(0, 16, (2, 2, 3, 3))
    kinds = torch.randint(0, 3, (2, 2, 3, 3)).to(torch.int8)
    ce = F.cross_entropy(logits.reshape(-1, 16), tokens.reshape(-1), reduction="none").view(2, 2, 3, 3)
    w = {2: 1.0, 1: 0.5, 0: 0.25}  # mask, refine, recon
    loss = TransformerLossConfig(mask_weight=w[2], refine_weight=w[1], recon_weight=w[0], label_smoothing=0.0)
    total, terms = commit_loss(logits, tokens, kinds, loss)
    per_position = sum(w[int(k)] * float(c) for k, c in zip(kinds.flatten(), ce.flatten())) / ce.numel()
    assert abs(float(total) - per_position) < 1e-5
    per_kind = sum(w[k] * float(ce[kinds == k].mean()) for k in (0, 1, 2))
    total, _ = commit_loss(logits, tokens, kinds, dataclasses.replace(loss, normalize="per_kind"))
    assert abs(float(total) - per_kind) < 1e-5
    for name, k in (("mask", 2), ("refine", 1), ("recon", 0)):  # the logged terms are per-kind means
        assert abs(float(terms[name]) - float(ce[kinds == k].mean())) < 1e-5
        assert abs(float(terms[f"share_{name}"]) - float((kinds == k).float().mean())) < 1e-6
    # MaskGIT: the mean CE over masked positions only
    maskgit = dataclasses.replace(loss, normalize="per_kind", refine_weight=0.0, recon_weight=0.0, mask_weight=1.0)
    assert abs(float(commit_loss(logits, tokens, kinds, maskgit)[0]) - float(ce[kinds == 2].mean())) < 1e-5


@pytest.mark.parametrize("change, message", [
    ({"tokenizer": None}, "set `tokenizer` and `data`"),
    ({"tasks": {"bogus": 1.0}}, "unknown task 'bogus'"),
    ({"tasks": {"cg": 0.0}}, "weights sum to 0"),
    ({"task_options": {"fi": {"cond_frames": 1}}}, "task 'fi' has options or previews but is not trained"),
    ({"data": {"name": "moving_digits", "frames": 9, "size": 15}}, "height"),
    ({"condition_rule": "some"}, "key 'condition_rule': must be one of 'any', 'all', got 'some'"),
    ({"loss": {"normalize": "tokens"}}, "key 'loss.normalize': must be one of 'positions', 'per_kind', got 'tokens'"),
    ({"loss": {"mask_weight": 0.0}}, "mask_weight > 0"),
])
def test_bad_settings_are_one_line(tmp_path, tokenizer_dir, capsys, change, message):
    raw = {**_config(tmp_path, tokenizer_dir), **change}
    assert main(["train", _write(tmp_path / "bad.yaml", raw)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def test_resume_without_a_checkpoint_and_a_reused_run_dir(tmp_path, tokenizer_dir, capsys):
    path = _write(tmp_path / "c.yaml", _config(tmp_path, tokenizer_dir, loop={"steps": 2}))
    assert main(["train", path, "--resume"]) == 0  # nothing saved yet: from scratch, and one line says so
    assert "no checkpoint under" in capsys.readouterr().out
    assert main(["train", path]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_build_tiny(path):
    from magvit.transformer import TRANSFORMERS

    cfg = load_config(path, ["transformer.layers=1", "transformer.width=32", "transformer.heads=2"])
    check_config(cfg)
    tcfg = dataclasses.replace(cfg.transformer, codebook_size=2**10, num_classes=3)
    model = TRANSFORMERS[tcfg.name].build(tcfg)
    ids = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    logits = model(ids, torch.tensor([model.vocab.task(next(iter(cfg.tasks)))]), torch.tensor([model.vocab.uncond]))
    assert logits.shape[:4] == (1, 1, 2, 2)


@pytest.mark.parametrize("conditioning", ["latent", "prefix"])
def test_trains_with_the_conditioning_alternatives(tmp_path, tokenizer_dir, conditioning):
    raw = _config(tmp_path, tokenizer_dir, tasks={"cg": 1.0, "fp": 1.0, "fi": 1.0},
                  loop={"steps": 2, "val_every": 2, "save_every": 2})
    raw["transformer"] = {**raw["transformer"], "conditioning": conditioning}
    assert main(["train", _write(tmp_path / "c.yaml", raw)]) == 0
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert json.dumps(config).count(f'"conditioning": "{conditioning}"') == 1
    val = (tmp_path / "run" / "val.csv").read_text().splitlines()
    assert len(val) == 2 and "fp.mask_ce" in val[0]


@pytest.mark.parametrize("command", [["train"], ["extract-tokens", "--out", "tokens"]])
def test_a_tokenizer_not_trained_yet_names_the_command_that_makes_it(tmp_path, monkeypatch, capsys, command):
    """The README's `magvit train configs/train/digits_tiny.yaml` on a fresh clone: its tokenizer
    (runs/causal3d_tiny_digits/tokenizer) is made by the shipped tokenizer recipe whose run_dir it is;
    nothing is written. A folder no shipped recipe makes gets the general command."""
    monkeypatch.chdir(tmp_path)
    assert main([command[0], "configs/train/digits_tiny.yaml", *command[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "magvit: error: tokenizer runs/causal3d_tiny_digits/tokenizer does not exist yet: make it with " \
                  "`magvit train-tokenizer configs/tokenizer/causal3d_tiny_digits.yaml` (or set tokenizer=DIR to a " \
                  "tokenizer folder)", err
    assert list(tmp_path.iterdir()) == []
    assert main([command[0], "configs/train/digits_tiny.yaml", *command[1:], "tokenizer=elsewhere/tok/x"]) == 2
    assert "train one with `magvit train-tokenizer CONFIG`" in capsys.readouterr().err


def test_a_token_cache_index_is_typed(tmp_path):
    """index.json reads as a TokenIndex: a wrong type is one line naming the key; an older cache without
    condition_rule reads with the strict rule it was made with."""
    from magvit.errors import MagvitError
    from magvit.training.token_cache import read_index

    body = {"format": "magvit-tokens", "version": 1, "grid": [3, 4, 4], "clip": [9, 16, 16], "codebook_size": 64,
            "tasks": {"fp": {"use_class": False, "refine": True}},
            "splits": {"train": {"count": 2, "shards": ["train-00000.safetensors"]}}}
    (tmp_path / "index.json").write_text(json.dumps(body))
    index = read_index(tmp_path)
    assert index.grid == (3, 4, 4) and index.condition_rule == "all" and index.num_classes == 0
    (tmp_path / "index.json").write_text(json.dumps({**body, "grid": "3x4x4"}))
    with pytest.raises(MagvitError, match="index.json: key 'grid'"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({**body, "version": 2}))
    with pytest.raises(MagvitError, match="not a magvit token cache of version 1"):
        read_index(tmp_path)


def test_a_fixed_set_is_tokenized_once_and_the_same(tmp_path, tokenizer_dir):
    """On the fly, a fixed training set (moving digits) carries its sample indices; a sample's tokens and
    conditions are computed the first time and looked up after, equal to tokenizing the batch again,
    with the tokenizer not called for samples already seen."""
    from magvit.data import build_dataloader

    cfg = from_dict(TransformerTrainConfig, _config(tmp_path, tokenizer_dir))
    source = open_token_source(cfg)
    batches = list(build_dataloader(source.train, 4, seed=0))
    assert all("index" in b for b in batches) and len(batches) == 4
    calls = []
    encode = source.tokenizer.encode
    source.tokenizer.encode = lambda video: calls.append(len(video)) or encode(video)
    for batch in batches:  # the first epoch: every sample tokenized, in its batch
        source.batch(batch, "cg")
    assert calls  # the first epoch encoded
    calls.clear()
    for batch in batches:  # a second task: the clips' tokens are kept, only fp's condition clips are encoded
        source.batch(batch, "fp")
    assert calls == [4, 4, 4, 4]
    mixed = {k: torch.cat([batches[0][k][:2], batches[1][k][2:]]) for k in batches[0]}  # seen, in another batch
    for batch in (*batches, mixed):
        for task in ("cg", "fp"):
            calls.clear()
            tokens, labels, cond = source.batch(batch, task)
            assert not calls  # every sample seen under this task: looked up, not encoded
            again, cond_again = source._tokenize(batch["video"], task)
            assert torch.equal(tokens, again) and torch.equal(cond.tokens, cond_again.tokens)
            assert torch.equal(cond.latent_mask, cond_again.latent_mask) and cond.use_class == cond_again.use_class
            assert torch.equal(labels, batch["label"])
    for k in batches[0]["index"][:2].tolist():  # a batch half seen, half not: rows looked up and rows made now
        del source.memo[("fp", k)], source.memo[("clip", k)]
    calls.clear()
    tokens, _, cond = source.batch(batches[0], "fp")
    assert calls == [2, 2]  # only the two not seen: their clips and their condition clips
    again, cond_again = source._tokenize(batches[0]["video"], "fp")
    assert torch.equal(tokens, again) and torch.equal(cond.tokens, cond_again.tokens)
    assert tokens.device == again.device and torch.equal(cond.latent_mask, cond_again.latent_mask)
    source.memo.clear()
    source.MEMO_BYTES = 0  # over the budget: nothing kept, every batch tokenized
    calls.clear()
    source.batch(batches[0], "cg")
    source.batch(batches[0], "cg")
    assert len(calls) == 2 and not source.memo
