"""Config loading: YAML + overrides merge into frozen dataclasses; every error names its key path."""

from __future__ import annotations

import dataclasses

import pytest

from rlpp.config.loader import load_config, to_yaml
from rlpp.config.schema import BufferConfig, Config, ConfigError, RetestConfig, validate

CONFIGS = ["configs/buffer.yaml"]


def write(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid_and_frozen():
    cfg = load_config()
    assert cfg == Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.buffer.sampler = "uniform"


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), Config)


def test_yaml_then_overrides_merge_in_order(tmp_path):
    p = write(tmp_path, "seed: 3\nbuffer:\n  sampler: per\n  retest: {every_steps: 4}\n")
    cfg = load_config(p, ["buffer.retest.every_steps=7", "buffer.per.alpha=1"])
    assert cfg.seed == 3
    assert cfg.buffer.sampler == "per"
    assert cfg.buffer.retest.every_steps == 7
    assert cfg.buffer.per.alpha == 1.0
    assert cfg.buffer.retest.per_round == RetestConfig().per_round


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["buffer.sampler=prompt_replay", "buffer.prompt_replay.window=0.2"])
    assert load_config(write(tmp_path, to_yaml(cfg))) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("buffer.retest.every_steps=0", "buffer.retest.every_steps must be >= 1, got 0"),
        ("buffer.sampler=greedy", "buffer.sampler must be one of"),
        ("buffer.decay=1.0", "buffer.decay must be in [0.0, 1.0)"),
        ("buffer.unseen_priority=0.3", "buffer.unseen_priority must be in (0.0, 0.25]"),
        ("buffer.per.alpha=2", "buffer.per.alpha must be in [0.0, 1.0]"),
        ("buffer.retest.mode=sometimes", "buffer.retest.mode must be one of"),
        ("buffer.dapo_filter.oversample=0.5", "buffer.dapo_filter.oversample must be >= 1.0"),
        ("buffer.nope=1", "buffer.nope"),
        ("nope=1", "nope: unknown key; known keys: ['algo', 'buffer', 'data'"),
        ("buffer.retest.every_steps=abc", "buffer.retest.every_steps: Value 'abc'"),
        ("buffer.retest=3", "buffer.retest is a group of settings"),
        ("novalue", "must look like key=value"),
    ],
)
def test_bad_values_name_the_full_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["seed=-1", "buffer.retest.per_round=0", "buffer.per.beta=-1"])
    msg = str(e.value)
    for key in ("seed", "buffer.retest.per_round", "buffer.per.beta"):
        assert key in msg


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = write(tmp_path, "buffer: [1, 2\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"c.yaml: buffer.typo"):
        load_config(write(tmp_path, "buffer:\n  typo: 1\n"))


def test_yaml_is_data_not_code(tmp_path):
    # A YAML tag that would construct Python objects with an unsafe loader is refused.
    p = write(tmp_path, "seed: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="buffer.retest.every_steps"):
        Config(buffer=BufferConfig(retest=RetestConfig(every_steps=0)))
    with pytest.raises(ConfigError, match="buffer.sampler"):
        validate(BufferConfig(sampler="x"), "buffer.")


def test_cross_group_check_names_both_keys():
    with pytest.raises(ConfigError, match=r"buffer.retest.per_round must not exceed trainer.batch_size \(4\)"):
        load_config(None, ["trainer.batch_size=4", "buffer.retest.per_round=8"])
