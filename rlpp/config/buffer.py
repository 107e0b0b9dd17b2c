"""Config groups of the priority buffer (plain frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlpp.config.base import Problems, at_least, in_range, one_of



def sampler_names() -> list[str]:
    """The registered samplers (``rlpp.buffer.samplers.SAMPLERS``, the only list of their names): a sampler
    registered with ``@register_sampler`` is selectable by ``buffer.sampler`` at once."""
    from rlpp.buffer import SAMPLERS  # at call time: rlpp.buffer imports this module

    return sorted(SAMPLERS)


@dataclass(frozen=True)
class RetestConfig:
    """When parked (always solved / always failed) problems are tried again.

    Applies to samplers that park problems (``prioritized``, ``paper``, ``per``); the others never
    withhold a problem, so there is nothing to retest and this group is unused by them. ``paper``
    always retests ``periodic``-ally, whatever ``mode`` says.
    """

    mode: str = "periodic"
    """``periodic``: every ``every_steps`` steps put ``per_round`` parked problems into the batch;
    ``fraction``: every batch carries ceil(``batch_fraction`` * batch) parked problems; ``scaled``: every
    batch carries ceil(min(``max_fraction``, ``scale`` * parked / problems) * batch), so the retest rate
    grows with the parked pools; ``off``: never (parked problems then return only when nothing else is
    left)."""
    every_steps: int = 10
    """Steps between two periodic retest rounds (R)."""
    per_round: int = 8
    """Parked problems per periodic round, oldest last visit first; must not exceed the batch size."""
    batch_fraction: float = 0.125
    """With ``mode=fraction``: share of every batch drawn from the parked pools."""
    scale: float = 1.0
    """With ``mode=scaled``: retest share of a batch per unit of parked share of all problems."""
    max_fraction: float = 0.5
    """With ``mode=scaled``: the largest share of a batch that retests may take."""

    def _problems(self) -> Problems:
        yield from one_of("mode", self.mode, ("periodic", "fraction", "scaled", "off"))
        yield from in_range("scale", self.scale, 0.0, 100.0, lo_open=True)
        yield from in_range("max_fraction", self.max_fraction, 0.0, 1.0, lo_open=True)
        yield from at_least("every_steps", self.every_steps, 1)
        yield from at_least("per_round", self.per_round, 1)
        yield from in_range("batch_fraction", self.batch_fraction, 0.0, 1.0, lo_open=True, hi_open=True)


@dataclass(frozen=True)
class PERConfig:
    """Proportional prioritized replay (Schaul et al. 2016) over priorities ω = p(1-p)."""

    alpha: float = 0.6
    """Sampling probability ∝ (ω + eps)^alpha; 0 is uniform over the heap pool, 1 fully proportional."""
    beta: float = 0.4
    """Importance-weight exponent: w = (N·P)^-beta / max w over the batch."""
    eps: float = 1e-3
    """Added to every priority so no active problem has zero probability."""

    def _problems(self) -> Problems:
        yield from in_range("alpha", self.alpha, 0.0, 1.0)
        yield from in_range("beta", self.beta, 0.0, 1.0)
        yield from in_range("eps", self.eps, 0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class PromptReplayConfig:
    """Replay of problems whose pass rate sits near 0.5, mixed with fresh draws."""

    window: float = 0.3
    """A visited problem is a replay candidate when |p - 0.5| <= window."""
    cooldown_steps: int = 2
    """A candidate is not replayed again until this many steps after its last visit."""
    max_reuse: int = 3
    """How many times one problem may be served as a replay."""
    replay_fraction: float = 0.5
    """Share of each batch taken from replay candidates (closest to 0.5 first); the rest is uniform."""

    def _problems(self) -> Problems:
        yield from in_range("window", self.window, 0.0, 0.5)
        yield from at_least("cooldown_steps", self.cooldown_steps, 0)
        yield from at_least("max_reuse", self.max_reuse, 1)
        yield from in_range("replay_fraction", self.replay_fraction, 0.0, 1.0)


@dataclass(frozen=True)
class DapoFilterConfig:
    """Uniform draws with oversampling; the trainer drops zero-variance groups (DAPO dynamic sampling)."""

    oversample: float = 2.0
    """A request for B problems draws ceil(oversample * B), so enough groups survive the filter."""

    def _problems(self) -> Problems:
        yield from at_least("oversample", self.oversample, 1.0)


@dataclass(frozen=True)
class ThompsonConfig:
    """Thompson selection over a discounted Beta posterior of each problem's success rate (after MoPPS)."""

    score: str = "signal"
    """What a posterior draw p̃ is scored by: ``signal`` = 1 − p̃^G − (1 − p̃)^G (the chance a group of G has
    both a success and a failure) or ``variance`` = p̃(1 − p̃)."""
    candidates: int = 4
    """Each batch of B draws candidates x B problems uniformly from those not in flight and keeps the B
    best-scored; 0 scores every problem not in flight (exact Thompson over the pool; O(pool) per batch)."""
    discount: float = 0.995
    """Weight the evidence keeps per step (old evidence fades; 1 keeps everything)."""
    prior_successes: float = 1.0
    """Pseudo-successes of the Beta prior."""
    prior_failures: float = 1.0
    """Pseudo-failures of the Beta prior."""

    def _problems(self) -> Problems:
        yield from one_of("score", self.score, ("signal", "variance"))
        yield from at_least("candidates", self.candidates, 0)
        if self.candidates == 1:
            yield "candidates", "1 would serve uniform draws unscored; use 0 (every problem) or >= 2"
        yield from in_range("discount", self.discount, 0.0, 1.0, lo_open=True)
        yield from in_range("prior_successes", self.prior_successes, 0.0, 1e6, lo_open=True)
        yield from in_range("prior_failures", self.prior_failures, 0.0, 1e6, lo_open=True)


