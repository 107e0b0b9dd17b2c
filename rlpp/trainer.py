"""The GRPO loop: next batch → train batch → train → push weights → log / evaluate / checkpoint.

``Trainer.fit`` is the loop and reads top to bottom. What is generating and with which weights is the
schedule's business (``rlpp.loop.scheduler``, sync mode being its staleness 0); the run's counters are
``rlpp.run_state.RunState``; the actors are started by ``rlpp.distributed.runtime.build_parts``.
Set-up, evaluation and checkpoints are the methods beside the loop.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from rlpp import checkpoint
from rlpp.algo.batch import make_train_batch
from rlpp.config.loader import to_yaml
from rlpp.config.schema import Config, ConfigError
from rlpp.data.loader import load_problems
from rlpp.distributed.groups import LearnerFailed
from rlpp.distributed.local import init_ray
from rlpp.distributed.runtime import Parts, build_parts
from rlpp.evaluation import evaluate
from rlpp.learner.lora import check_targets
from rlpp.loop.scheduler import RolloutScheduler, TrainingStopped, step_seed
from rlpp.metrics import MetricsSink, PhaseTimer, StartupClock
from rlpp.progress import Progress
from rlpp.preflight import check_inputs
from rlpp.recipes.warmstart import prepare_model
from rlpp.rollout.worker import RolloutResult
from rlpp.run_state import RunState

log = logging.getLogger(__name__)


class Trainer:
    """The GRPO loop over a run's parts (``rlpp.distributed.runtime``): ``with Trainer(cfg) as t: t.fit()``.

    ``parts`` defaults to the Ray actors ``build_parts`` starts; a test passes in-process fakes. The
    trainer owns the parts from then on: ``close`` (or leaving the ``with`` block, or a failure while
    setting up) tears them down."""

    def __init__(self, cfg: Config, parts: Parts | None = None):
        self.startup = StartupClock()
        self.cfg = cfg
        self.out = Path(cfg.trainer.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(to_yaml(cfg))
        resume_from = check_inputs(cfg)  # again for a trainer built directly, not through `rlpp train`
        self.train_set, self.dev_set, self.eval_set = load_problems(cfg.data)
        _check_pool(cfg.trainer, len(self.train_set))
        if cfg.buffer.prior.mode == "cluster" and self.train_set.cluster_ids() is None:
            raise ConfigError(f"buffer.prior.mode: cluster needs a cluster label per problem; {self.train_set.source} has "
                              "none: set data.group_key to a row field (e.g. level or subject)")
        self.startup.mark("data")
        if parts is None:
            model_path, warmstart = prepare_model(cfg, self.dev_set, self.eval_set)
            check_targets(cfg.model.lora, model_path, cfg.model.trust_remote_code)  # before any learner builds it
            self.startup.mark("warm_start")
            init_ray(cfg)
            self.startup.mark("ray")
            problems = {"train": self.train_set, "dev": self.dev_set, "eval": self.eval_set}
            parts = build_parts(cfg, self.out, problems, model_path, warmstart)
            self.startup.mark("actors")
            self.startup.add({f"actors.{k}": v for k, v in parts.startup.items()})
        self.parts = parts
        self.buffer, self.rollouts, self.learners, self.control = parts.buffer, parts.rollouts, parts.learners, parts.control
        self.sink = None
        self.progress = None
        self.first_step = 1  # of this process (a resumed run's first step logs the start-up times)
        try:
            self.state = RunState()
            if resume_from is not None:
                self.state = RunState.from_json(checkpoint.read_state(resume_from))
            self.scheduler = RolloutScheduler(cfg, parts.buffer, parts.rollouts, parts.learners, parts.sync_weights,
                                              self.state, len(self.train_set))
            self.sink = MetricsSink(self.out, tensorboard=cfg.log.tensorboard, wandb=cfg.log.wandb,
                                    mlflow=cfg.log.mlflow, params=cfg)
            if resume_from is not None:
                self.resume(resume_from)
            elif (self.out / "metrics.jsonl").stat().st_size:
                # A fresh start in a used folder: the earlier run's records would interleave with these.
                log.warning("%s holds metrics of an earlier run; starting fresh, they are dropped "
                            "(use trainer.resume=auto to continue that run instead)", self.out / "metrics.jsonl")
                self.sink.truncate_after(-1)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train until ``trainer.steps`` or the rollout budget; returns the run's summary."""
        t_start, state = time.perf_counter(), self.state
        self.startup.mark("set_up")
        if state.step == 0:
            state.history.append(self._evaluate_all(step=0))
            self.startup.mark("initial_eval")
        log.info("%s", self.startup.summary())
        self.first_step = state.step + 1
        self.progress = Progress(self.cfg.trainer.steps, state.step, self.cfg.log.progress_bar)
        try:
            for step in range(state.step + 1, self.scheduler.last + 1):
                self._apply_requests(step)
                timer = PhaseTimer()
                result, staleness = self.scheduler.next_batch(step, timer)
                batch, metrics = make_train_batch(*result.train_inputs(), estimator=self.cfg.algo.estimator,
                                                  drop_zero_variance=self.cfg.algo.drop_zero_variance,
                                                  pad_id=self.parts.pad_id, weights=result.weights)
                with timer("sleep"):
                    self.scheduler.before_train()
                with timer("train"):
                    metrics.update(self._train(batch, step) if batch is not None else {})
                with timer("sync"):
                    self.scheduler.after_train()
                state.step = step
                if self._end_of_step(step, result, staleness, metrics, timer):
                    break
        except TrainingStopped as e:
            raise TrainingStopped(f"{e}\n{self._resume_hint()}") from e.__cause__
        self.progress.close()
        self.buffer.check_invariants()  # every problem in exactly one pool, none lost
        np.savez_compressed(self.out / "predictions.npz", **self.buffer.prediction_log())
        checkpoint.export_model(self.save(state.step), self.out)  # RUN_DIR/model: what rlpp eval RUN_DIR reads
        return self.summary(time.perf_counter() - t_start)

    def _end_of_step(self, step: int, result: RolloutResult, staleness: int, metrics: dict, timer: PhaseTimer) -> bool:
        """Log the step, evaluate and checkpoint when due; whether this was the last step."""
        cfg, state = self.cfg.trainer, self.state
        metrics.update(self._rollout_metrics(result, timer))
        metrics.update({"rollout/actors": len(self.rollouts.actors), "time/step": timer.total(),
                        "rollout/groups": float(len(result)),
                        "rollout/staleness": float(staleness), "rollout/policy_version": float(result.version),
                        "rollout/in_flight_batches": float(len(self.scheduler.flights)),
                        **state.staleness_shares(self.scheduler.k),
                        "time/learner_idle_frac": timer.seconds("rollout") / max(timer.total(), 1e-9),
                        "time/rollout_idle_frac": max(0.0, 1.0 - result.metrics.get("time/generate", 0.0) / max(timer.total(), 1e-9))})
        if step == self.first_step:  # the run's (or the resumed run's) first step
            metrics.update(self.startup.metrics())
        self.sink.log(step, metrics)
        last = step == self.scheduler.last or 0 < cfg.max_rollouts <= state.rollouts
        if (cfg.eval_every and step % cfg.eval_every == 0) or last:
            state.history.append(self._evaluate_all(step, final=last))
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not last:
            self.save(step)
        self.progress.update(step, accuracy=state.history[-1]["eval/accuracy"], pass_rate=metrics["rollout/pass_rate"],
                             rollouts=state.rollouts)
        return last

    def _apply_requests(self, step: int) -> None:
        """Between steps: resize the rollout pool if ``rlpp scale`` asked to."""
        wanted = self.control.take()
        if wanted is None:
            return
        error = self.scheduler.resize(wanted)
        if error:
            log.error("step %d: rollout pool not resized to %d: %s", step, wanted, error)
        else:
            log.info("step %d: rollout pool resized to %d actors", step, wanted)
        self.control.report(len(self.rollouts.actors), step, error)

    def _train(self, batch, step: int) -> dict:
        try:
            metrics = self.learners.train(batch, seed=step_seed(self.cfg.seed, step, 7))
        except LearnerFailed as e:
            raise TrainingStopped(f"a learner actor failed at step {step}: {e}") from e
        self.state.bad_steps = self.state.bad_steps + 1 if metrics["train/skipped"] else 0
        if self.state.bad_steps >= self.cfg.trainer.max_bad_steps:
            raise TrainingStopped(f"{self.state.bad_steps} steps in a row had a non-finite loss (last: step {step}); "
                                  f"stopping (trainer.max_bad_steps={self.cfg.trainer.max_bad_steps}).")
        return metrics

    def _resume_hint(self) -> str:
        found = checkpoint.complete(checkpoint.root(self.out))
        where = f"the latest checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
        return f"Resume with the same command plus trainer.resume=auto ({where})."

    # ------------------------------------------------------------------ around the loop
    def _evaluate_all(self, step: int, final: bool = False) -> dict:
        out = self.evaluate(step, final=final)
        if self.cfg.trainer.eval_dev:
            out.update({k: v for k, v in self.evaluate(step, "dev", snapshot=False).items() if k.startswith("dev/")})
        return out

    def evaluate(self, step: int, split: str = "eval", snapshot: bool = True, final: bool = False) -> dict:
        """``rlpp eval``'s evaluation (``rlpp.evaluation``) of the current policy, logged at ``step``; the
        run's last one also reports pass@k for ``eval.final_k``."""
        problems = self.eval_set if split == "eval" else self.dev_set
        ec = self.cfg.eval
        k, samples = (ec.final_k, max(ec.final_k)) if final and ec.final_k else (ec.k, ec.samples)
        metrics, _ = evaluate(self.scheduler.generate, problems, split, max_new_tokens=self.cfg.rollout.max_new_tokens,
                              threshold=self.cfg.buffer.success_threshold, k=k, samples=samples,
                              temperature=ec.temperature, top_p=ec.top_p, seed=step_seed(self.cfg.seed, step, 99))
        metrics["rollouts"] = self.state.rollouts
        self.sink.log(step, metrics)
        if self.cfg.log.buffer_snapshots and snapshot:
            folder = self.out / "buffer"
            folder.mkdir(exist_ok=True)
            np.savez_compressed(folder / f"step_{step:06d}.npz", **self.buffer.snapshot())
        log.info("step %d: %s accuracy %.4f", step, split, metrics[f"{split}/accuracy"])
        return {"step": step, **metrics}

    def _rollout_metrics(self, result: RolloutResult, timer: PhaseTimer) -> dict:
        stats = self.buffer.stats()
        success = result.rewards >= self.cfg.buffer.success_threshold
        return {**result.metrics, **timer.metrics(), **stats, "rollouts": self.state.rollouts,
                "rollout/pass_rate": float(success.mean()),
                "rollout/tokens_per_s": result.metrics.get("rollout/tokens", 0.0) / max(result.metrics.get("time/generate", 0.0), 1e-9)}

    def save(self, step: int) -> Path:
        """Model in HF format + tokenizer + DeepSpeed optimizer state + buffer and run state."""
        tmp = checkpoint.staging(self.out, step)
        self.learners.save(str(tmp))
        if self.parts.tokenizer is not None:
            self.parts.tokenizer.save_pretrained(tmp)
        for marker in Path(self.parts.model_path).glob("rlpp_tokenizer.json") if self.parts.model_path else ():
            shutil.copy(marker, tmp / marker.name)
        torch.save(self.buffer.state_dict(), tmp / "buffer.pt")
        return checkpoint.commit(tmp, self.state.to_json(len(self.train_set)), self.cfg.trainer.keep_last)

    def resume(self, folder: Path) -> None:
        """Continue from ``folder`` (its run state is already read): learner weights and optimizer, engines,
        buffer, logs."""
        state = checkpoint.read_state(folder)
        if state["num_problems"] != len(self.train_set):
            raise checkpoint.CheckpointError(f"{folder} holds a buffer over {state['num_problems']} problems, "
                                             f"this run's data has {len(self.train_set)}")
        self.learners.load(str(folder))
        self.scheduler.sync_all()  # the engines get the checkpoint's weights, policy version state.step
        self.buffer.load_state_dict(torch.load(folder / "buffer.pt", weights_only=False))
        # What the interrupted run logged after this checkpoint is redone, so it must not appear twice.
        self.sink.truncate_after(self.state.step)
        for snap in (self.out / "buffer").glob("step_*.npz"):
            if int(snap.stem.removeprefix("step_")) > self.state.step:
                snap.unlink()
        log.info("resumed from %s at step %d (%d rollouts)", folder, self.state.step, self.state.rollouts)

    def summary(self, seconds: float) -> dict:
        """``summary.json``: the run's figures, diagnostics and the final pass@k."""
        last = self.state.history[-1]
        out = {"warmstart_dev_accuracy": self.parts.warmstart.get("dev_accuracy"), **self.state.summary(seconds),
               "output_dir": str(self.out), "model": str(self.out / checkpoint.MODEL_DIR),
               "num_problems": len(self.train_set),
               "group_size": self.cfg.rollout.group_size, "diagnostics": self.buffer.diagnostics()}
        for key, value in last.items():  # the last evaluation's pass@k (eval.k, eval.final_k)
            if re.fullmatch(r"eval/pass@\d+", key):
                out[f"final_{key.removeprefix('eval/')}"] = value
        (self.out / "summary.json").write_text(json.dumps(out, indent=1))
        return out

    def close(self) -> None:
        """Tear the run down: metrics sink, then every actor and placement group (safe to call twice)."""
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        close, self.parts.close = self.parts.close, lambda: None
        close()


def _check_pool(tc, problems: int) -> None:
    """Pipelined mode keeps up to max_staleness + 1 batches in flight (fewer when checkpoints come sooner):
    the pool must hold them all, or later draws would come back short."""
    if tc.mode != "pipelined":
        return
    ahead = min(tc.max_staleness, tc.checkpoint_every - 1) if tc.checkpoint_every else tc.max_staleness
    if problems < (ahead + 1) * tc.batch_size:
        raise ConfigError(f"trainer.max_staleness: pipelined mode holds up to {ahead + 1} batches of "
                          f"trainer.batch_size={tc.batch_size} in flight, more than the {problems} training "
                          "problems; lower max_staleness or batch_size")
