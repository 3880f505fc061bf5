"""Token caches: a dataset tokenized once by a frozen tokenizer, for the fast training path.

`magvit extract-tokens CONFIG` runs the tokenizer of a `train_transformer` config over its `data`
(and its held-out version) and writes, into the config's `tokens` folder:

    index.json                  {"format": "magvit-tokens", "version": 1, "grid": [t, h, w], "clip":
                                 [T, H, W], "codebook_size", "num_classes", "class_names", "tasks":
                                 {name: {"use_class", "refine"}}, "task_options", "condition_rule",
                                 "splits": {"train": {"count",
                                 "shards"}, "val": ...}, "data", "tokenizer": "tokenizer"}
    tokenizer/                  a copy of the tokenizer (config.json + model.safetensors)
    train-00000.safetensors     tokens (n, t, h, w) int32, label (n,) int64 (-1: no label), and per
                                task: cond.<task> (n, t, h, w) int32 and mask.<task> (n, t, h, w) uint8
    val-00000.safetensors       the same for the held-out split

The cache is written into `<dir>.tmp` and renamed when complete, so a crash never leaves a cache
that training would read. Sample i of a split is sample i of the dataset, so a cached run sees
exactly the batches an on-the-fly run sees (the same `EpochSampler`). A dataset with per-epoch
randomness (random clips, crops, flips) is frozen at its epoch-0 samples, unless its config sets
`variants: K` (magvit.data.base): then the train split holds its K draws one after the other (sample
e N + i is sample i as epoch e draws it), so one pass over the cache sees K epochs' crops and flips.

On several processes (`accelerate launch -m magvit extract-tokens ...`) process 0 builds the datasets
once (a folder dataset opens every file to vet it) and sends them to the others; shard j (samples
[j S, (j + 1) S) of a split, S = `shard_size`) is encoded by process j mod W, each process writes
its own shards, and process 0 writes the index. The cache is file for file the one a single process
writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from magvit.config import to_dict
from magvit.errors import MagvitError
from magvit.tasks import NO_OPTIONS, TASKS, Task, TaskOptions
from magvit.tasks.base import TokenGrid
from magvit.training.token_cache import TokenCache, TokenIndex, read_index

if TYPE_CHECKING:
    from accelerate import PartialState

    from magvit.tokenizers import Tokenizer


class TokenConfig(Protocol):
    """What a token source reads of a `train_transformer` config (`TransformerTrainConfig`, whose module
    imports this one): where the tokens come from and the tasks' conditions."""

    @property
    def tokenizer(self) -> str | None: ...  # a tokenizer folder (tokenize on the fly)

    @property
    def tokens(self) -> str | None: ...  # a token cache folder

    @property
    def data(self) -> object | None: ...  # a registered data config (magvit.data.DATASETS)

    @property
    def val_data(self) -> object | None: ...

    @property
    def tasks(self) -> Mapping[str, float]: ...

    @property
    def task_options(self) -> Mapping[str, TaskOptions]: ...

    @property
    def condition_rule(self) -> str: ...

@dataclass
class TaskTokens:
    """What training needs of one task's condition for a batch (a `Condition` without pixels)."""

    tokens: Tensor  # (B, t, h, w) int64: z~, the condition clip's tokens
    latent_mask: Tensor  # (B, t, h, w) bool: True = condition position
    use_class: bool
    refine: bool = True  # COMMIT refines condition positions; False: they stay fixed (image editing)


def task_tokens(task: Task, video: Tensor, tokenizer: TokenGrid, options: TaskOptions, rule: str) -> TaskTokens:
    """The condition tokens and latent mask of `task` for real clips `video` (B, 3, T, H, W), under the
    condition rule `rule` (any | all).

    The one place both training paths get a condition from, so the cache equals the on-the-fly path."""
    cond = task.condition(video, tokenizer, rule, options)
    return TaskTokens(cond.tokens.long(), cond.latent_mask.bool(), bool(cond.use_class), bool(cond.refine))


def dataset_classes(dataset: Dataset) -> tuple[int, list[str] | None]:
    """(number of classes, their names or None) a dataset declares; (0, None) without labels."""
    names = getattr(dataset, "classes", None)
    if names:
        return len(names), [str(n) for n in names]
    return int(getattr(dataset, "num_classes", 0) or 0), None


