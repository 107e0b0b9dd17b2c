"""Config loading: YAML + overrides merge into frozen dataclasses; every error names its key path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rlpp.config.loader import load_config, to_yaml
from rlpp.config.schema import BufferConfig, Config, ConfigError, RetestConfig, validate

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.yaml"))
ABLATIONS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "ablate").glob("*.yaml"))


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
def test_shipped_configs_load(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert isinstance(load_config(path), Config)


@pytest.mark.parametrize("path", ABLATIONS)
def test_shipped_ablations_resolve_to_valid_training_configs(path, monkeypatch):
    """Every arm x seed of every shipped ablation file is a valid training config (what `rlpp ablate` checks
    before it starts anything)."""
    from rlpp.ablate.spec import load_spec, resolve_configs

    monkeypatch.chdir(ROOT)
    runs = resolve_configs(load_spec(path))
    assert runs and all(isinstance(cfg, Config) for cfg, _ in runs.values())


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
        ("buffer.sampler=per buffer.per.alpha=2", "buffer.per.alpha must be in [0.0, 1.0]"),
        ("buffer.retest.mode=sometimes", "buffer.retest.mode must be one of"),
        ("buffer.sampler=dapo_filter buffer.dapo_filter.oversample=0.5", "buffer.dapo_filter.oversample must be >= 1.0"),
        ("buffer.nope=1", "buffer.nope"),
        ("nope=1", "nope: unknown key; known keys: ['algo', 'buffer', 'data'"),
        ("buffer.retest.every_steps=abc", "buffer.retest.every_steps: Value 'abc'"),
        ("buffer.retest=3", "buffer.retest is a group of settings"),
        ("novalue", "must look like key=value"),
    ],
)
def test_bad_values_name_the_full_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, override.split(" "))
    assert message in str(e.value)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["seed=-1", "buffer.retest.per_round=0", "buffer.sampler=per", "buffer.per.beta=-1"])
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


@pytest.mark.parametrize("overrides, message", [
    (["rollout.colocate=true", "rollout.engine=vllm", "learner.gpus_per_actor=1", "learner.zero_stage=1",
      "rollout.weight_sync=nccl"], "rollout.weight_sync nccl cannot serve rollout.colocate=true"),
    (["rollout.colocate=true", "rollout.num_actors=2"], "rollout.num_actors must equal learner.num_actors (1)"),
    (["rollout.colocate=true", "rollout.gpus_per_actor=1"], "rollout.gpus_per_actor must be 0 with rollout.colocate=true"),
    (["rollout.colocate=true", "learner.gpus_per_actor=2"], "learner.gpus_per_actor must be 0 or 1"),
    (["rollout.colocate=true", "rollout.engine=vllm", "rollout.vllm.tensor_parallel_size=2"],
     "rollout.vllm.tensor_parallel_size must be 1 with rollout.colocate=true"),
    (["rollout.weight_sync=ipc", "rollout.engine=vllm", "learner.gpus_per_actor=1", "learner.zero_stage=1"],
     "rollout.weight_sync ipc needs rollout.colocate=true"),
    (["rollout.engine=vllm", "learner.gpus_per_actor=0.5", "rollout.gpus_per_actor=1"],
     "learner.gpus_per_actor must be a whole number of GPUs unless rollout.colocate=true, got 0.5"),
    # Not only NCCL's problem: two vLLM engines (or an engine and a learner) would share a GPU unmanaged.
    (["rollout.engine=vllm", "rollout.weight_sync=object_store", "rollout.gpus_per_actor=0.5"],
     "rollout.gpus_per_actor must be a whole number of GPUs unless rollout.colocate=true, got 0.5"),
    (["rollout.engine=vllm", "learner.gpus_per_actor=1.5", "learner.zero_stage=1", "rollout.weight_sync=object_store"],
     "learner.gpus_per_actor must be a whole number of GPUs unless rollout.colocate=true, got 1.5"),
    # vLLM's share is fixed before the learner starts beside it: the config file's 0.85 leaves it no room.
    (["rollout.colocate=true", "rollout.engine=vllm", "learner.gpus_per_actor=1", "learner.zero_stage=2",
      "rollout.vllm.gpu_memory_utilization=0.85"],
     "rollout.vllm.gpu_memory_utilization must be <= 0.5 with rollout.colocate=true on a GPU"),
    (["rollout.sync_timeout_s=0"], "rollout.sync_timeout_s must be in (0.0, 86400.0]"),
    (["data.answer_from=last"], "data.answer_from must be one of ['field', 'boxed']"),
    (["trainer.fill=signal", "buffer.sampler=dapo_filter"], "trainer.fill must be off with buffer.sampler=dapo_filter"),
    (["trainer.fill=always"], "trainer.fill must be one of ['off', 'signal', 'screen']"),
    (["trainer.fill=screen", "trainer.screen_rollouts=8"], "trainer.screen_rollouts must be below rollout.group_size (8)"),
    (["trainer.mode=pipelined", "trainer.fill=screen"], "trainer.mode pipelined draws one batch per step ahead"),
    (["trainer.mode=pipelined", "buffer.sampler=oracle"], "trainer.mode buffer.sampler=oracle measures the pool between steps"),
    (["buffer.prior.mode=cluster"], "buffer.prior.mode cluster is read by thompson, mopps, skip, greso"),
    (["buffer.sampler=greso", "buffer.greso.hard_threshold=0.99"], "buffer.greso.hard_threshold must be below easy_threshold"),
    (["buffer.sampler=mopps", "buffer.mopps.candidates=1"], "buffer.mopps.candidates must be >= 2"),
    (["trainer.mode=pipelined", "rollout.colocate=true"], "trainer.mode pipelined needs the rollout engines awake"),
    (["trainer.mode=pipelined", "trainer.fill=signal"], "trainer.mode pipelined draws one batch per step ahead"),
    (["trainer.mode=pipelined", "rollout.engine=vllm", "learner.gpus_per_actor=1", "learner.zero_stage=1",
      "rollout.weight_sync=nccl"], "rollout.weight_sync pipelined needs object_store"),
    (["algo.tis_cap=2", "algo.old_logprobs=rollout"], "algo.tis_cap does nothing with algo.old_logprobs=rollout"),
    (["algo.tis_cap=0.5"], "algo.tis_cap must be 0 (off) or >= 1"),
    (["data.synthetic.level_weights=[1,2]"], "data.synthetic.level_weights must hold 9 numbers >= 0"),
    (["data.synthetic.level_weights=[0,0,0,0,0,0,0,0,0]"], "data.synthetic.level_weights must hold 9 numbers"),
])
def test_layouts_that_cannot_work_are_refused_naming_the_keys(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)


def test_pipelined_resolves_auto_weight_sync_to_the_object_store():
    gpu = ["rollout.engine=vllm", "learner.gpus_per_actor=1", "learner.zero_stage=1"]
    assert load_config(None, gpu).weight_sync == "nccl"
    assert load_config(None, [*gpu, "trainer.mode=pipelined"]).weight_sync == "object_store"


def test_weight_sync_auto_resolution():
    gpu = ["rollout.engine=vllm", "learner.gpus_per_actor=1", "learner.zero_stage=1"]
    assert load_config(None, []).weight_sync == "object_store"
    assert load_config(None, gpu).weight_sync == "nccl"
    assert load_config(None, [*gpu, "rollout.colocate=true"]).weight_sync == "ipc"
    assert load_config(None, ["rollout.colocate=true"]).weight_sync == "object_store"  # CPU: nothing to share


def test_colocated_gpu_memory_share_is_capped_only_where_vllm_shares_a_gpu():
    gpu = ["rollout.engine=vllm", "learner.gpus_per_actor=1", "learner.zero_stage=2"]
    load_config(None, [*gpu, "rollout.colocate=true", "rollout.vllm.gpu_memory_utilization=0.5"])
    load_config(None, [*gpu, "rollout.vllm.gpu_memory_utilization=0.9"])  # the engine has its own GPU
    load_config(None, ["rollout.engine=vllm", "rollout.colocate=true", "rollout.vllm.gpu_memory_utilization=0.9"])  # CPU
    # The shipped GPU config with the README's one-GPU overrides passes.
    load_config("configs/qwen2.5-math-1.5b.yaml", ["rollout.colocate=true", "rollout.num_actors=1",
                                                   "rollout.gpus_per_actor=0", "rollout.vllm.gpu_memory_utilization=0.5"])


def test_actors_start_with_nccl_settings_for_isolated_gpus(monkeypatch):
    from rlpp.distributed.groups import actor_env

    monkeypatch.delenv("NCCL_NVLS_ENABLE", raising=False)
    monkeypatch.setenv("NCCL_CUMEM_ENABLE", "1")  # the user's own choice wins
    env = actor_env(3)["env_vars"]
    assert env == {"OMP_NUM_THREADS": "3", "NCCL_NVLS_ENABLE": "0", "NCCL_CUMEM_ENABLE": "1"}


def test_a_newly_registered_sampler_is_selectable_by_config():
    from rlpp.buffer import SAMPLERS, PriorityBuffer, register_sampler
    from rlpp.buffer.samplers import UniformSampler

    with pytest.raises(ConfigError, match="buffer.sampler must be one of"):
        load_config(None, ["buffer.sampler=newest_first"])

    @register_sampler("newest_first")
    class NewestFirst(UniformSampler):
        pass

    try:
        cfg = load_config(None, ["buffer.sampler=newest_first"])
        assert type(PriorityBuffer(cfg.buffer, 10).sampler) is NewestFirst
    finally:
        del SAMPLERS["newest_first"]


def test_torch_threads_auto_takes_turns_in_sync_mode_and_splits_the_cpus_when_pipelined():
    sync = load_config(None, [])
    assert (sync.torch_threads("rollout"), sync.torch_threads("learner")) == (2, 2)
    piped = load_config(None, ["trainer.mode=pipelined", "learner.cpus_per_actor=3", "rollout.cpus_per_actor=0.5"])
    assert (piped.torch_threads("rollout"), piped.torch_threads("learner")) == (1, 3)
    fixed = load_config(None, ["trainer.mode=pipelined", "rollout.torch_threads=4"])
    assert fixed.torch_threads("rollout") == 4
    with pytest.raises(ConfigError, match="learner.torch_threads"):
        load_config(None, ["learner.torch_threads=-1"])


def test_only_the_chosen_samplers_settings_are_validated():
    """A config written for one sampler is not refused over another sampler's group (the review's §4.3):
    buffer.thompson is read only with buffer.sampler=thompson."""
    load_config(None, ["buffer.sampler=uniform", "buffer.thompson.discount=5"])
    with pytest.raises(ConfigError, match=r"buffer.thompson.discount must be in \(0.0, 1.0\]"):
        load_config(None, ["buffer.sampler=thompson", "buffer.thompson.discount=5"])
    with pytest.raises(ConfigError, match="buffer.prioritized.alpha"):  # prioritized reads its group in every form
        load_config(None, ["buffer.sampler=prioritized", "buffer.prioritized.selection=proportional",
                           "buffer.prioritized.alpha=9"])
    load_config(None, ["buffer.sampler=paper", "buffer.prioritized.alpha=9"])  # paper ignores that group


def test_the_advantage_estimator_is_chosen_from_its_registry():
    assert load_config(None, ["algo.advantage=rloo"]).algo.estimator == "rloo"
    assert load_config(None, ["algo.std_normalize=false"]).algo.estimator == "dr_grpo"  # the older spelling
    with pytest.raises(ConfigError, match="algo.advantage must be one of"):
        load_config(None, ["algo.advantage=ppo"])
    with pytest.raises(ConfigError, match="algo.std_normalize false only names dr_grpo"):
        load_config(None, ["algo.advantage=rloo", "algo.std_normalize=false"])
