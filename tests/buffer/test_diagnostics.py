"""The report's diagnostics of a sampler: prediction quality (Spearman's ρ, AUROC of the zero-variance
prediction), coverage, the longest gap between visits, forgetting."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rlpp.buffer import PriorityBuffer
from rlpp.buffer.diagnostics import auroc, ranks, spearman
from rlpp.config.schema import BufferConfig
from tests.buffer.buffer_helpers import rewards_for
from tests.buffer.test_anchors import serve


def brute_auroc(score, positive):
    pos = [s for s, y in zip(score, positive) if y]
    neg = [s for s, y in zip(score, positive) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_rank_statistics_match_their_definitions_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 200).astype(float)
    y = x + rng.integers(0, 3, 200)
    r = ranks(np.array([3.0, 1.0, 3.0, 2.0]))
    assert r.tolist() == [3.5, 1.0, 3.5, 2.0]
    rx, ry = ranks(x), ranks(y)
    assert spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))
    pos = rng.random(200) < 0.3
    score = np.round(rng.random(200) + pos * 0.3, 1)
    assert auroc(score, pos) == pytest.approx(brute_auroc(score, pos))
    assert math.isnan(auroc(score, np.zeros(200, dtype=bool)))


def test_every_draw_is_logged_with_the_prediction_made_when_it_was_drawn():
    """thompson predicts its posterior mean at draw time; the log pairs it with what the group showed,
    and a problem it has no evidence for is predicted at its prior mean (0.5 with Beta(1, 1))."""
    buf = PriorityBuffer(BufferConfig(sampler="thompson"), 4, seed=1)
    serve(buf, [0, 1], [8, 0])  # step 1: first draws, posterior mean 0.5 each
    got = buf.sample(4)  # step 2: problem 0's posterior mean is 9/10 (discounted a little), 1's ~1/10
    predicted = dict(zip(got.ids.tolist(), buf.sampler.predict(got.ids).tolist()))
    buf.update(got.ids, rewards_for([8, 8, 8, 8], 8))
    log = buf.prediction_log()
    assert log["predicted"][:2].tolist() == [0.5, 0.5] and sorted(log["realized"][:2].tolist()) == [0.0, 1.0]
    order = got.ids.tolist()
    np.testing.assert_allclose(log["predicted"][2:], [predicted[i] for i in order], rtol=1e-6)
    assert log["zero_var"].all() and log["sizes"].tolist() == [8] * 6


def test_coverage_gaps_and_forgetting_are_counted_for_a_sampler_that_never_parks():
    buf = PriorityBuffer(BufferConfig(sampler="uniform"), 6, seed=2)
    serve(buf, [0, 1, 2], [8, 8, 3])  # step 1
    serve(buf, [0, 1], [8, 5])  # step 2: 0 stays solved, 1 fails once: forgotten
    for _ in range(3):  # steps 3..5: nothing served
        buf.release(buf.sample(1).ids)
    serve(buf, [0], [2])  # step 6: a gap of 4 steps since step 2, and 0 forgotten too
    d = buf.diagnostics()
    assert d["coverage"] == pytest.approx(3 / 6)
    assert d["longest_gap"] == 4
    assert d["solved_revisits"] == 3 and d["forgetting_rate"] == pytest.approx(2 / 3)
    assert d["draws_per_problem"] == pytest.approx(6 / 6) and d["groups_logged"] == 6
    assert d["coverage_half_d"] == pytest.approx(3 / 6)  # D = 1: at least one visit


def test_a_perfect_predictor_scores_one_and_a_constant_one_is_uninformative():
    """The oracle with exact rates on a pool of always-solved and never-solved problems: ρ = 1, AUROC = 1."""
    buf = PriorityBuffer(BufferConfig(sampler="oracle"), 40, seed=3)
    rates = np.where(np.arange(40) < 20, 1.0, 0.0)
    rates[[0, 20]] = 0.5
    buf.set_oracle_rates(np.arange(40), rates)
    for _ in range(5):
        got = buf.sample(8)
        succ = (rates[got.ids] * 8).astype(int)
        buf.update(got.ids, rewards_for(succ, 8))
    d = buf.diagnostics()
    assert d["prediction_spearman"] == pytest.approx(1.0) or math.isnan(d["prediction_spearman"])
    log = buf.prediction_log()
    if (~log["zero_var"]).any():
        assert d["zero_variance_auroc"] == pytest.approx(1.0)
    uniform = PriorityBuffer(BufferConfig(sampler="uniform"), 40, seed=3)
    got = uniform.sample(40)
    uniform.update(got.ids, rewards_for((rates[got.ids] * 8).astype(int), 8))
    assert uniform.diagnostics()["zero_variance_auroc"] == pytest.approx(0.5)  # every first draw predicted alike
