"""A token cache on disk, read: `index.json` typed (`TokenIndex`) and a split's shards as a dataset
(`TokenCache`). The cache's layout, and how `magvit extract-tokens` writes it: magvit.training.tokens."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor
from torch.utils.data import Dataset

from magvit.config import from_dict, to_dict
from magvit.errors import MagvitError
from magvit.fileio import read_json
from magvit.tasks import RULE_BEFORE_V2, TaskOptions, check_rule

FORMAT, VERSION = "magvit-tokens", 1



@dataclass(frozen=True, kw_only=True)
class TokenIndex:
    """index.json of a token cache, typed: what training from the cache needs to know of the tokens."""

    grid: tuple[int, int, int]  # (t, h, w) of one clip's tokens
    clip: tuple[int, int, int]  # (T, H, W) of the clips they encode
    codebook_size: int
    num_classes: int = 0
    class_names: tuple[str, ...] | None = None
    tasks: Mapping[str, Mapping[str, bool]]  # task -> {"use_class", "refine"}: its condition's flags
    task_options: Mapping[str, TaskOptions] = field(default_factory=dict)  # as extracted
    condition_rule: str = RULE_BEFORE_V2  # older caches: the strict rule they were made with
    splits: Mapping[str, Mapping[str, Any]]  # split -> {"count", "shards": [file names]}
    data: Mapping[str, Any] = field(default_factory=dict)  # the data config the tokens come from
    tokenizer: str = "tokenizer"  # the tokenizer folder, relative to the cache
    dtype: str = "fp32"  # the tokenizer's precision when the tokens were extracted

    def to_json(self) -> dict[str, Any]:
        plain = {**to_dict(self), "task_options": {t: to_dict(o.given()) for t, o in self.task_options.items()}}
        return {"format": FORMAT, "version": VERSION, **plain}


def read_index(directory: str | Path) -> TokenIndex:
    """The cache's index.json, checked and typed; one clear line if the folder is not a token cache."""
    path = Path(directory) / "index.json"
    if not path.is_file():
        raise MagvitError(f"{directory}: not a token cache (no index.json); write one with `magvit extract-tokens`")
    raw = read_json(path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise MagvitError(f"{path}: not a magvit token cache of version {VERSION}")
    index = from_dict(TokenIndex, {k: v for k, v in raw.items() if k not in ("format", "version")}, str(path))
    check_rule(index.condition_rule)
    return index


class TokenCache(Dataset):
    """One split of a token cache as a dataset: {"tokens", "label", "cond.<task>", "mask.<task>"}.

    Holds the split in memory (int32 tokens: 4 bytes per token per task); `tasks` limits which
    tasks' conditions are loaded."""

    def __init__(self, directory: str | Path, split: str = "train", tasks: tuple[str, ...] | None = None):
        self.directory = Path(directory)
        self.index = read_index(directory)
        if split not in self.index.splits:
            raise MagvitError(f"{directory}: the token cache has no '{split}' split "
                              f"(it has {', '.join(self.index.splits)})")
        missing = [t for t in tasks or () if t not in self.index.tasks]
        if missing:
            raise MagvitError(f"{directory}: the token cache has no conditions for task(s) {', '.join(missing)} "
                              f"(it has {', '.join(self.index.tasks)}); extract tokens again with them")
        keep = tasks if tasks is not None else tuple(self.index.tasks)
        wanted = {"tokens", "label", *(f"cond.{t}" for t in keep), *(f"mask.{t}" for t in keep)}
        self.shards: list[dict[str, Tensor]] = []
        for name in self.index.splits[split]["shards"]:
            try:
                shard = load_file(str(self.directory / name))
            except (SafetensorError, OSError) as e:
                raise MagvitError(f"{self.directory / name}: cannot read token shard ({e})") from None
            self.shards.append({k: v for k, v in shard.items() if k in wanted})
        self.starts = [0]
        for shard in self.shards:
            self.starts.append(self.starts[-1] + len(shard["tokens"]))
        self.num_classes = self.index.num_classes

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index: int) -> dict[str, Tensor | int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        s = bisect.bisect_right(self.starts, index) - 1
        shard, i = self.shards[s], index - self.starts[s]
        out: dict[str, Tensor | int] = {"label": int(shard["label"][i])}
        for key, value in shard.items():
            if key.startswith("mask."):
                out[key] = value[i].bool()
            elif key != "label":
                out[key] = value[i].long()
        return out

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.index.grid
