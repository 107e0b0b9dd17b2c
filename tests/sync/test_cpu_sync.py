"""Weight sync on CPU: after a learner step, the rollout engines generate what the learner's model
generates (greedy), through the Ray object store."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from rlpp.config.loader import load_config
from rlpp.data.problems import ProblemSet
from rlpp.distributed.groups import LearnerGroup, RolloutGroup
from rlpp.models.tiny import load_model
from rlpp.rollout.engine import Sampling
from rlpp.rollout.hf_engine import HFEngine



def problems():
    prompts = ["12+7=", "3*4=", "45-9=", "7+7="]
    return {"train": ProblemSet(prompts, ["19", "12", "36", "14"], source="test")}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is None, reason="vllm not installed"))])
def test_rollout_matches_learner_after_sync(ray_local, tiny_model_dir, tmp_path, engine, grpo_batch):
    cfg = load_config(None, [f"rollout.engine={engine}", "rollout.cpus_per_actor=0.5", "rollout.torch_threads=1",
                             "learner.cpus_per_actor=0.5", "learner.torch_threads=1", "learner.lr=0.05",
                             "reward.name=exact_match", f"trainer.output_dir={tmp_path}"])
    learners = LearnerGroup(cfg, tiny_model_dir)
    rollouts = RolloutGroup(cfg, tiny_model_dir, problems(), seed=0)
    try:
        greedy = Sampling(1, 0.0, 1.0, 6)
        ids = np.arange(4)

        def rollout_ids():
            return [g[0].token_ids for g in rollouts.generate("train", ids, greedy).completions]

        def learner_ids(weights):
            engine = HFEngine(model=load_model(tiny_model_dir), seed=None)
            engine.load_weights(weights.items())  # tied lm_head arrives once, as the embeddings
            result = engine.generate(ray.get(rollouts.actors[0]._prompts.remote("train", ids)), greedy)
            return [g[0].token_ids for g in result]

        before = rollout_ids()
        for _ in range(3):
            learners.train(grpo_batch())
        weights_ref = learners.weights()
        rollouts.load_weights(weights_ref)
        after = rollout_ids()
        assert after == learner_ids(ray.get(weights_ref))
        assert after != before  # the sync really changed what the engine generates
        if engine == "hf":  # an actor added mid-run (rlpp scale) serves the current weights, not the initial
            new = rollouts.resize(2, weights=learners.weights)
            assert len(new) == 1 and len(rollouts.actors) == 2
            assert rollout_ids() == after  # half the problems now go to the new actor
            rollouts.resize(1)
            assert len(rollouts.actors) == 1
    finally:
        rollouts.shutdown()
        learners.shutdown()
