"""The training loop driven by in-process fakes: no Ray, no model. The buffer is the real
``PriorityBuffer``; rollouts answer from a latent pass rate per problem that rises with each weight
sync, so the loop's bookkeeping (draws, buffer updates, rollout counts, syncs, evaluations,
checkpoints, staleness) is checked exactly, in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlpp.buffer import PriorityBuffer
from rlpp.checkpoint import CheckpointError
from rlpp.config.loader import load_config
from rlpp.distributed.control import RunControl
from rlpp.distributed.runtime import Parts
from rlpp.metrics import read_metrics
from rlpp.rollout.engine import Completion
from rlpp.rollout.worker import RolloutResult
from rlpp.trainer import Trainer

B, G = 4, 4


class FakeRollouts:
    """One 'actor' whose answers come from a latent pass rate that grows with the loaded version."""

    def __init__(self, problems: dict):
        self.problems, self.actors, self.version = problems, ["actor-0"], 0
        self.calls: list[tuple] = []  # ("generate", split, ids, version) / ("load", version), in order

    def _result(self, split, ids, sampling):
        rng = np.random.default_rng(sampling.seed or 0)
        p = np.clip(0.2 + 0.6 * (np.asarray(ids) % 5) / 5 + 0.01 * self.version, 0, 1)
        rewards = (rng.random((len(ids), sampling.n)) < p[:, None]).astype(float)
        comps = [[Completion([3, 1], [-0.5, -0.1], True) for _ in range(sampling.n)] for _ in ids]
        return RolloutResult(np.asarray(ids, dtype=np.int64), [[2, 3]] * len(ids), comps, rewards,
                             {"time/generate": 0.001, "rollout/tokens": 2.0 * len(ids) * sampling.n},
                             version=self.version)

    def generate(self, split, ids, sampling):
        return self.collect(self.submit(split, ids, sampling))

    def submit(self, split, ids, sampling):
        self.calls.append(("generate", split, tuple(int(i) for i in ids), self.version))
        return [(self._result(split, ids, sampling), np.asarray(ids))]

    def collect(self, pending, version=None):
        (result, _), = pending
        assert version is None or result.version == version
        return result

    def submit_weights(self, ref, version=None):
        self.version = self.version + 1 if version is None else version
        self.calls.append(("load", self.version))
        return []

    def wait_alive(self):
        pass

    def resize(self, n, weights=None, version=None):
        self.actors = [f"actor-{i}" for i in range(n)]


class FakeLearners:
    def __init__(self):
        self.steps, self.saved = 0, []

    def train(self, batch, seed=0):
        self.steps += 1
        assert batch.advantages.abs().sum() > 0  # zero-variance groups were dropped before the learner
        return {"train/loss": 0.1, "train/skipped": 0.0, "train/grad_norm": 1.0, "train/optimizer_steps": 1.0}

    def weights(self):
        return {"w": self.steps}

    def save(self, folder):
        self.saved.append(folder)

    def load(self, folder):
        pass


class FakeSync:
    """``WeightSync``'s interface: every sync or push is one load, applied at once."""

    restartable, cannot_resize = True, ""

    def __init__(self, rollouts, learners):
        self.rollouts, self.learners, self.calls = rollouts, learners, 0

    def sync(self, version):
        self.calls += 1
        self.rollouts.submit_weights(self.learners.weights(), version)

    def push(self, version):
        self.sync(version)  # loads apply in call order on the one fake actor, as queued ones do

    def wait_pushed(self, block=True):
        pass

    def release_memory(self):
        pass


def make_trainer(tmp_path, *overrides, sync=FakeSync):
    cfg = load_config("configs/tiny.yaml", [
        "data.synthetic.num_train=40", "data.synthetic.num_dev=10", "data.synthetic.num_eval=10",
        f"trainer.batch_size={B}", f"rollout.group_size={G}", "trainer.steps=8", "trainer.eval_every=4",
        "buffer.retest.per_round=2", "log.progress_bar=false", "log.tensorboard=false", "log.buffer_snapshots=false",
        f"trainer.output_dir={tmp_path / 'run'}", *overrides])
    from rlpp.data.loader import load_problems

    train, dev, held_out = load_problems(cfg.data)
    rollouts, learners = FakeRollouts({"train": train, "dev": dev, "eval": held_out}), FakeLearners()
    parts = Parts(buffer=PriorityBuffer(cfg.buffer, len(train), seed=cfg.seed, group_size=G,
                                       clusters=train.cluster_ids()), rollouts=rollouts, learners=learners,
                  sync_weights=sync(rollouts, learners), control=RunControl(1))
    return Trainer(cfg, parts)


