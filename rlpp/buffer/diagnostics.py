"""What the prioritization reports measure about a sampler, besides accuracy: how well it predicted each
group before generating it, and how it spread its draws over the pool.

``PredictionLog`` keeps, for every group that came back, the pass rate the sampler predicted when it drew
the problem (``Sampler.predict``; a problem it cannot predict gets the run's pass rate so far, a
constant, so every sampler is judged on every draw) and what the group showed. ``summarize`` turns that
and the buffer's visit counts into the report's numbers: Spearman's ρ of predicted against realized
pass rate, the AUROC with which the predicted chance of a zero-variance group separates the groups that
were from those that were not, coverage, the longest gap between two visits, and forgetting.
"""

from __future__ import annotations

import math

import numpy as np

MAX_ROWS = 1_000_000
"""The log keeps the latest this many groups (a long run's diagnostics describe its recent draws)."""


class PredictionLog:
    def __init__(self, num_problems: int):
        self.pending = np.full(num_problems, np.nan)  # prediction made when each in-flight problem was drawn
        self.predicted: list[np.ndarray] = []
        self.realized: list[np.ndarray] = []
        self.zero_var: list[np.ndarray] = []
        self.sizes: list[np.ndarray] = []  # rollouts of each group (a screened group may be smaller than G)
        self.successes = 0
        self.attempts = 0

    def drawn(self, ids: np.ndarray, predicted: np.ndarray) -> None:
        fallback = self.successes / self.attempts if self.attempts else 0.5
        self.pending[ids] = np.where(np.isfinite(predicted), predicted, fallback)

    def observed(self, ids: np.ndarray, successes: np.ndarray, group_size: int) -> None:
        self.predicted.append(self.pending[ids].astype(np.float32))
        self.realized.append((successes / group_size).astype(np.float32))
        self.zero_var.append((successes == 0) | (successes == group_size))
        self.sizes.append(np.full(len(ids), group_size, dtype=np.int32))
        self.successes += int(successes.sum())
        self.attempts += len(ids) * group_size
        if sum(len(x) for x in self.predicted) > 2 * MAX_ROWS:
            self._trim()

    def _trim(self) -> None:
        """One array per field, the latest ``MAX_ROWS`` rows."""
        if self.predicted:
            for name in ("predicted", "realized", "zero_var", "sizes"):
                setattr(self, name, [np.concatenate(getattr(self, name))[-MAX_ROWS:]])

    def arrays(self) -> dict[str, np.ndarray]:
        self._trim()
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.empty(0, dtype=dt))
        return {"predicted": cat(self.predicted, np.float32), "realized": cat(self.realized, np.float32),
                "zero_var": cat(self.zero_var, bool), "sizes": cat(self.sizes, np.int32)}

    def state_dict(self) -> dict:
        return {**self.arrays(), "pending": self.pending.copy(), "successes": self.successes, "attempts": self.attempts}

    def load_state_dict(self, state: dict) -> None:
        self.predicted, self.realized, self.zero_var = [state["predicted"]], [state["realized"]], [state["zero_var"]]
        self.sizes = [state["sizes"]]
        self.pending[:] = state["pending"]
        self.successes, self.attempts = int(state["successes"]), int(state["attempts"])


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    starts = np.flatnonzero(np.r_[True, sx[1:] != sx[:-1]])
    ends = np.r_[starts[1:], len(sx)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1 .. end
    out = np.empty(len(x))
    out[order] = np.repeat(avg, ends - starts)
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's of average ranks); NaN when either side is constant."""
    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else math.nan


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` labels (Mann-Whitney, ties count half);
    NaN without both classes."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    r = ranks(score)
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def summarize(log: PredictionLog, visits: np.ndarray, max_gap: np.ndarray, counters: dict) -> dict[str, float]:
    """The report's diagnostics of one run (see the module docstring)."""
    a = log.arrays()
    p, g = a["predicted"].astype(np.float64), a["sizes"]
    zero_chance = p ** g + (1.0 - p) ** g  # of a group the size each one had
    draws = float(visits.sum()) / max(len(visits), 1)
    revisited = counters.get("solved_revisits", 0)
    return {
        "draws_per_problem": draws,
        "prediction_spearman": spearman(p, a["realized"]),
        "zero_variance_auroc": auroc(zero_chance, a["zero_var"]),
        "groups_logged": int(len(p)),
        "coverage": float((visits >= 1).mean()) if len(visits) else math.nan,
        "coverage_half_d": float((visits >= max(1.0, draws / 2)).mean()) if len(visits) else math.nan,
        "longest_gap": int(max_gap.max()) if len(max_gap) else 0,
        "mean_longest_gap": float(max_gap[visits >= 2].mean()) if (visits >= 2).any() else math.nan,
        "solved_revisits": int(revisited),
        "forgetting_rate": counters.get("solved_then_failed", 0) / revisited if revisited else math.nan,
    }
