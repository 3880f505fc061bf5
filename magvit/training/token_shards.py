"""A token cache as streaming shards (`magvit data shard TOKENS_DIR --out DIR`): each sample's tokens,
conditions and masks one `.safetensors` member, its label `.cls`, written by magvit.data.shards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from magvit.data.shard_io import Members
from magvit.errors import MagvitError
from magvit.training.token_cache import read_index


def token_samples(directory: Path, split: str) -> tuple[Iterator[tuple[str, Members]], int, dict[str, Any]]:
    """The samples of one split of a token cache (one cache file in memory at a time), their count, and
    the index.json entries that describe them."""
    from safetensors.torch import load_file, save

    index = read_index(directory)
    if split not in index.splits:
        raise MagvitError(f"{directory}: the token cache has no '{split}' split (it has {', '.join(index.splits)})")

    def samples() -> Iterator[tuple[str, Members]]:
        i = 0
        for name in index.splits[split]["shards"]:
            part = load_file(str(directory / name))
            for row in range(len(part["tokens"])):
                members = {"safetensors": save({k: v[row].clone() for k, v in part.items() if k != "label"})}
                if int(part["label"][row]) >= 0:
                    members["cls"] = str(int(part["label"][row])).encode()
                members["json"] = json.dumps({"index": i, "source": f"{directory}:{split}"}).encode()
                yield f"{i:09d}", members
                i += 1

    described = {"kind": "tokens", "encode": "tokens", "clip": list(index.clip), "grid": list(index.grid),
                 "num_classes": index.num_classes, "class_names": index.class_names,
                 "source": {"tokens": str(directory), "split": split, "index": index.to_json()}}
    return samples(), int(index.splits[split]["count"]), described


def shard_token_cache(directory: str | Path, out: str | Path, samples_per_shard: int = 256, overwrite: bool = False,
                      split: str = "train", quiet: bool = True) -> Path:
    """One split of a token cache as shards the `shards` dataset streams: tokens, conditions and masks
    of each sample as one `.safetensors` member, its label in `.cls`."""
    from magvit.data.shards import write_samples

    directory = Path(directory).expanduser()
    samples, total, described = token_samples(directory, split)
    return write_samples(lambda: samples, total, described, out, samples_per_shard, overwrite, [directory], quiet)