def test_the_sync_loop_draws_generates_records_trains_and_syncs_in_order(tmp_path):
    with make_trainer(tmp_path) as t:
        summary = t.fit()
        rollouts, learners = t.rollouts, t.learners
        stats = t.buffer.stats()
    assert summary["steps"] == 8 and summary["rollouts"] == 8 * B * G
    assert stats["buffer/updates"] == 8 * B and stats["buffer/in_flight"] == 0
    train_calls = [c for c in rollouts.calls if c[0] == "generate" and c[1] == "train"]
    assert len(train_calls) == 8 and all(len(c[2]) == B for c in train_calls)
    # sync mode: step t's batch is generated by version t - 1, right after the previous step's sync
    assert [c[3] for c in train_calls] == list(range(8))
    assert learners.steps <= 8  # a step whose groups all had zero variance trains on nothing
    steps = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "rollout/pass_rate" in r]
    assert [r["rollouts"] for r in steps] == [B * G * (i + 1) for i in range(8)]
    assert all(0 <= r["time/learner_idle_frac"] <= 1 for r in steps)
    evals = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/accuracy" in r]
    assert evals == [0, 4, 8]
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_000008" / "trainer.json").read_text())
    assert state["step"] == 8 and state["rollouts"] == 8 * B * G


@pytest.mark.parametrize("k", [1, 2])
def test_the_pipelined_loop_keeps_k_batches_ahead_and_drains_at_checkpoints(tmp_path, k):
    with make_trainer(tmp_path, "trainer.mode=pipelined", f"trainer.max_staleness={k}", "trainer.checkpoint_every=4") as t:
        summary = t.fit()
        rollouts = t.rollouts
        stats = t.buffer.stats()
    assert summary["steps"] == 8 and stats["buffer/updates"] == 8 * B and stats["buffer/in_flight"] == 0
    steps = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "rollout/staleness" in r]
    expected = {1: [0, 1, 1, 1], 2: [0, 1, 2, 2]}[k] * 2  # the checkpoint at 4 empties the pipeline
    assert [r["rollout/staleness"] for r in steps] == expected
    assert max(r["rollout/staleness"] for r in steps) <= k
    # the run's staleness histogram: shares of the steps so far, and counts in the summary
    shares = [[r[f"rollout/staleness_share/{s}"] for s in range(k + 1)] for r in steps]
    assert shares[3] == pytest.approx([np.mean([e == s for e in expected[:4]]) for s in range(k + 1)])
    assert shares[-1] == pytest.approx([np.mean([e == s for e in expected]) for s in range(k + 1)])
    assert summary["staleness_steps"] == {str(s): expected.count(s) for s in range(k + 1)}
    # each batch was generated by exactly the version it was submitted with (the fake asserts it), and
    # no weight load ever ran in the middle of a batch: loads and batches alternate in submission order
    kinds = [c[0] for c in rollouts.calls if c[0] == "load" or c[1] == "train"]
    assert kinds.count("generate") == 8 and kinds.count("load") == 8


@pytest.mark.parametrize("k", [1, 2])
def test_the_pipelined_loop_drains_before_the_rollout_pool_is_resized(tmp_path, k):
    """``rlpp scale`` mid-pipeline: the pool goes 1 -> 2 actors at step 3 and back to 1 at step 6. Before
    each resize every batch in flight is collected and every queued weight load applied, so an actor
    about to be removed holds no work; new actors get the current weights and policy version; every
    step trains on a full draw and no problem is lost."""
    with make_trainer(tmp_path, "trainer.mode=pipelined", f"trainer.max_staleness={k}") as t:
        rollouts, plan, polls, resizes, pending = t.rollouts, {3: 2, 6: 1}, [], [], [0]
        submit, collect, resize = rollouts.submit, rollouts.collect, rollouts.resize

        def scripted_take():  # the trainer polls once per step, before drawing anything for it
            polls.append(len(polls) + 1)
            return plan.get(polls[-1])

        def counted_submit(*args):
            pending[0] += 1
            return submit(*args)

        def counted_collect(*args, **kwargs):
            pending[0] -= 1
            return collect(*args, **kwargs)

        def recorded_resize(n, weights=None, version=None):
            resizes.append((polls[-1], n, pending[0], version, callable(weights)))
            resize(n, weights, version)

        t.control.take = scripted_take
        rollouts.submit, rollouts.collect, rollouts.resize = counted_submit, counted_collect, recorded_resize
        summary = t.fit()
        stats = t.buffer.stats()
    # nothing generating at either resize; the new actors start at the version trained so far
    assert resizes == [(3, 2, 0, 2, True), (6, 1, 0, 5, True)]
    assert summary["steps"] == 8 and stats["buffer/updates"] == 8 * B
    assert stats["buffer/in_flight"] == 0 and stats["buffer/released"] == 0
    steps = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "rollout/staleness" in r]
    assert [r["rollout/actors"] for r in steps] == [1, 1, 2, 2, 2, 1, 1, 1]
    assert max(r["rollout/staleness"] for r in steps) <= k
    assert t.control.status()["rollout_actors"] == 1