def build_tasks(names: Iterable[str]) -> dict[str, Task]:
    return {name: TASKS[name].build() for name in names}


class DatasetView(Dataset):
    """A dataset seen through a wrapper: its length, and its attributes (classes, num_classes, ...)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> object:
        if name == "dataset":  # not set yet (unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.dataset, name)


class Indexed(DatasetView):
    """A dataset whose samples repeat across epochs (`sample_key(i)` not None: a fixed set, or one with
    `variants`) and carry that key as "index", so that tokenizing on the fly computes each distinct
    sample's tokens once (`TokenSource.memo`)."""

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "index": self.dataset.sample_key(index)}


class Variants(DatasetView):
    """The `variants` draws of a dataset one after the other: sample e N + i is sample i as epoch e draws
    it (N samples, e < K). What a token cache holds of a set whose random draws repeat every K epochs."""

    def __len__(self) -> int:
        return self.dataset.variants * len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        epoch, i = divmod(index, len(self.dataset))
        self.dataset.set_epoch(epoch)  # the draws of sample i depend on (seed, epoch, i) only
        return self.dataset[i]


class TokenSource:
    """Where training gets its tokens: a frozen tokenizer on the fly, or a token cache.

    `batch(loader_batch, task)` -> tokens (B, t, h, w) int64, labels (B,) int64 (-1: none) and the
    task's condition (`TaskTokens`), on `device`. On the fly, the batches of a training set whose samples
    repeat (a fixed set, or `variants`) carry their sample keys (`Indexed`) and each sample's tokens and
    conditions are computed once and kept in
    `memo` (int32 / bool on the CPU, up to MEMO_BYTES): the tokenizer is frozen, so later epochs only
    look them up (the quickstart's transformer spent a quarter of its step re-encoding the same clips)."""

    MEMO_BYTES = 2 << 30

    def __init__(self, *, tokenizer: Tokenizer, tokenizer_dir: Path, train: Dataset, val: Dataset,
                 tasks: dict[str, Task], task_options: Mapping[str, TaskOptions], flags: dict[str, dict[str, bool]],
                 grid: tuple[int, ...],
                 clip: tuple[int, ...], num_classes: int, class_names: list[str] | None,
                 device: str | torch.device, rule: str):
        self.tokenizer, self.tokenizer_dir, self.train, self.val = tokenizer, tokenizer_dir, train, val
        self.tasks, self.task_options = tasks, task_options
        self.flags = flags  # task -> {"use_class", "refine"}: constant per task, learnt on first use
        self.grid, self.clip = tuple(grid), tuple(clip)
        self.num_classes, self.class_names = num_classes, class_names
        self.codebook_size = tokenizer.codebook_size
        self.device, self.rule = device, rule  # rule: the condition rule (any | all) of every task
        self.memo: dict[tuple[str, int], tuple[Tensor, ...]] = {}  # ("clip" | task, sample) -> its tensors
        self.memo_bytes = 0

    @torch.no_grad()
    def batch(self, batch: Mapping[str, Tensor], task: str) -> tuple[Tensor, Tensor, TaskTokens]:
        if "tokens" in batch:  # from a TokenCache
            tokens = batch["tokens"].to(self.device)
            cond = TaskTokens(batch[f"cond.{task}"].to(self.device), batch[f"mask.{task}"].to(self.device),
                              **self.flags[task])
        elif "index" in batch:  # samples that repeat: each one tokenized once
            tokens, cond = self._remembered(batch, task)
        else:
            tokens, cond = self._tokenize(batch["video"], task)
        labels = batch["label"] if "label" in batch else torch.full((len(tokens),), -1)
        return tokens, labels.long().to(self.device), cond

    def _tokenize(self, video: Tensor, task: str) -> tuple[Tensor, TaskTokens]:
        video = video.to(self.device)  # (B, 3, T, H, W)
        return self.tokenizer.encode(video), self._condition(video, task)

    def _condition(self, video: Tensor, task: str) -> TaskTokens:
        cond = task_tokens(self.tasks[task], video.to(self.device), self.tokenizer,
                           self.task_options.get(task, NO_OPTIONS), self.rule)
        self.flags.setdefault(task, {"use_class": cond.use_class, "refine": cond.refine})
        return cond

    def _remembered(self, batch: Mapping[str, Tensor], task: str) -> tuple[Tensor, TaskTokens]:
        """`_tokenize` with each sample's clip tokens made once (memo key ("clip", sample)) and its
        condition once per task ((task, sample)); only the rows not seen yet are computed."""
        keys, video = batch["index"].tolist(), batch["video"]
        (tokens,) = self._rows("clip", keys, lambda rows: (self.tokenizer.encode(video[rows].to(self.device)),))

        def condition(rows: list[int]) -> tuple[Tensor, Tensor]:
            cond = self._condition(video[rows], task)
            return cond.tokens, cond.latent_mask

        cond_tokens, mask = self._rows(task, keys, condition)
        return tokens.long(), TaskTokens(cond_tokens.long(), mask.bool(), **self.flags[task])

    def _rows(self, kind: str, keys: list[int], make: Callable[[list[int]], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        """The tensors of samples `keys` under memo `kind`, stacked on the device: `make(rows)` computes
        the batch rows whose samples are not in the memo (int tokens kept as int32, masks as bool, on the
        CPU, while the memo holds under MEMO_BYTES); a batch made whole now is returned as made."""
        todo = [i for i, k in enumerate(keys) if (kind, k) not in self.memo]
        made: dict[int, tuple[Tensor, ...]] = {}  # the rows made now, as kept: on the CPU like the memo's
        if todo:
            fresh = make(todo)
            for row, i in enumerate(todo):
                kept = tuple(t[row].int().cpu() if t.dtype != torch.bool else t[row].cpu() for t in fresh)
                made[keys[i]] = kept
                size = sum(t.numel() * t.element_size() for t in kept)
                if self.memo_bytes + size <= self.MEMO_BYTES:
                    self.memo[(kind, keys[i])], self.memo_bytes = kept, self.memo_bytes + size
            if len(todo) == len(keys):
                return fresh
        rows = [made.get(k) or self.memo[(kind, k)] for k in keys]
        return tuple(torch.stack([r[j] for r in rows]).to(self.device) for j in range(len(rows[0])))


def open_token_source(cfg: TokenConfig, device: str | torch.device = "cpu") -> TokenSource:
    """The token source of a `train_transformer` config: its `tokens` cache if set, else its tokenizer."""
    if cfg.tokens is not None:
        return _cached_source(cfg, device)
    return _on_the_fly_source(cfg, device)


def check_tokenizer(path: str | Path) -> None:
    """A `tokenizer:` folder that does not exist (and is no Hub id) is one line naming the command that
    makes it: the shipped tokenizer config whose run writes `<run_dir>/tokenizer` there, if one does."""
    import os

    from magvit import shipped
    from magvit.config import read_yaml
    from magvit.weights import looks_like_hub_id

    if Path(path).expanduser().exists() or looks_like_hub_id(str(path)):
        return
    recipes = shipped.find("configs", "tokenizer")
    for config in sorted(recipes.glob("*.yaml")) if recipes is not None else ():
        run_dir = read_yaml(config).get("run_dir")
        if isinstance(run_dir, str) and os.path.normpath(Path(run_dir) / "tokenizer") == os.path.normpath(path):
            raise MagvitError(f"tokenizer {path} does not exist yet: make it with `magvit train-tokenizer "
                              f"configs/tokenizer/{config.name}` (or set tokenizer=DIR to a tokenizer folder)")
    raise MagvitError(f"tokenizer {path} does not exist: train one with `magvit train-tokenizer CONFIG` (it writes "
                      "<run_dir>/tokenizer; recipes in configs/tokenizer/) and set tokenizer=<run_dir>/tokenizer")


def build_datasets(cfg: TokenConfig) -> tuple[Dataset, Dataset]:
    """The training set of a `train_transformer` config and its held-out set (`val_data`, else the held-out
    version of `data`)."""
    from magvit.data import build_dataset
    from magvit.training.common import held_out_version

    if cfg.tokenizer is None or cfg.data is None:
        raise MagvitError("tokenizing on the fly needs `tokenizer` (a tokenizer folder) and `data`")
    return build_dataset(cfg.data), build_dataset(cfg.val_data or held_out_version(cfg.data))


def repeats(dataset: Dataset) -> bool:
    """Whether the samples of `dataset` repeat across epochs (a fixed set, or one with `variants`)."""
    key = getattr(dataset, "sample_key", None)
    return key is not None and key(0) is not None


def _on_the_fly_source(cfg: TokenConfig, device: str | torch.device,
                       datasets: tuple[Dataset, Dataset] | None = None, memo: bool = True) -> TokenSource:
    from magvit.tokenizers import Tokenizer

    train, val = datasets if datasets is not None else build_datasets(cfg)
    tokenizer = Tokenizer.from_pretrained(cfg.tokenizer).eval().requires_grad_(False).to(device)
    clip = tuple(train[0]["video"].shape[1:])  # (T, H, W)
    grid = tokenizer.token_shape(*clip)  # a clip that cannot tile fails here, with one line
    num_classes, names = dataset_classes(train)
    if memo and repeats(train):  # each distinct sample's tokens computed once (TokenSource.memo)
        train = Indexed(train)
    return TokenSource(tokenizer=tokenizer, tokenizer_dir=Path(cfg.tokenizer), train=train, val=val,
                       tasks=build_tasks(cfg.tasks), task_options=cfg.task_options, flags={}, grid=grid,
                       clip=clip, num_classes=num_classes, class_names=names, device=device,
                       rule=cfg.condition_rule)


def _cached_source(cfg: TokenConfig, device: str | torch.device) -> TokenSource:
    from magvit.tokenizers import Tokenizer

    directory = Path(cfg.tokens)
    index = read_index(directory)
    if index.condition_rule != cfg.condition_rule:
        raise MagvitError(f"{directory}: the conditions were extracted with condition_rule={index.condition_rule}, the "
                          f"config sets {cfg.condition_rule}; extract tokens again")
    for task in cfg.tasks:
        used, wanted = index.task_options.get(task, NO_OPTIONS), cfg.task_options.get(task, NO_OPTIONS)
        if task in index.tasks and used != wanted:
            raise MagvitError(f"{directory}: task '{task}' was extracted with options {used.given()}, the config "
                              f"sets {wanted.given()}; extract tokens again")
    names = tuple(cfg.tasks)
    tokenizer_dir = directory / index.tokenizer
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir).eval().requires_grad_(False).to(device)
    return TokenSource(tokenizer=tokenizer, tokenizer_dir=tokenizer_dir, train=TokenCache(directory, "train", names),
                       val=TokenCache(directory, "val", names), tasks={}, task_options=cfg.task_options,
                       flags={t: dict(index.tasks[t]) for t in names}, grid=index.grid, clip=index.clip,
                       num_classes=index.num_classes, class_names=index.class_names, device=device,
                       rule=cfg.condition_rule)


# ---------------------------------------------------------------------------------------------
# Writing


def extract_tokens(cfg: TokenConfig, directory: str | Path | None = None, batch_size: int = 16,
                   shard_size: int = 1024, device: str | torch.device = "cpu", quiet: bool = False, dtype: str = "fp32",
                   compile: bool = False, overwrite: bool = False) -> Path:
    """Tokenize `cfg.data` (split "train") and its held-out version ("val") with `cfg.tokenizer`, plus
    every task's condition, into `directory` (default `cfg.tokens`; a cache already there is replaced
    only with `overwrite`, once the new one is complete). `dtype` and `compile` are the
    tokenizer's precision and torch.compile (magvit.runtime; the quantizer stays fp32). Run by
    `accelerate launch`, the processes share the work (see the module's docstring)."""
    from accelerate import PartialState

    from magvit.runtime import autocast, compile_tokenizer

    target = directory if directory is not None else cfg.tokens
    if target is None:
        raise MagvitError("set the cache folder: tokens=DIR (or --out DIR)")
    directory = Path(target)
    if (directory / "index.json").is_file():
        if not overwrite:  # replaced only when the new cache is complete (tmp, then a rename)
            raise MagvitError(f"{directory} already holds a token cache: pass --overwrite (overwrite=True) to "
                              "replace it, or choose another folder")
    elif directory.exists() and any(directory.iterdir()):  # not a cache: never removed, even with --overwrite
        raise MagvitError(f"{directory} exists, is not empty and is not a token cache; choose another folder")
    if shard_size < 1 or batch_size < 1:
        raise MagvitError(f"--shard-size and --batch-size must be >= 1, got {shard_size} and {batch_size}")
    if cfg.tokenizer is not None:
        check_tokenizer(cfg.tokenizer)  # before the datasets are built
    state = PartialState(cpu=not torch.cuda.is_available())  # without CUDA, processes talk through gloo
    if state.num_processes > 1 and torch.device(device).type == "cuda":
        device = state.device  # each process its own GPU
    source = _on_the_fly_source(cfg, device, _scan_once(cfg, state), memo=False)  # each sample is read once
    if compile:
        compile_tokenizer(source.tokenizer)
    tmp = directory.with_name(directory.name + ".tmp")
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        source.tokenizer.save_pretrained(tmp / "tokenizer")
    state.wait_for_everyone()

    splits: dict[str, Any] = {}
    train = source.train if getattr(source.train, "variants", None) is None else Variants(source.train)
    for split, dataset in (("train", train), ("val", source.val)):
        starts = range(0, len(dataset), shard_size)  # shard j: samples [j S, (j + 1) S)
        mine = list(enumerate(starts))[state.process_index :: state.num_processes]
        count = sum(min(shard_size, len(dataset) - start) for _, start in mine)
        with tqdm(total=count, desc=f"extract-tokens {split}", disable=quiet or not state.is_main_process,
                  dynamic_ncols=True) as bar, autocast(device, dtype):
            for j, start in mine:
                part = Subset(dataset, range(start, min(start + shard_size, len(dataset))))
                _write_shard(source, part, batch_size, tmp / _shard_name(split, j), bar)
        splits[split] = {"count": len(dataset), "shards": [_shard_name(split, j) for j in range(len(starts))]}
    state.wait_for_everyone()

    if state.is_main_process:  # process 0 encoded shard 0 of each split: it has seen every task's flags
        index = TokenIndex(
            grid=tuple(source.grid), clip=tuple(source.clip), codebook_size=source.codebook_size,
            num_classes=source.num_classes, class_names=source.class_names,
            tasks={t: source.flags[t] for t in source.tasks},
            task_options=dict(cfg.task_options), condition_rule=source.rule,
            splits=splits, data=to_dict(cfg.data), tokenizer="tokenizer", dtype=dtype,
        )
        (tmp / "index.json").write_text(json.dumps(index.to_json(), indent=1) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)
    state.wait_for_everyone()
    return directory


def _scan_once(cfg: TokenConfig, state: PartialState) -> tuple[Dataset, Dataset]:
    """The datasets, built on process 0 only and sent to the others (pickled): a folder dataset's scan
    opens every file, which W processes need not repeat. An error there reaches every process as
    the same one line (no process is left waiting for the others)."""
    if state.num_processes == 1:
        return build_datasets(cfg)
    from accelerate.utils import broadcast_object_list

    payload: list[Any] = [None]
    if state.is_main_process:
        try:
            payload = [build_datasets(cfg)]
        except MagvitError as e:
            payload = [e]
    broadcast_object_list(payload)
    if isinstance(payload[0], MagvitError):
        raise payload[0]
    return payload[0]


def _shard_name(split: str, j: int) -> str:
    return f"{split}-{j:05d}.safetensors"


def _write_shard(source: TokenSource, part: Dataset, batch_size: int, path: Path, bar: tqdm) -> None:
    """Tokens, labels and every task's condition of the samples of `part`, as one safetensors file."""
    from magvit.data import build_dataloader

    rows: list[dict[str, Tensor]] = []
    for batch in build_dataloader(part, batch_size, shuffle=False, drop_last=False):
        row: dict[str, Tensor] = {}
        for task in source.tasks:
            tokens, labels, cond = source.batch(batch, task)
            row[f"cond.{task}"] = cond.tokens.to(torch.int32).cpu()
            row[f"mask.{task}"] = cond.latent_mask.to(torch.uint8).cpu()
        row["tokens"], row["label"] = tokens.to(torch.int32).cpu(), labels.cpu()
        rows.append(row)
        bar.update(len(tokens))
    save_file({k: torch.cat([r[k] for r in rows]).contiguous() for k in rows[0]}, str(path))
