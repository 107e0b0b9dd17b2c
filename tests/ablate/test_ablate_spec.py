"""The ablation spec: loading, command-line overrides, and errors that name the key before anything runs."""

from __future__ import annotations

import pytest
import yaml

from ablate_helpers import spec_text

from rlpp.ablate.spec import SpecError, format_value, load_spec, resolve_configs, steps_for

SPEC = """
base: configs/tiny.yaml
budget_rollouts: 1024
seeds: [0, 1]
output_dir: {out}
overrides: {{trainer: {{eval_every: 5}}, data.synthetic.num_train: 200}}
arms:
  prioritized: {{buffer.sampler: prioritized}}
  uniform: {{buffer: {{sampler: uniform}}}}
  big_groups: {{buffer.sampler: prioritized, rollout.group_size: 16, buffer.retest.every_steps: 2}}
"""


def write(tmp_path, text=None, **replace):
    data = yaml.safe_load(SPEC.format(out=tmp_path / "out"))
    data.update(replace)
    for k in [k for k, v in replace.items() if v is None]:
        del data[k]
    path = tmp_path / "spec.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data))
    return path


def test_load_flattens_and_resolves_every_run(tmp_path):
    spec = load_spec(write(tmp_path))
    assert spec.arms["uniform"] == {"buffer.sampler": "uniform"}
    assert spec.overrides == {"trainer.eval_every": 5, "data.synthetic.num_train": 200}
    assert spec.parallel == 1 and spec.reference == "uniform"
    runs = resolve_configs(spec)
    assert set(runs) == {(a, s) for a in spec.arms for s in (0, 1)}
    cfg, overrides = runs["big_groups", 1]
    assert cfg.seed == 1 and cfg.rollout.group_size == 16 and cfg.buffer.retest.every_steps == 2
    assert cfg.trainer.max_rollouts == 1024 and cfg.trainer.eval_every == 5 and not cfg.log.progress_bar
    assert cfg.trainer.output_dir == str(tmp_path / "out" / "big_groups" / "seed_1")
    assert cfg.trainer.steps == steps_for(1024, 16, 16) == 8  # an upper bound; max_rollouts ends the run
    assert runs["uniform", 0][0].buffer.sampler == "uniform"


def test_cli_overrides_spec_keys_common_training_keys_and_arms(tmp_path):
    spec = load_spec(write(tmp_path), ["budget_rollouts=2048", "seeds=[3]", "parallel=2",
                                       "train.learner.lr=0.001", "arms.uniform.rollout.temperature=0.7",
                                       "arms.new.buffer.sampler=per"])
    assert spec.budget_rollouts == 2048 and spec.seeds == [3] and spec.parallel == 2
    assert spec.overrides["learner.lr"] == 0.001 and spec.overrides["trainer.eval_every"] == 5
    assert spec.arms["uniform"] == {"buffer.sampler": "uniform", "rollout.temperature": 0.7}
    assert spec.arms["new"] == {"buffer.sampler": "per"}
    cfg = resolve_configs(spec)["uniform", 3][0]
    assert cfg.learner.lr == 0.001 and cfg.rollout.temperature == 0.7


def test_arm_settings_win_over_common_overrides(tmp_path):
    spec = load_spec(write(tmp_path), ["train.buffer.sampler=per"])
    runs = resolve_configs(spec)
    assert runs["uniform", 0][0].buffer.sampler == "uniform"


@pytest.mark.parametrize("value", ["uniform", 3, 1e-3, True, [0, 1], "a: b", "{prompt}\nx", "", "1e-3"])
def test_format_value_round_trips_through_yaml(value):
    assert yaml.safe_load(format_value(value)) == value if value != "" else format_value(value) in ("''", '""')


def test_resolved_spec_round_trips(tmp_path):
    spec = load_spec(write(tmp_path))
    again = yaml.safe_load(spec.to_yaml())
    assert again["arms"] == spec.arms and again["budget_rollouts"] == 1024


