"""Where a problem's Beta prior comes from: flat pseudo-counts, or the pooled pass rate of its cluster.

A sampler that predicts a problem from its own history has nothing to go on at its first draw, and at
1-2 draws per problem most draws are first draws. ``ClusterPrior`` informs them from the problems like it
(those sharing a ``data.group_key`` value): each cluster pools the rollouts of its problems, faded by
``discount`` per step so the pooled rate follows the policy, and a problem's prior is ``strength``
pseudo-rollouts at that rate. The flat pseudo-counts (a, b) smooth the pooled rate, (S + a) / (N + a + b),
so a cluster nobody has drawn from yet predicts what the flat prior does.
"""

from __future__ import annotations

import numpy as np


class FlatPrior:
    """The same Beta(a, b) for every problem."""

    def __init__(self, successes: float, failures: float):
        self.a, self.b = float(successes), float(failures)

    def __call__(self, ids: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters (a0, b0) of ``ids``' priors at ``step``."""
        n = len(ids)
        return np.full(n, self.a), np.full(n, self.b)

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: np.ndarray | int, step: int) -> None:
        """Rollouts came back for ``ids`` (a flat prior learns nothing from them)."""

    def frozen(self) -> "FlatPrior":
        """A copy that later observations leave as it is now."""
        return self

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ClusterPrior(FlatPrior):
    """Beta(strength · r_c, strength · (1 − r_c)) for a problem of cluster c, r_c its cluster's smoothed,
    recently weighted pass rate (see the module docstring)."""

    def __init__(self, clusters: np.ndarray, successes: float, failures: float, strength: float, discount: float):
        super().__init__(successes, failures)
        self.clusters = np.asarray(clusters, dtype=np.int64)
        k = int(self.clusters.max()) + 1 if len(self.clusters) else 0
        self.strength, self.discount = float(strength), float(discount)
        self.pooled_s = np.zeros(k)  # faded successes of the cluster, as of step ``at``
        self.pooled_n = np.zeros(k)
        self.at = np.zeros(k, dtype=np.int64)

    def rate(self, ids: np.ndarray, step: int) -> np.ndarray:
        """The smoothed pooled pass rate of each of ``ids``' clusters at ``step``."""
        c = self.clusters[ids]
        fade = self.discount ** np.maximum(step - self.at[c], 0).astype(np.float64)
        return (fade * self.pooled_s[c] + self.a) / (fade * self.pooled_n[c] + self.a + self.b)

    def __call__(self, ids: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.rate(ids, step)
        return self.strength * r, self.strength * (1.0 - r)

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: np.ndarray | int, step: int) -> None:
        if len(ids) == 0:
            return
        c = self.clusters[ids]
        touched = np.unique(c)
        fade = self.discount ** np.maximum(step - self.at[touched], 0).astype(np.float64)
        self.pooled_s[touched] *= fade
        self.pooled_n[touched] *= fade
        self.at[touched] = step
        np.add.at(self.pooled_s, c, np.asarray(successes, dtype=np.float64))
        np.add.at(self.pooled_n, c, np.broadcast_to(np.asarray(group_size, dtype=np.float64), c.shape))

    def frozen(self) -> "ClusterPrior":
        copy = ClusterPrior(self.clusters, self.a, self.b, self.strength, self.discount)
        copy.load_state_dict(self.state_dict())
        return copy

    def state_dict(self) -> dict:
        return {"pooled_s": self.pooled_s.copy(), "pooled_n": self.pooled_n.copy(), "at": self.at.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.pooled_s[:], self.pooled_n[:], self.at[:] = state["pooled_s"], state["pooled_n"], state["at"]


def make_prior(cfg, clusters: np.ndarray | None, successes: float, failures: float) -> FlatPrior:
    """The prior ``cfg`` (``buffer.prior``) asks for, over the flat pseudo-counts (successes, failures)."""
    if cfg.mode == "cluster":
        if clusters is None:
            raise ValueError("buffer.prior.mode=cluster needs a cluster label per problem: set data.group_key "
                             "(the built-in task uses its levels)")
        return ClusterPrior(clusters, successes, failures, cfg.strength, cfg.discount)
    return FlatPrior(successes, failures)


def beta_moment(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """E[p^k] under Beta(a, b): the product over j < k of (a + j) / (a + b + j)."""
    out = np.ones(np.broadcast(a, b).shape)
    for j in range(k):
        out = out * (a + j) / (a + b + j)
    return out


def zero_variance_chance(a: np.ndarray, b: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Under Beta(a, b), the chance that a group of ``group_size`` is all solved, and all failed."""
    return beta_moment(a, b, group_size), beta_moment(b, a, group_size)
