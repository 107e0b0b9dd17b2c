"""Figures of one training run, drawn from its ``metrics.jsonl`` into ``RUN_DIR/plots/`` (``rlpp plot
RUN_DIR``, and at the end of ``rlpp train``). Same style as the ablation report (``rlpp.ablate.plots``:
matplotlib Agg, 800 x 500 px):

- ``accuracy_vs_rollouts.png``: held-out accuracy (``eval/accuracy``) vs rollouts generated, and dev
  accuracy (``dev/accuracy``) when the run measured it;
- ``pass_rate.png``: ``rollout/pass_rate`` and ``rollout/zero_variance_frac`` per step, raw and as a
  trailing moving average;
- ``buffer_pools.png``: the buffer's pools (``buffer/heap``, ``solved``, ``unsolved``, ``in_flight``)
  per step.

A series the run did not log is left out with a warning (and named under its figure); a figure with
none of its series is not written (a stale one from an earlier call is removed).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from rlpp.ablate.plots import FIGSIZE, _plt, _save
from rlpp.ablate.results import POOLS
from rlpp.ablate.stats import moving_average
from rlpp.metrics import read_metrics

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
FIGURES = ("accuracy_vs_rollouts.png", "pass_rate.png", "buffer_pools.png")


class RunFolderError(FileNotFoundError):
    """The folder given is not a run folder with metrics to plot."""


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the run's figures into ``run_dir/plots/`` and return the paths written.

    Raises ``FileNotFoundError`` when ``run_dir/metrics.jsonl`` does not exist, ``ValueError`` when it
    holds no records; both messages are one line naming the file."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise RunFolderError(f"{path}: no such file (is {run_dir} an rlpp run folder?)")
    records = read_metrics(path)
    if not records:
        raise RunFolderError(f"{path}: holds no records yet, nothing to plot")
    out = run_dir / PLOTS_DIR
    out.mkdir(exist_ok=True)
    name = run_dir.resolve().name
    written = []
    for figure, draw in zip(FIGURES, (_accuracy, _pass_rate, _pools)):
        target = out / figure
        if draw(records, name, target):
            written.append(target)
        else:
            target.unlink(missing_ok=True)
    return written


def series(records: list[dict], key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(x, value) of every record holding ``key``, by step; a step logged twice keeps its last record.
    Non-finite values (stored as strings in the JSONL) are NaN."""
    by_step: dict[int, tuple[float, float]] = {}
    for r in records:
        if key in r:
            by_step[r["step"]] = (_number(r.get(x)), _number(r[key]))
    pairs = [by_step[s] for s in sorted(by_step)]
    return np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float)


def _number(v) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)  # "nan", "inf"
        except ValueError:
            return math.nan
    return math.nan


def _step_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _missing_note(fig, missing: list[str]) -> None:
    if missing:
        fig.text(0.01, 0.01, "not in metrics.jsonl: " + ", ".join(missing), fontsize=7, color="gray")


def _skip(figure: Path, missing: list[str], present: bool) -> None:
    if missing:
        log.warning("%s: %s %s", figure.name, "left out (not in metrics.jsonl):" if present else
                    "not written, metrics.jsonl has none of", ", ".join(missing))


def _gather(records: list[dict], keys, path: Path, x: str = "step", required=None):
    """The series of ``keys`` that the run logged, and those of ``required`` (default: all) it did not;
    warns about the missing ones."""
    found = {k: series(records, k, x=x) for k in keys}
    found = {k: v for k, v in found.items() if len(v[0])}
    missing = [k for k in (keys if required is None else required) if k not in found]
    _skip(path, missing, bool(found))
    return found, missing


def _finish(fig, ax, title: str, missing: list[str], path: Path) -> bool:
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _missing_note(fig, missing)
    _save(fig, path)
    return True


def _accuracy(records: list[dict], name: str, path: Path) -> bool:
    plt = _plt()
    wanted = {"eval/accuracy": ("held-out (eval/accuracy)", "-"), "dev/accuracy": ("dev (dev/accuracy)", "--")}
    found, missing = _gather(records, wanted, path, x="rollouts", required=("eval/accuracy",))  # dev: optional
    if not found:
        return False
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for key, (x, y) in found.items():
        label, style = wanted[key]
        if np.isfinite(y).any():
            best = int(np.nanargmax(y))
            label += f": best {100 * y[best]:.1f}% at {x[best]:.0f} rollouts, last {100 * y[-1]:.1f}%"
        ax.plot(x, 100 * y, style, marker="o", ms=3, label=label)
    ax.set_xlabel("rollouts generated")
    ax.set_ylabel("greedy accuracy (%)")
    return _finish(fig, ax, f"{name}: accuracy vs rollouts", missing, path)


def _pass_rate(records: list[dict], name: str, path: Path) -> bool:
    plt = _plt()
    wanted = {"rollout/pass_rate": "pass rate (% of rollouts)",
              "rollout/zero_variance_frac": "zero-variance groups (% of groups)"}
    found, missing = _gather(records, wanted, path)
    if not found:
        return False
    window = max(1, round(max(len(v[0]) for v in found.values()) / 20))
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for key, (steps, y) in found.items():
        if window > 1:
            line, = ax.plot(steps, 100 * y, lw=0.8, alpha=0.35)
            ax.plot(steps, 100 * moving_average(y, window), color=line.get_color(), lw=1.8, label=wanted[key])
        else:
            ax.plot(steps, 100 * y, marker="o", ms=3, label=wanted[key])
    _step_axis(ax)
    ax.set_ylabel(f"% (faint: per step; bold: moving average over {window} steps)" if window > 1 else "% per step")
    ax.set_ylim(-2, 102)
    return _finish(fig, ax, f"{name}: pass rate and zero-variance groups per step", missing, path)


def _pools(records: list[dict], name: str, path: Path) -> bool:
    plt = _plt()
    found, missing = _gather(records, [f"buffer/{p}" for p in POOLS], path)
    if not found:
        return False
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for key, (steps, y) in found.items():
        ax.plot(steps, y, label=key.removeprefix("buffer/"))
    _step_axis(ax)
    ax.set_ylabel("problems")
    return _finish(fig, ax, f"{name}: buffer pools per step", missing, path)