def test_a_failed_batch_goes_back_to_the_buffer_and_is_redrawn_with_the_current_weights(tmp_path):
    """Pipelined, k = 2: the batch of step 3 fails once (an actor died). Its problems are released, the
    current weights are queued on the actors, and step 3 draws again, generated by the current version."""
    from rlpp.distributed.groups import RolloutFailed

    with make_trainer(tmp_path, "trainer.mode=pipelined", "trainer.max_staleness=2") as t:
        rollouts, failed = t.rollouts, []
        collect = rollouts.collect

        def flaky(pending, version=None):
            (result, ids), = pending
            if len(failed) == 0 and len([c for c in rollouts.calls if c[0] == "generate" and c[1] == "train"]) >= 3 \
                    and version == 0 and rollouts.calls.count(("load", 1)) and result.ids[0] == ids[0]:
                failed.append(ids.tolist())
                raise RolloutFailed(ids, RuntimeError("actor died"))
            return collect(pending, version)

        rollouts.collect = flaky
        summary = t.fit()
        stats = t.buffer.stats()
    assert failed, "no batch failed"
    assert summary["steps"] == 8 and stats["buffer/in_flight"] == 0
    assert stats["buffer/released"] == B and stats["buffer/updates"] == 8 * B  # the failed draw was handed back
    steps = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "rollout/staleness" in r]
    assert max(r["rollout/staleness"] for r in steps) <= 2


def test_an_evaluation_whose_actor_dies_is_generated_again_not_the_end_of_the_run(tmp_path):
    """The chaos soak's second failure: a rollout actor SIGKILLed during the step-0 evaluation stopped the
    run. Evaluations now go through the scheduler's retry: the same problems again, after the current
    weights, and the logged accuracies equal those of a run whose actor never died."""
    from rlpp.distributed.groups import RolloutFailed

    with make_trainer(tmp_path / "clean") as t:
        t.fit()
    clean = [r for r in read_metrics(tmp_path / "clean" / "run" / "metrics.jsonl") if "eval/accuracy" in r]
    with make_trainer(tmp_path / "flaky") as t:
        rollouts, failed = t.rollouts, []
        collect = rollouts.collect

        def flaky(pending, version=None):
            if len(failed) < 2 and rollouts.calls[-1][:2] == ("generate", "eval"):
                failed.append(rollouts.calls[-1])
                raise RolloutFailed(pending[0][1], RuntimeError("actor died"))
            return collect(pending, version)

        rollouts.collect = flaky
        summary = t.fit()
    assert len(failed) == 2 and summary["steps"] == 8
    again = [r for r in read_metrics(tmp_path / "flaky" / "run" / "metrics.jsonl") if "eval/accuracy" in r]
    assert [(r["step"], r["eval/accuracy"]) for r in again] == [(r["step"], r["eval/accuracy"]) for r in clean]


class FailingSync(FakeSync):
    """A blocking sync fails the first ``fails`` times: an actor died while it loaded."""

    fails = 1

    def __init__(self, rollouts, learners):
        super().__init__(rollouts, learners)
        self.waits = 0

        def wait_alive():
            self.waits += 1

        rollouts.wait_alive = wait_alive

    def sync(self, version):
        from rlpp.distributed.weight_sync import SyncFailed

        if self.fails:
            self.fails -= 1
            raise SyncFailed("the object-store weight sync failed on rollout actor 0: actor died")
        super().sync(version)


@pytest.mark.parametrize("mode", ["sync", "pipelined"])
def test_a_resume_survives_an_actor_dying_during_its_first_sync(tmp_path, mode):
    """The chaos soak's failure: a rollout actor SIGKILLed while a resumed run loaded the checkpoint's weights
    into the engines stopped the run. That sync now waits for the actor's restart and syncs again."""
    run = ["trainer.checkpoint_every=4", f"trainer.mode={mode}"]
    with make_trainer(tmp_path, *run) as t:
        t.fit()
    with make_trainer(tmp_path, *run, "trainer.resume=auto", "trainer.steps=12", sync=FailingSync) as t:
        assert t.state.step == 8 and t.rollouts.calls[-1] == ("load", 8)  # synced, after one failure
        assert t.parts.sync_weights.fails == 0 and t.parts.sync_weights.waits == 1
        summary = t.fit()
    assert summary["steps"] == 12

    class NotRestartable(FailingSync):
        restartable = False

    from rlpp.loop.scheduler import TrainingStopped

    with pytest.raises(TrainingStopped, match="weight sync failed: the object-store weight sync failed"):
        make_trainer(tmp_path, *run, "trainer.resume=auto", "trainer.steps=16", sync=NotRestartable)