@dataclass(frozen=True)
class SkipConfig:
    """Uniform draws with an adaptive pre-rollout skip of predictably zero-variance problems (after GRESO)."""

    after: int = 1
    """A problem is a skip candidate once its last ``after`` groups were all solved (or all failed)."""
    target: float = 0.2
    """Zero-variance share of the generated groups the skip probabilities aim for (half of it each for the
    all-solved and the all-failed side)."""
    adapt_rate: float = 0.05
    """Change of a skip probability per update, per unit of (its zero-variance share − target / 2)."""
    initial: float = 0.5
    """Skip probability at the start, both sides."""
    explore: float = 0.05
    """Least probability with which a skip candidate is still tried (the skip probability's ceiling is 1 − explore)."""

    def _problems(self) -> Problems:
        yield from in_range("after", self.after, 1, 1000)
        yield from in_range("target", self.target, 0.0, 1.0)
        yield from in_range("adapt_rate", self.adapt_rate, 0.0, 1.0, lo_open=True)
        yield from in_range("explore", self.explore, 0.0, 1.0, lo_open=True)
        yield from in_range("initial", self.initial, 0.0, 1.0 - self.explore)


@dataclass(frozen=True)
class PriorConfig:
    """Where a problem's Beta prior comes from, for the samplers that keep a posterior (``thompson``,
    ``mopps``, ``prioritized`` with ``priority=posterior``) and for ``skip`` / ``greso``'s first draws.

    ``flat``: every problem starts from the sampler's own pseudo-counts, so a first draw is uninformed.
    ``cluster``: a problem starts from the pooled, recently weighted pass rate of its cluster (the values of
    ``data.group_key``; the level on the built-in task), with ``strength`` pseudo-rollouts, so even a problem
    never drawn is predicted from the problems like it (DOTS's idea, with the cluster as the similarity).
    """

    mode: str = "flat"
    """``flat`` or ``cluster`` (needs cluster labels: ``data.group_key``, or the built-in task's levels)."""
    strength: float = 4.0
    """With ``mode=cluster``: pseudo-rollouts the cluster's pass rate counts for in each problem's prior."""
    discount: float = 0.98
    """With ``mode=cluster``: weight a cluster's pooled evidence keeps per step, so it follows the policy."""
    refresh_steps: int = 10
    """With ``mode=cluster`` and ``prioritized``: steps between two re-scorings of every waiting problem
    under the clusters' current rates (heap keys are static between them)."""

    def _problems(self) -> Problems:
        yield from one_of("mode", self.mode, ("flat", "cluster"))
        yield from in_range("strength", self.strength, 0.0, 1e6, lo_open=True)
        yield from in_range("discount", self.discount, 0.0, 1.0, lo_open=True)
        yield from at_least("refresh_steps", self.refresh_steps, 1)


