"""Config kinds: the one table from a config file's `kind:` to the frozen dataclass it loads into and
the commands that run it (each also runs from such a YAML and writes its resolved settings).

    data               DataConfig              `magvit data preview`, `magvit data shard`
    train_tokenizer    TokenizerTrainConfig    `magvit train-tokenizer`
    train_transformer  TransformerTrainConfig  `magvit train`, `magvit extract-tokens`
    sample             SampleConfig            `magvit generate | predict | interpolate | inpaint | outpaint | edit`
    quickstart         QuickstartConfig        `magvit quickstart`, `magvit run`
    study              StudyConfig             `magvit reproduce`
    bench_tokenizers   BenchTokenizersConfig   `magvit bench tokenizers`
    bench_decode       BenchDecodeConfig       `magvit bench decode`
    bench_train        BenchTrainConfig        `magvit bench train`
    bench_quality      BenchQualityConfig      `magvit bench quality`
    plot               PlotConfig              `magvit plot`
    demo               DemoConfig              `magvit demo`
    eval               EvalConfig              `magvit eval`

This module sits above every module that defines a kind (it imports them all) and below the CLI:
`load_config` here reads a YAML of any kind; a caller that knows its kind loads with
`magvit.config.load_as` and needs no table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from magvit.bench.configs import BenchDecodeConfig, BenchQualityConfig, BenchTokenizersConfig, BenchTrainConfig
from magvit.config import CONFIG_KINDS, ConfigError, load_as, read_yaml
from magvit.data import DataConfig
from magvit.demo.session import DemoConfig
from magvit.evaluation.protocols import EvalConfig
from magvit.plots import PlotConfig
from magvit.quickstart import QuickstartConfig
from magvit.reproduce.config import StudyConfig
from magvit.sampling import SampleConfig
from magvit.training.tokenizer import TokenizerTrainConfig
from magvit.training.transformer import TransformerTrainConfig

# what `load_config` returns: the config dataclass of one of the kinds below
KindConfig = (DataConfig | TokenizerTrainConfig | TransformerTrainConfig | SampleConfig | QuickstartConfig | StudyConfig
              | BenchTokenizersConfig | BenchDecodeConfig | BenchTrainConfig | BenchQualityConfig | PlotConfig
              | DemoConfig | EvalConfig)

SAMPLING = ("generate", "predict", "interpolate", "inpaint", "outpaint", "edit")

# kind -> (its config dataclass, what it is, the commands that run it)
KINDS: tuple[tuple[str, type[KindConfig], str, tuple[str, ...]], ...] = (
    ("data", DataConfig, "a dataset", ("data preview", "data shard")),
    ("train_tokenizer", TokenizerTrainConfig, "train a tokenizer", ("train-tokenizer",)),
    ("train_transformer", TransformerTrainConfig, "train a masked transformer", ("train", "extract-tokens")),
    ("sample", SampleConfig, "sampling settings", SAMPLING),
    ("quickstart", QuickstartConfig, "train a tokenizer and a transformer, then sample", ("quickstart", "run")),
    ("study", StudyConfig, "a paper's ablation: arms x seeds", ("reproduce",)),
    ("bench_tokenizers", BenchTokenizersConfig, "tokenizers side by side", ("bench tokenizers",)),
    ("bench_decode", BenchDecodeConfig, "MaskGIT decoding against autoregressive", ("bench decode",)),
    ("bench_train", BenchTrainConfig, "training throughput and memory", ("bench train",)),
    ("bench_quality", BenchQualityConfig, "generation quality on moving digits", ("bench quality",)),
    ("plot", PlotConfig, "a run's curves", ("plot",)),
    ("demo", DemoConfig, "the web demo", ("demo",)),
    ("eval", EvalConfig, "a paper's evaluation protocol", ("eval",)),
)
for _name, _cls, _help, _commands in KINDS:
    CONFIG_KINDS.register(_name, _cls, help=_help)(_cls)


def load_config(path: str | Path, overrides: Sequence[str] = (), expect: str | None = None) -> KindConfig:
    """Read a YAML config of any kind, apply `key=value` overrides, validate it against its kind's
    dataclass; `expect` names the kind a command takes."""
    source = str(path)
    kind = read_yaml(path).get("kind")
    for item in overrides:  # `kind=...` on the command line picks the kind too
        if item.startswith("kind="):
            kind = item.split("=", 1)[1]
    if kind is None:
        raise ConfigError(f"{source}: key 'kind': missing required key (one of: {', '.join(CONFIG_KINDS.names())})")
    if kind not in CONFIG_KINDS:
        kinds = ", ".join(CONFIG_KINDS.names())
        raise ConfigError(f"{source}: key 'kind': unknown config kind {kind!r} (one of: {kinds})")
    if expect is not None and kind != expect:
        raise ConfigError(f"{source}: key 'kind': this command takes a '{expect}' config, got '{kind}'")
    return load_as(CONFIG_KINDS[kind].config, path, overrides)