def test_a_pool_too_small_for_the_pipeline_is_refused_before_anything_starts(tmp_path):
    from rlpp.config.schema import ConfigError

    with pytest.raises(ConfigError, match="trainer.max_staleness: pipelined mode holds up to 3 batches"):
        make_trainer(tmp_path, "trainer.mode=pipelined", "trainer.max_staleness=2", "data.synthetic.num_train=10")


def test_the_loop_never_touches_ray(tmp_path, monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("the loop called Ray")

    # an earlier test in this process may have started Ray: refuse every entry point instead of
    # checking ray.is_initialized()
    for name in ("init", "get", "put", "wait", "remote", "kill", "get_actor"):
        monkeypatch.setattr(ray, name, refuse)
    with make_trainer(tmp_path, "trainer.mode=pipelined") as t:
        t.fit()


def test_a_run_that_fails_to_set_up_tears_its_parts_down(tmp_path):
    closed = []
    cfg = load_config("configs/tiny.yaml", [f"trainer.output_dir={tmp_path / 'run'}", "trainer.resume=auto"])
    (tmp_path / "run" / "checkpoints" / "step_000002").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_000002" / "trainer.json").write_text('{"step": 2}')
    parts = Parts(buffer=None, rollouts=None, learners=None, sync_weights=None, control=None,
                  close=lambda: closed.append(True))
    with pytest.raises(CheckpointError, match="checkpoint format"):  # fails after the parts were handed over
        Trainer(cfg, parts)
    assert closed == [True]


def test_screening_completes_only_mixed_screens_and_charges_every_rollout(tmp_path):
    """fill=screen with 2 screen rollouts of G = 4: every drawn problem costs 2 rollouts, a mixed one 2 more;
    the learner sees groups of G; problems whose screen was not mixed are recorded with their screen."""
    with make_trainer(tmp_path, "trainer.fill=screen", "trainer.screen_rollouts=2", "trainer.fill_rounds=3") as t:
        sizes = []
        update = t.buffer.update

        def recorded_update(ids, rewards):
            sizes.append((len(ids), np.asarray(rewards).shape[1] if len(ids) else None))
            return update(ids, rewards)

        t.buffer.update = recorded_update
        train = t.learners.train
        seen = []

        def recorded_train(batch, seed=0):
            seen.append(batch)
            return train(batch, seed)

        t.learners.train = recorded_train
        summary = t.fit()
        stats = t.buffer.stats()
        calls = [c for c in t.rollouts.calls if c[0] == "generate" and c[1] == "train"]
    steps = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "rollout/pass_rate" in r]
    screened = sum(r["rollout/screened"] for r in steps)
    completed = sum(n for n, g in sizes if g == G)
    assert summary["rollouts"] == 2 * screened + 2 * completed  # every screen, every completion
    assert all(g in (2, G) for n, g in sizes if n)
    assert all(r["rollout/signal_groups"] <= B for r in steps)
    assert all(len(b.advantages) % G == 0 for b in seen)  # the learner trains on whole groups of G
    assert stats["buffer/in_flight"] == 0 and stats["buffer/updates"] == screened
    assert len(calls) >= 8


def test_the_oracle_measures_the_whole_pool_without_charging_the_budget(tmp_path):
    with make_trainer(tmp_path, "buffer.sampler=oracle", "buffer.oracle.every_steps=3", "buffer.oracle.rollouts=5") as t:
        summary = t.fit()
        calls = t.rollouts.calls
        rates = t.buffer.sampler.rate.copy()
    measures = [c for c in calls if c[0] == "generate" and c[1] == "train" and len(c[2]) == len(rates)]
    assert len(measures) == 3  # before steps 1, 4 and 7
    assert summary["rollouts"] == 8 * B * G  # not a rollout of theirs counted
    assert np.isfinite(rates).all() and set(np.unique(rates * 5)) <= set(range(6))


def test_the_last_evaluation_reports_pass_at_k_and_the_summary_the_diagnostics(tmp_path):
    with make_trainer(tmp_path, "eval.final_k=[1,2,4]", "buffer.sampler=mopps") as t:
        summary = t.fit()
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/accuracy" in r]
    assert "eval/pass@4" in evals[-1] and all("eval/pass@4" not in r for r in evals[:-1])
    assert summary["final_pass@1"] <= summary["final_pass@2"] <= summary["final_pass@4"]
    d = summary["diagnostics"]
    assert d["groups_logged"] == 8 * B and 0 < d["coverage"] <= 1 and -1 <= d["prediction_spearman"] <= 1
    assert summary["num_problems"] == 40 and summary["group_size"] == G
    log = np.load(tmp_path / "run" / "predictions.npz")
    assert len(log["predicted"]) == 8 * B
