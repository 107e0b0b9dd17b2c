"""What a sampler may see of the buffer: ``ProblemStats``, a read-only view of the per-problem statistics.

A sampler chooses among problems; it does not move them between pools, count anything in the buffer's
counters or change a statistic. So it is handed this view rather than the buffer: the statistics arrays as
read-only numpy views (the buffer updates them in place, so the view is always current), the settings, the
run's random generator, and the few values the buffer pushes to it as they change (the step, the prior
that priorities are computed with). Nothing here points back to the buffer.
"""

from __future__ import annotations

import numpy as np

ARRAYS = ("attempts", "successes", "w_successes", "w_attempts", "p_hat", "priority", "visits", "streak",
          "last_visit", "pool", "counts")
"""The buffer's arrays a sampler may read."""


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class ProblemStats:
    """The per-problem statistics a sampler reads (see the module docstring)."""

    def __init__(self, buf):
        self.cfg, self.variant, self.rng = buf.cfg, buf.variant, buf.rng
        self.num_problems, self.group_size = buf.num_problems, buf.group_size
        for name in ARRAYS:
            setattr(self, name, _read_only(getattr(buf, name)))
        self.prior = buf.prior  # the live prior (its state is restored in place)
        self.step = buf.step  # pushed by the buffer at every draw and on restore
        self.prior_frozen, self.last_refresh = buf.prior_frozen, buf.last_refresh  # pushed at every refresh

    def posterior(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Beta(a, b) of each problem's pass rate under the ``prioritized`` sampler's posterior priority: the
        prior the priorities were last computed with plus the evidence (down-weighted with ``stats=decayed``)."""
        if self.cfg.stats == "decayed":
            s, t = self.w_successes[ids], self.w_attempts[ids]
        else:
            s, t = self.successes[ids].astype(np.float64), self.attempts[ids].astype(np.float64)
        a0, b0 = self.prior_frozen(ids, self.last_refresh)
        return a0 + s, b0 + (t - s)

    def posterior_mean(self, ids: np.ndarray) -> np.ndarray:
        """The ``prioritized`` sampler's estimate of each pass rate: p̂, or the posterior mean with
        ``priority=posterior`` (the prior's mean for a problem never seen)."""
        if self.variant.priority == "point":
            return np.asarray(self.p_hat[ids])
        a, b = self.posterior(ids)
        return a / (a + b)