@dataclass(frozen=True)
class MoppsConfig:
    """MoPPS (Qu et al., arXiv 2507.04632) as published: a Beta posterior per problem, decayed toward its
    prior at every visit, Thompson draws over uniformly drawn candidates, the B draws closest to a target."""

    decay: float = 0.5
    """λ: at each visit the evidence so far keeps this weight before the new group is added
    (α ← λα + (1 − λ)α₀ + s); 0.5 is the paper's Countdown / Geometry3k setting, 1 its MATH one."""
    candidates: int = 8
    """Each batch of B draws candidates x B problems uniformly (the paper's ``ts_ratio``)."""
    target: float = 0.5
    """The B candidates whose posterior draw is closest to this pass rate are served."""
    prior_successes: float = 1.0
    """α₀ of the flat prior (the paper's Beta(1, 1))."""
    prior_failures: float = 1.0
    """β₀ of the flat prior."""

    def _problems(self) -> Problems:
        yield from in_range("decay", self.decay, 0.0, 1.0)
        yield from at_least("candidates", self.candidates, 2)
        yield from in_range("target", self.target, 0.0, 1.0)
        yield from in_range("prior_successes", self.prior_successes, 0.0, 1e6, lo_open=True)
        yield from in_range("prior_failures", self.prior_failures, 0.0, 1e6, lo_open=True)


