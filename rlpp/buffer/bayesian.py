"""Samplers that keep a Beta posterior of each problem's pass rate and select by a posterior draw:
``thompson`` (evidence fades per step, scored by the chance of a signal-carrying group) and ``mopps``
(the published MoPPS rule: evidence decays at every visit, the draws closest to a target pass rate).

The posterior is the buffer's prior (``buffer.prior``: flat, or the problem's cluster) plus the problem's
own faded evidence: MoPPS's update α ← λα + (1 − λ)α₀ + s keeps exactly α₀ of prior mass, so it is the
prior plus evidence E ← λE + s.
"""

from __future__ import annotations

import numpy as np

from rlpp.buffer.view import ProblemStats
from rlpp.buffer.samplers import UniformSampler, register_sampler


class PosteriorSampler(UniformSampler):
    """Thompson selection among ``candidates`` x B uniformly drawn problems not in flight (all of them with
    0): draw p̃ ~ Beta(posterior) for each candidate and serve the B best-scored. The uniform candidate draw
    keeps uniform's spread over the pool; the posterior draw passes over problems that are predictably
    zero-variance while a little luck still brings them back now and then, so nothing starves."""

    @classmethod
    def reads_prior(cls, cfg) -> bool:
        return True

    @classmethod
    def settings(cls, cfg):
        """This sampler's own settings group (``buffer.thompson``, ``buffer.mopps``): its candidates and its
        flat prior's pseudo-counts."""
        return getattr(cfg, cls.config_groups[0])

    @classmethod
    def flat_prior(cls, cfg) -> tuple[float, float]:
        group = cls.settings(cfg)
        return group.prior_successes, group.prior_failures

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        self.candidates = self.settings(stats.cfg).candidates
        n = stats.num_problems
        self.evidence_s = np.zeros(n)  # faded successes, as of ``seen_step`` (per-step fading only)
        self.evidence_f = np.zeros(n)
        self.seen_step = np.zeros(n, dtype=np.int64)

    def _fade(self, ids: np.ndarray, step: int) -> np.ndarray:
        """Weight the stored evidence of ``ids`` keeps at ``step``."""
        return np.ones(len(ids))

    def score(self, p: np.ndarray) -> np.ndarray:
        """Higher is served first."""
        raise NotImplementedError

    def posterior(self, ids: np.ndarray, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters (a, b) of ``ids`` at ``step`` (default: the buffer's current step)."""
        step = self.stats.step if step is None else step
        a0, b0 = self.stats.prior(ids, step)
        fade = self._fade(ids, step)
        return a0 + fade * self.evidence_s[ids], b0 + fade * self.evidence_f[ids]

    def predict(self, ids: np.ndarray) -> np.ndarray:
        a, b = self.posterior(ids)
        return a / (a + b)

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: int) -> None:
        step = self.stats.step
        fade = self._fade(ids, step)
        self.evidence_s[ids] = fade * self.evidence_s[ids] + successes
        self.evidence_f[ids] = fade * self.evidence_f[ids] + (group_size - successes)
        self.seen_step[ids] = step

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = self.stats.rng
        m = len(self.ids) if self.candidates == 0 else min(len(self.ids), self.candidates * n)
        cand = self.ids.draw(m, rng)
        if len(cand) <= n:
            return cand, np.ones(len(cand))
        a, b = self.posterior(cand)
        order = np.argpartition(-self.score(rng.beta(a, b)), n - 1)
        self.ids.insert(cand[order[n:]])  # the candidates not chosen stay available
        return cand[order[:n]], np.ones(n)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "evidence_s": self.evidence_s.copy(), "evidence_f": self.evidence_f.copy(),
                "seen_step": self.seen_step.copy()}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        super().load_state_dict(state, available)
        self.evidence_s[:] = state["evidence_s"]
        self.evidence_f[:] = state["evidence_f"]
        self.seen_step[:] = state["seen_step"]


@register_sampler("thompson")
class ThompsonSampler(PosteriorSampler):
    """Thompson selection over a discounted Beta posterior: at every step the evidence gathered so far keeps
    ``discount`` of its weight (applied lazily, when a problem is read), so what was true of an earlier
    policy fades. Scored by ``signal`` = 1 − p̃^G − (1 − p̃)^G, the chance that a group of G carries signal,
    or ``variance`` = p̃(1 − p̃). Nothing parks."""

    config_groups = ("thompson",)

    def _fade(self, ids: np.ndarray, step: int) -> np.ndarray:
        return self.stats.cfg.thompson.discount ** (step - self.seen_step[ids]).astype(np.float64)

    def score(self, p: np.ndarray) -> np.ndarray:
        if self.stats.cfg.thompson.score == "variance":
            return p * (1.0 - p)
        g = self.stats.group_size
        return 1.0 - p ** g - (1.0 - p) ** g


@register_sampler("mopps")
class MoppsSampler(PosteriorSampler):
    """MoPPS exactly (``buffer.mopps``): Beta(α₀, β₀) prior, at every visit α ← λα + (1 − λ)α₀ + s and
    β ← λβ + (1 − λ)β₀ + (G − s); each batch draws ``candidates`` x B problems uniformly, samples
    r ~ Beta(α, β) for each and serves the B with the smallest (r − target)². With ``buffer.prior.mode=
    cluster`` α₀, β₀ are the problem's cluster prior at the time of the draw."""

    config_groups = ("mopps",)

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: int) -> None:
        lam = self.stats.cfg.mopps.decay
        self.evidence_s[ids] = lam * self.evidence_s[ids] + successes
        self.evidence_f[ids] = lam * self.evidence_f[ids] + (group_size - successes)
        self.seen_step[ids] = self.stats.step

    def score(self, p: np.ndarray) -> np.ndarray:
        return -((p - self.stats.cfg.mopps.target) ** 2)
