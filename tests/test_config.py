"""The strict config loader: every shipped YAML loads; every kind of mistake is one clear line."""

import dataclasses
from pathlib import Path

import pytest

from magvit.config import CONFIG_KINDS, load_as, parse_overrides, save_config, to_dict
from magvit.errors import ConfigError
from magvit.kinds import load_config

# every shipped magvit config (configs/accelerate/ holds accelerate's own launch configs, not ours)
CONFIGS = sorted(p for p in Path(__file__).parents[1].joinpath("configs").rglob("*.yaml")
                 if p.parent.name != "accelerate")


def test_every_config_kind_has_a_shipped_example_that_loads_as_its_kind():
    """A user learns a kind from a shipped file: each kind has one, and `kind:` picks its dataclass."""
    import yaml

    seen = {}
    for path in CONFIGS:
        kind = yaml.safe_load(path.read_text())["kind"]
        seen.setdefault(kind, type(load_config(path)))
    assert sorted(seen) == sorted(CONFIG_KINDS.names())
    assert all(cls is CONFIG_KINDS[kind].config for kind, cls in seen.items())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kind = "other"
    saved = save_config(cfg, tmp_path)
    assert load_config(saved) == cfg


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


GOOD = "kind: data\ndataset:\n  name: moving_digits\n  frames: 8\n"


@pytest.mark.parametrize(
    "text, overrides, key, words",
    [
        (GOOD, ["bogus.key=1"], "bogus.key", "unknown key"),
        (GOOD, ["dataset.bogus=1"], "dataset.bogus", "unknown key"),
        (GOOD + "  colour: red\n", [], "dataset.colour", "unknown key"),
        (GOOD, ["dataset.frames=abc"], "dataset.frames", "integer"),
        (GOOD, ["dataset.frames=true"], "dataset.frames", "integer"),
        (GOOD, ["dataset.size=1.5"], "dataset.size", "integer"),
        (GOOD, ["dataset.split=dev"], "dataset.split", "one of"),
        (GOOD, ["dataset.speed=[1]"], "dataset.speed", "2 items"),
        (GOOD, ["dataset.name=nope"], "dataset.name", "unknown dataset"),
        ("kind: data\n", [], "dataset", "missing required key"),
        ("dataset: {name: moving_digits}\n", [], "kind", "missing required key"),
        ("kind: nope\n", [], "kind", "unknown config kind"),
        (GOOD, ["dataset.frames.x=1"], "dataset.frames.x", "not a section"),
    ],
)
def test_mistakes_name_the_key_and_the_file(tmp_path, text, overrides, key, words):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and f"'{key}'" in message and words in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "kind: [data\n"))
    with pytest.raises(ConfigError, match="key=value"):
        load_config(_write(tmp_path, GOOD), ["frames"])


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD), ["dataset.frames=4", "dataset.speed=[0.5, 2]"])
    assert cfg.dataset.frames == 4 and cfg.dataset.speed == (0.5, 2.0)
    assert isinstance(cfg.dataset.speed[0], float)
    assert parse_overrides(["a.b=null", "c=x=y"]) == {"a.b": None, "c": "x=y"}


def test_switching_the_registered_name_switches_the_schema(tmp_path):
    cfg = load_config(_write(tmp_path, "kind: data\ndataset: {name: bundled_clips, hop: 4}\n"))
    assert type(cfg.dataset).__name__ == "BundledClipsConfig" and cfg.dataset.hop == 4
    with pytest.raises(ConfigError, match="'dataset.hop'"):
        load_config(_write(tmp_path, "kind: data\ndataset: {name: moving_digits, hop: 4}\n"))


def test_to_dict_is_plain_data(tmp_path):
    plain = to_dict(load_config(_write(tmp_path, GOOD)))
    assert plain["dataset"]["name"] == "moving_digits" and isinstance(plain["dataset"]["speed"], list)
    assert set(plain) == {"kind", "dataset"} and "data" in CONFIG_KINDS


def test_load_as_needs_no_kinds_table(tmp_path):
    data_config = CONFIG_KINDS["data"].config
    assert load_as(data_config, _write(tmp_path, GOOD), ["dataset.frames=3"]).dataset.frames == 3
    with pytest.raises(ConfigError, match="takes a 'data' config, got 'sample'"):
        load_as(data_config, _write(tmp_path, "kind: sample\ncheckpoint: x\n"))


def test_resolve_names_how_to_give_a_missing_required_key(tmp_path):
    """A required key given nowhere (no YAML, or a YAML without it, and no flag or override) is one line
    saying how to give it: its flag for an `option` field, `key=...` otherwise, or the caller's words."""
    from magvit.bench.configs import BenchDecodeConfig
    from magvit.config import resolve
    from magvit.sampling import SampleConfig

    with pytest.raises(ConfigError, match=r"^command line: no grid: pass --grid T,H,W \(or grid=\.\.\.\)$"):
        resolve(BenchDecodeConfig)
    path = _write(tmp_path, "kind: sample\nnum: 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml: no checkpoint: pass --checkpoint DIR$"):
        resolve(SampleConfig, path, how={"checkpoint": "--checkpoint DIR"})
    assert resolve(SampleConfig, path, {"checkpoint": "digits-video"}).num == 2
    assert resolve(BenchDecodeConfig, None, None, {"grid": (1, 4, 4), "steps": None}).steps == 12  # None: not given


def test_a_key_of_a_section_given_at_the_top_points_to_its_section(tmp_path):
    """`magvit generate cg.yaml steps=4`: steps is a key of the decode section; the line names it."""
    path = _write(tmp_path, "kind: sample\ncheckpoint: digits-video\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["steps=4"])
    assert "key 'steps': unknown key" in str(info.value) and "did you mean 'decode.steps'?" in str(info.value)