@dataclass(frozen=True)
class GresoConfig:
    """GRESO (Li et al., arXiv 2506.02177) as published: skip a problem before any rollout with probability
    1 − max(p^k, ``floor``) after k consecutive easy (or hard) groups, with p_easy / p_hard steered each step
    toward a zero-variance target. ``trainer.fill=signal`` makes it the paper's full method (dynamic sampling)."""

    easy_threshold: float = 0.98
    """A group is easy when its mean reward is >= this."""
    hard_threshold: float = 0.11
    """A group is hard when its mean reward is <= this."""
    p_easy: float = 0.5
    """Initial keep base of the easy side (skip probability 1 − max(p_easy^k, floor))."""
    p_hard: float = 0.5
    """Initial keep base of the hard side."""
    target: float = 0.25
    """Zero-variance share of the generated groups the steering aims for ..."""
    easy_share: float = 0.3333333333333333
    """... of which this share is easy groups and the rest hard ("more exploration on hard examples")."""
    adjust: float = 0.01
    """Change of p_easy / p_hard per step: down when its side's share of the step's groups is at or above
    its target (skip more), up otherwise."""
    min_p: float = 0.05
    """Least keep base."""
    max_p: float = 0.95
    """Largest keep base."""
    floor: float = 0.01
    """A skip candidate is still tried with at least this probability."""

    def _problems(self) -> Problems:
        yield from in_range("easy_threshold", self.easy_threshold, 0.0, 1.0)
        yield from in_range("hard_threshold", self.hard_threshold, 0.0, 1.0)
        if self.hard_threshold >= self.easy_threshold:
            yield "hard_threshold", f"must be below easy_threshold ({self.easy_threshold}), got {self.hard_threshold}"
        yield from in_range("min_p", self.min_p, 0.0, 1.0)
        yield from in_range("max_p", self.max_p, self.min_p, 1.0)
        yield from in_range("p_easy", self.p_easy, self.min_p, self.max_p)
        yield from in_range("p_hard", self.p_hard, self.min_p, self.max_p)
        yield from in_range("target", self.target, 0.0, 1.0)
        yield from in_range("easy_share", self.easy_share, 0.0, 1.0)
        yield from in_range("adjust", self.adjust, 0.0, 1.0)
        yield from in_range("floor", self.floor, 0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class RandomSkipConfig:
    """A control for skipping arms: a fixed random share of the pool is skipped at every draw, whatever its
    history (skipping with no prediction: fewer problems, more draws of each)."""

    rate: float = 0.0
    """Share of the pool (so of uniform draws) skipped; set it to the share a skipping arm skipped."""

    def _problems(self) -> Problems:
        yield from in_range("rate", self.rate, 0.0, 1.0, hi_open=True)


@dataclass(frozen=True)
class OracleConfig:
    """An upper bound, not a method: selection by each problem's pass rate under the current policy, measured
    by ``rollouts`` extra rollouts per problem every ``every_steps`` steps that are **not** charged to the
    budget. A problem is drawn with probability ∝ max(its chance that a group of G carries signal, ``floor``)."""

    rollouts: int = 16
    """Rollouts per problem of each measurement."""
    every_steps: int = 25
    """Steps between two measurements of the whole pool (the first is before step 1)."""
    floor: float = 0.01
    """Least selection weight, so a problem measured as always solved or failed can still be drawn."""

    def _problems(self) -> Problems:
        yield from at_least("rollouts", self.rollouts, 1)
        yield from at_least("every_steps", self.every_steps, 1)
        yield from in_range("floor", self.floor, 0.0, 1.0, lo_open=True)


SELECTIONS = ("greedy", "proportional", "softmax")


@dataclass(frozen=True)
class PrioritizedConfig:
    """How the ``prioritized`` sampler scores, parks and chooses problems.

    Every default here reproduces the paper's method (greedy top-B by the latest group's p̂(1-p̂),
    parked after one all-pass or all-fail group); the ``paper`` sampler ignores this group and always
    behaves so. Other samplers use the paper's scoring too.
    """

    selection: str = "greedy"
    """``greedy``: the B highest priorities (a max-heap); ``proportional``: draws without replacement
    with probability ∝ (ω + eps)^alpha; ``softmax``: ∝ exp(ω / temperature). Stochastic selection
    keeps every active problem in play instead of serving the same p̂ ≈ 0.5 problems again and again."""
    alpha: float = 1.0
    """With ``selection=proportional``: 0 is uniform over the active problems, 1 fully proportional."""
    eps: float = 1e-3
    """With ``selection=proportional``: added to every priority so no active problem has zero chance."""
    temperature: float = 0.05
    """With ``selection=softmax``: lower is greedier (ω spans [0, 0.25])."""
    uniform_mix: float = 0.0
    """Share of every batch drawn uniformly from every problem not in flight, parked ones included
    (stochastically rounded, so the share holds on average)."""
    priority: str = "point"
    """``point``: ω = p̂(1-p̂) of the evidence (``buffer.stats``); ``posterior``: ω = E[p(1-p)] under a
    Beta(prior_successes + s, prior_failures + f) posterior over every visit's s successes and f
    failures (down-weighted with ``stats=decayed``), which never reaches 0 after one group."""
    prior_successes: float = 1.0
    """With ``priority=posterior``: pseudo-count of successes in the Beta prior."""
    prior_failures: float = 1.0
    """With ``priority=posterior``: pseudo-count of failures in the Beta prior."""
    park_after: int = 1
    """Park a problem only after this many consecutive all-pass (or all-fail) groups; until then it
    stays active (with ``priority=point`` at ω = 0, served last)."""
    age_bonus: float = 0.0
    """With ``selection=greedy``: priority grows by this much per step since the last visit, so a
    problem waits at most about unseen_priority / age_bonus steps longer than any problem that became
    active after it (the heap keys stay static: ω - age_bonus * last_visit orders the same)."""

    def _problems(self) -> Problems:
        yield from one_of("selection", self.selection, SELECTIONS)
        yield from in_range("alpha", self.alpha, 0.0, 4.0)
        yield from in_range("eps", self.eps, 0.0, 1.0, lo_open=True)
        yield from in_range("temperature", self.temperature, 1e-3, 100.0)
        yield from in_range("uniform_mix", self.uniform_mix, 0.0, 1.0, hi_open=True)
        yield from one_of("priority", self.priority, ("point", "posterior"))
        yield from in_range("prior_successes", self.prior_successes, 0.0, 1e6, lo_open=True)
        yield from in_range("prior_failures", self.prior_failures, 0.0, 1e6, lo_open=True)
        yield from in_range("park_after", self.park_after, 1, 1000)
        yield from in_range("age_bonus", self.age_bonus, 0.0, 1.0)
        if self.age_bonus > 0 and self.selection != "greedy":
            yield "age_bonus", (f"applies to selection=greedy only (stochastic selection gives every problem "
                                f"a chance each step), got selection={self.selection!r}")


PAPER = PrioritizedConfig(selection="greedy", uniform_mix=0.0, priority="point", park_after=1, age_bonus=0.0)
"""The paper's method; what the ``paper`` sampler (and every sampler but ``prioritized``) uses."""


@dataclass(frozen=True)
class BufferConfig:
    """The priority buffer: per-problem statistics, pools and the sampler that serves batches."""

    sampler: str = "uniform"
    """The default, ``uniform``, follows the prioritization study (benchmarks/results/prioritization/): no
    prioritized sampler beat it per generated rollout in any of three regimes, and it trains on the fewest
    tokens for its accuracy. One of ``prioritized`` (by ω, tuned by ``buffer.prioritized``), ``paper`` (the paper's method
    exactly: greedy top-B, park after one zero-variance group, periodic retest), ``uniform``, ``per``,
    ``prompt_replay``, ``dapo_filter``, ``thompson`` (Thompson selection over a discounted Beta posterior,
    ``buffer.thompson``), ``mopps`` (MoPPS as published, ``buffer.mopps``), ``skip`` (uniform with an adaptive
    pre-rollout skip, ``buffer.skip``), ``greso`` (GRESO's pre-rollout skip as published, ``buffer.greso``),
    ``random_skip`` (a control: a fixed random share of the pool skipped, ``buffer.random_skip``) or ``oracle``
    (an upper bound: selection by pass rates measured with uncharged rollouts, ``buffer.oracle``)."""
    success_threshold: float = 0.5
    """A rollout succeeds when its reward >= this; rewards need not be binary."""
    unseen_priority: float = 0.25
    """Priority of a never-tried problem; 0.25 is the largest p(1-p), so each is tried once early."""
    stats: str = "latest"
    """``latest``: p̂ from the latest group only; ``decayed``: p̂ from all visits, old ones down-weighted."""
    decay: float = 0.5
    """With ``stats=decayed``: weight that earlier evidence keeps at each new visit, in [0, 1)."""
    retest: RetestConfig = field(default_factory=RetestConfig)
    prioritized: PrioritizedConfig = field(default_factory=PrioritizedConfig)
    per: PERConfig = field(default_factory=PERConfig)
    prompt_replay: PromptReplayConfig = field(default_factory=PromptReplayConfig)
    dapo_filter: DapoFilterConfig = field(default_factory=DapoFilterConfig)
    thompson: ThompsonConfig = field(default_factory=ThompsonConfig)
    skip: SkipConfig = field(default_factory=SkipConfig)
    mopps: MoppsConfig = field(default_factory=MoppsConfig)
    greso: GresoConfig = field(default_factory=GresoConfig)
    random_skip: RandomSkipConfig = field(default_factory=RandomSkipConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)

    @staticmethod
    def sampler_names() -> list[str]:
        return sampler_names()

    def _unused_groups(self) -> set[str]:
        """The sampler settings groups the chosen sampler does not read (each sampler names its own)."""
        if self.sampler not in sampler_names():
            return set()
        from rlpp.buffer.samplers import SAMPLERS, sampler_class

        every = {g for cls in SAMPLERS.values() for g in cls.config_groups}
        return every - set(sampler_class(self).config_groups)

    def _problems(self) -> Problems:
        yield from one_of("sampler", self.sampler, sampler_names())
        if self.prior.mode == "cluster" and self.sampler in sampler_names():
            from rlpp.buffer.samplers import sampler_class

            if not sampler_class(self).reads_prior(self):
                yield "prior.mode", (f"cluster is read by thompson, mopps, skip, greso and prioritized with "
                                     f"prioritized.priority=posterior; buffer.sampler={self.sampler} would ignore it")
        yield from in_range("unseen_priority", self.unseen_priority, 0.0, 0.25, lo_open=True)
        yield from one_of("stats", self.stats, ("latest", "decayed"))
        yield from in_range("decay", self.decay, 0.0, 1.0, hi_open=True)
