"""Colocated mode (rollout.colocate) on CPU: the real trainer with real Ray actors. On CPU the engines
have no device memory to free, but the placement (each rollout actor in its learner rank's bundle),
the sync path and the per-step sleep → train → wake → sync order are the ones a GPU run takes."""

from __future__ import annotations

import math

import pytest
import ray

from rlpp.config.loader import load_config
from rlpp.metrics import read_metrics


@pytest.mark.slow
def test_colocated_run_shares_bundles_and_trains(ray_local, tmp_path, small_run):
    from rlpp.trainer import Trainer

    cfg = load_config("configs/tiny.yaml", [*small_run, "rollout.colocate=true", f"trainer.output_dir={tmp_path}",
                                            "trainer.steps=3", "trainer.eval_every=0", "learner.lr=1e-3",
                                            "rollout.cpus_per_actor=0.5", "learner.cpus_per_actor=0.5"])
    trainer = Trainer(cfg)
    try:
        where = lambda actor: ray.get(actor.__ray_call__.remote(
            lambda self: (ray.get_runtime_context().get_placement_group_id(), ray.get_runtime_context().get_node_id())))
        rollout_pg, learner_pg = where(trainer.rollouts.actors[0]), where(trainer.learners.actors[0])
        assert rollout_pg == learner_pg and rollout_pg[0] is not None  # one placement group, one node
        table = ray.util.placement_group_table(trainer.learners.pg)
        assert table["name"] == "rlpp-colocated" and len(table["bundles"]) == 1
        summary = trainer.fit()
    finally:
        trainer.close()
    assert summary["steps"] == 3
    steps = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "rollout/pass_rate" in r]
    assert len(steps) == 3
    for r in steps:
        assert r["time/sleep"] >= 0 and r["time/sync"] > 0 and r["buffer/in_flight"] == 0
        if "train/loss" in r:
            assert math.isfinite(r["train/loss"])
