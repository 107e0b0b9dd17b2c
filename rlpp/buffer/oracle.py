"""The ``oracle`` sampler: an upper bound on what selection could gain, not a method.

It selects with each problem's pass rate under the current policy, measured by extra rollouts that the
run does **not** charge to its budget (``buffer.oracle``: ``rollouts`` per problem, the whole pool every
``every_steps`` steps; the loop measures and hands the rates in through ``PriorityBuffer.set_oracle_rates``).
A problem is drawn without replacement with probability ∝ max(1 − p^G − (1 − p)^G, ``floor``): the chance
that its group carries signal, so the batch is spread over every problem that can teach, in proportion
to how likely it is to, and a measured zero-variance problem is drawn only rarely.
"""

from __future__ import annotations

import numpy as np

from rlpp.buffer.view import ProblemStats
from rlpp.buffer.samplers import TreeSampler, register_sampler


@register_sampler("oracle")
class OracleSampler(TreeSampler):
    config_groups = ("oracle",)
    parks = False
    measures_pool = True

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        self.rate = np.full(stats.num_problems, np.nan)  # measured pass rate; NaN until measured

    def _mass(self, ids: np.ndarray) -> np.ndarray:
        p, g = self.rate[ids], self.stats.group_size
        signal = np.where(np.isnan(p), 1.0, 1.0 - p ** g - (1.0 - p) ** g)
        return np.maximum(signal, self.stats.cfg.oracle.floor)

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        ids, _, _ = self.draw(n)
        return ids, np.ones(len(ids))

    def predict(self, ids: np.ndarray) -> np.ndarray:
        return self.rate[ids]

    def set_rates(self, ids: np.ndarray, rates: np.ndarray) -> None:
        """New measurements: selection weights of the available ones change at once, the others' on return."""
        self.rate[ids] = rates
        waiting = ids[self.tree.leaf(ids) > 0]
        self.tree.set(waiting, self._mass(waiting))

    def state_dict(self) -> dict:
        return {"rate": self.rate.copy()}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        self.rate[:] = state["rate"]
        self.insert(available)
