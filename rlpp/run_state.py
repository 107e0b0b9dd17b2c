"""What a run has done so far: its counters and evaluation history, saved in every checkpoint
(``trainer.json``, see ``rlpp.checkpoint``), restored on resume and summarized at the end.

Kept apart from the loop so that exact resume depends on one small object: everything the loop would
otherwise redo differently after a restart (the step, the rollouts spent, the staleness histogram) is
here, and nothing else in the trainer outlives a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunState:
    step: int = 0
    """The last step trained (the policy version the engines hold)."""
    rollouts: int = 0
    """Rollouts generated and charged to the budget so far (an oracle's measurements are not)."""
    bad_steps: int = 0
    """Steps in a row skipped for a non-finite loss."""
    history: list[dict] = field(default_factory=list)
    """Every evaluation so far, with its step."""
    staleness_steps: dict[int, int] = field(default_factory=dict)
    """Trained steps by the staleness of their batch (policy versions behind the learner)."""

    def record_staleness(self, staleness: int) -> None:
        self.staleness_steps[staleness] = self.staleness_steps.get(staleness, 0) + 1

    def staleness_shares(self, k: int) -> dict[str, float]:
        """The run's staleness histogram so far: the share of trained steps at each staleness 0..k."""
        trained = max(1, sum(self.staleness_steps.values()))
        return {f"rollout/staleness_share/{s}": self.staleness_steps.get(s, 0) / trained for s in range(k + 1)}

    def to_json(self, num_problems: int) -> dict:
        """The checkpoint's ``trainer.json`` content (JSON keys are strings)."""
        return {"step": self.step, "rollouts": self.rollouts, "history": self.history, "bad_steps": self.bad_steps,
                "num_problems": num_problems, "staleness_steps": self._staleness_counts()}

    @classmethod
    def from_json(cls, state: dict) -> "RunState":
        """A checkpoint's state; checkpoints written before the staleness histogram lack it."""
        return cls(step=state["step"], rollouts=state["rollouts"], bad_steps=state["bad_steps"],
                   history=state["history"],
                   staleness_steps={int(s): n for s, n in state.get("staleness_steps", {}).items()})

    def summary(self, seconds: float) -> dict:
        """The run's figures for ``summary.json`` (the trainer adds what only it knows)."""
        first, last = self.history[0], self.history[-1]
        best = max(self.history, key=lambda h: h["eval/accuracy"])
        out = {"initial_accuracy": first["eval/accuracy"], "final_accuracy": last["eval/accuracy"],
               "best_accuracy": best["eval/accuracy"], "best_step": best["step"], "steps": self.step,
               "rollouts": self.rollouts, "seconds": round(seconds, 1)}
        if self.staleness_steps:
            out["staleness_steps"] = self._staleness_counts()
        if "dev/accuracy" in last:
            out.update(initial_dev_accuracy=first.get("dev/accuracy"), final_dev_accuracy=last["dev/accuracy"],
                       best_dev_accuracy=max(h.get("dev/accuracy", 0.0) for h in self.history))
        return out

    def _staleness_counts(self) -> dict[str, int]:
        return {str(s): n for s, n in sorted(self.staleness_steps.items())}