@pytest.mark.parametrize("kwargs,cli,message", [
    ({"budget": 5}, [], "budget: unknown key"),
    ({}, ["budgett=5"], "budgett: unknown key"),
    ({}, ["train=5"], "train: unknown key"),
    ({"base": None}, [], "base: required"),
    ({"base": "configs/nope.yaml"}, [], "base: training config 'configs/nope.yaml' not found"),
    ({"budget_rollouts": None}, [], "budget_rollouts: required"),
    ({"budget_rollouts": 0}, [], "budget_rollouts: required, an integer >= 1"),
    ({"seeds": [0, 0]}, [], "seeds: must be a non-empty list of distinct integers"),
    ({"seeds": []}, [], "seeds: must be a non-empty list"),
    ({"parallel": 0}, [], "parallel: must be an integer >= 1"),
    ({"arms": {}}, [], "arms: required"),
    ({"arms": {"a b": {}}}, [], "arms.a b: an arm name"),
    ({"arms": {"x": "uniform"}}, [], "arms.x: must be a mapping of training keys"),
    ({"arms": {"x": {"trainer.steps": 5}}}, [], "arms.x.trainer.steps: set by rlpp ablate"),
    ({"overrides": {"seed": 3}}, [], "overrides.seed: set by rlpp ablate"),
    ({}, ["arms.uniform=5"], "give an arm's training key"),
])
def test_spec_errors_name_the_key(tmp_path, kwargs, cli, message):
    with pytest.raises(SpecError, match=None) as e:
        spec = load_spec(write(tmp_path, **kwargs), cli)
        resolve_configs(spec)
    assert message in str(e.value)


@pytest.mark.parametrize("arm,message", [
    ({"buffer.samplr": "uniform"}, "buffer.samplr: unknown key"),
    ({"buffer.sampler": "nope"}, "buffer.sampler must be one of"),
    ({"buffer": {"retest": {"every_steps": 0}}}, "buffer.retest.every_steps must be >= 1"),
])
def test_bad_arm_override_fails_before_anything_runs(tmp_path, arm, message):
    spec = load_spec(write(tmp_path, arms={"uniform": {"buffer.sampler": "uniform"}, "broken": arm}))
    with pytest.raises(SpecError) as e:
        resolve_configs(spec)
    assert "arms.broken" in str(e.value) and message in str(e.value)
    assert not (tmp_path / "out").exists()


def test_missing_spec_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="ablation file not found"):
        load_spec(tmp_path / "none.yaml")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(write(tmp_path, text="arms: [unclosed"))
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(write(tmp_path, text="- 1\n"))


def test_cli_errors_exit_2_with_the_key(tmp_path, capsys):
    from rlpp.cli import main

    assert main(["ablate", str(write(tmp_path)), "arms.uniform.buffer.samplr=x"]) == 2
    assert "buffer.samplr: unknown key" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no ablation.yaml" in capsys.readouterr().err


def test_targets_default_and_can_be_set_per_ablation(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform"}))
    assert load_spec(path).targets == {"rollouts": 0.6, "zero_var": 0.4, "abs_adv": 1.3}
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform"}, extra="targets: {rollouts: 0.7, zero_var: 0.5}\n"))
    assert load_spec(path).targets == {"rollouts": 0.7, "zero_var": 0.5, "abs_adv": 1.3}
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform"}, extra="targets: {speed: 2}\n"))
    with pytest.raises(SpecError, match="targets: a mapping of"):
        load_spec(path)


def test_arm_seeds_give_some_arms_more_seeds(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform", "thompson": "thompson"}, seeds=(0, 1),
                              extra="arm_seeds: {uniform: [0, 1, 2]}\n"))
    spec = load_spec(path)
    assert spec.seeds_of("uniform") == [0, 1, 2] and spec.seeds_of("thompson") == [0, 1]
    assert sorted(resolve_configs(spec)) == [("thompson", 0), ("thompson", 1), ("uniform", 0), ("uniform", 1),
                                             ("uniform", 2)]
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform"}, extra="arm_seeds: {nope: [0]}\n"))
    with pytest.raises(SpecError, match="arm_seeds.nope: no such arm"):
        load_spec(path)
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform"}, extra="arm_seeds: {uniform: [1, 1]}\n"))
    with pytest.raises(SpecError, match="arm_seeds.uniform: must be a non-empty list of distinct"):
        load_spec(path)
