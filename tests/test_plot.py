"""``rlpp.plot.plot_run``: the figures of one run from a synthetic ``metrics.jsonl``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from rlpp.plot import FIGURES, plot_run, series


def write_run(folder, steps=40, eval_every=10, dev=True, zero_variance=True, pools=True):
    """A metrics.jsonl as the trainer writes it: an evaluation at step 0, then per step its metrics
    (a NaN loss at step 3) and an evaluation every ``eval_every`` steps."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"step": 0, "eval/accuracy": 0.3, "rollouts": 0, **({"dev/accuracy": 0.28} if dev else {})}]
    for step in range(1, steps + 1):
        r = {"step": step, "rollouts": 128 * step, "rollout/pass_rate": float(np.clip(0.3 + 0.005 * step + 0.05 * rng.standard_normal(), 0, 1)),
             "train/loss": "nan" if step == 3 else 0.1, "note": "text"}
        if zero_variance:
            r["rollout/zero_variance_frac"] = float(0.6 - 0.005 * step)
        if pools:
            r.update({"buffer/heap": 200 - 3 * step, "buffer/solved": 2 * step, "buffer/unsolved": step, "buffer/in_flight": 0})
        records.append(r)
        if step % eval_every == 0:
            e = {"step": step, "eval/accuracy": 0.3 + 0.004 * step, "rollouts": 128 * step}
            records.append({**e, **({"dev/accuracy": 0.28 + 0.004 * step} if dev else {})})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def valid_png(path, width=800, height=500):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    assert image[..., :3].std() > 0  # something drawn, not a blank canvas


def test_plot_run_writes_three_valid_pngs(tmp_path):
    run = write_run(tmp_path / "run")
    paths = plot_run(run)
    assert paths == [run / "plots" / name for name in FIGURES]
    for p in paths:
        valid_png(p)


def test_missing_series_are_left_out_with_a_note(tmp_path, caplog):
    run = write_run(tmp_path / "run", dev=False, zero_variance=False)
    plot_run(run)  # a first call writes every figure
    run = write_run(tmp_path / "run", dev=False, zero_variance=False, pools=False)
    with caplog.at_level(logging.WARNING, logger="rlpp.plot"):
        paths = plot_run(run)
    assert [p.name for p in paths] == ["accuracy_vs_rollouts.png", "pass_rate.png"]
    assert not (run / "plots" / "buffer_pools.png").exists()  # the stale figure of the first call is gone
    for p in paths:
        valid_png(p)
    text = caplog.text
    assert "pass_rate.png: left out (not in metrics.jsonl): rollout/zero_variance_frac" in text
    assert "buffer_pools.png: not written, metrics.jsonl has none of buffer/heap" in text
    assert "dev/accuracy" not in text  # optional: runs without trainer.eval_dev have none


def test_a_folder_without_metrics_is_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^\S*metrics\.jsonl: no such file \(is \S+ an rlpp run folder\?\)$"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl: holds no records yet"):
        plot_run(tmp_path)
    assert not (tmp_path / "plots").exists()


def test_series_keeps_the_last_record_of_a_step_and_reads_non_finite_values():
    records = [{"step": 1, "a": 1.0, "rollouts": 8}, {"step": 2, "a": "nan", "rollouts": 16},
               {"step": 2, "a": 3.0, "rollouts": 16}, {"step": 3, "b": 1}, {"step": 4, "a": "inf", "rollouts": 32}]
    x, y = series(records, "a", x="rollouts")
    assert x.tolist() == [8, 16, 32] and y[:2].tolist() == [1.0, 3.0] and y[2] == np.inf
