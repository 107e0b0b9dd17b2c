"""Shared fixtures. Ray is started once per session, on loopback only, and shut down at the end."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance with 2 CPUs bound to 127.0.0.1 (works with token auth on or off)."""
    import ray

    from rlpp.distributed.local import keep_local_ray_on_loopback

    keep_local_ray_on_loopback()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` tests where no CUDA device is present (torch is imported only if one exists)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised tiny Qwen2 model + character tokenizer saved as a model folder."""
    from rlpp.config.schema import TinyModelConfig
    from rlpp.data.synthetic import ARITHMETIC_CHARS
    from rlpp.models.tiny import build_char_tokenizer, build_tiny_model, save_model

    folder = tmp_path_factory.mktemp("tiny_model")
    tok = build_char_tokenizer(ARITHMETIC_CHARS)
    save_model(folder, build_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128), tok, seed=0), tok)
    return str(folder)


@pytest.fixture
def grpo_batch():
    """Builds a TrainBatch of ``n`` groups of "12+7=": completion "19" rewarded 1, "55" rewarded 0."""
    import torch

    from rlpp.algo.batch import make_train_batch

    def build(n_groups: int = 4):
        prompt, good, bad = [5, 6, 14, 11, 17], [5, 13, 1], [9, 9, 1]
        completions = [[(good, [-1.0] * 3), (bad, [-1.0] * 3)] for _ in range(n_groups)]
        rewards = torch.tensor([[1.0, 0.0]] * n_groups)
        batch, _ = make_train_batch([prompt] * n_groups, completions, rewards, estimator="grpo",
                                    drop_zero_variance=True, pad_id=0)
        return batch

    return build


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """Overrides shrinking configs/tiny.yaml for end-to-end tests. They share one warm-start cache, so
    the (slowest) warm start runs once per test session, not once per test."""
    cache = tmp_path_factory.mktemp("warmstart_cache")
    return ["data.synthetic.num_train=200", "data.synthetic.num_dev=100", "data.synthetic.num_eval=100",
            "model.warmstart.target_accuracy=0.1", "model.warmstart.num_problems=5000",
            "model.warmstart.max_steps=1500", f"model.warmstart.cache_dir={cache}", "trainer.batch_size=8", "buffer.retest.per_round=4",
            "log.progress_bar=false", "log.tensorboard=false"]
