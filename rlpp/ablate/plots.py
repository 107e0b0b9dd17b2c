"""The report's PNG figures (matplotlib, Agg backend, 800 x 500 px). Each function takes the runs of
every arm (``{arm: [RunResult, ...]}``, finished runs only) and a path, and returns the path written."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from rlpp.ablate.results import POOLS, RunResult, buffer_snapshots
from rlpp.ablate.stats import mean_ci, moving_average

FIGSIZE, DPI = (8, 5), 100


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    return path


def accuracy_curves(arms: dict[str, list[RunResult]], target: float | None, path: Path) -> Path:
    """Held-out accuracy vs rollouts: mean over seeds with a 95% CI band (seeds interpolated onto the
    union of their evaluation points)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for arm, runs in arms.items():
        if not runs:
            continue
        grid, mean, half = accuracy_band(runs)
        line, = ax.plot(grid, 100 * mean, marker="o", ms=3, label=f"{arm} (n={len(runs)})")
        if np.isfinite(half).any():
            ax.fill_between(grid, 100 * (mean - half), 100 * (mean + half), color=line.get_color(), alpha=0.2)
    if target is not None and np.isfinite(target):
        ax.axhline(100 * target, color="gray", ls="--", lw=1, label="reference final mean")
    ax.set_xlabel("rollouts generated")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("Held-out accuracy vs rollouts (mean, 95% CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def accuracy_band(runs: list[RunResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rollouts grid, mean accuracy, CI half-width) over the seeds of one arm."""
    end = min(r.evals["rollouts"][-1] for r in runs)
    grid = np.unique(np.concatenate([r.evals["rollouts"] for r in runs]))
    grid = grid[grid <= end]
    curves = np.array([np.interp(grid, r.evals["rollouts"], r.evals["accuracy"]) for r in runs])
    stats = [mean_ci(curves[:, j]) for j in range(len(grid))]
    return grid, np.array([s[0] for s in stats]), np.array([s[1] for s in stats])


def smoothing_window(arms: dict[str, list[RunResult]]) -> int:
    longest = max((len(r.steps["step"]) for runs in arms.values() for r in runs), default=1)
    return max(1, round(longest / 20))


def step_curves(arms: dict[str, list[RunResult]], key: str, ylabel: str, title: str, path: Path) -> Path:
    """A per-step series, each seed smoothed by a trailing moving average, then averaged over seeds."""
    plt = _plt()
    window = smoothing_window(arms)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for arm, runs in arms.items():
        if runs:
            steps, mean = _seed_mean(runs, lambda r: moving_average(r.steps[key], window))
            ax.plot(steps, mean, label=f"{arm} (n={len(runs)})")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{ylabel}\n(moving average over {window} step{'s' if window > 1 else ''}, mean over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _seed_mean(runs: list[RunResult], series) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds by step index; seeds that ended earlier (costlier steps) drop out of the mean."""
    values = [series(r) for r in runs]
    longest = max(runs, key=lambda r: len(r.steps["step"]))
    padded = np.full((len(runs), len(longest.steps["step"])), np.nan)
    for i, v in enumerate(values):
        padded[i, : len(v)] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a step no seed logged)
        return longest.steps["step"], np.nanmean(padded, axis=0)


def pool_sizes(arms: dict[str, list[RunResult]], path: Path) -> Path:
    """Buffer pool sizes vs step, one panel per arm (mean over seeds)."""
    plt = _plt()
    names = [a for a, runs in arms.items() if runs]
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=FIGSIZE, sharey=True, squeeze=False)
    for ax, arm in zip(axes.flat, names):
        for pool in POOLS:
            steps, mean = _seed_mean(arms[arm], lambda r, p=pool: r.steps[p])
            ax.plot(steps, mean, label=pool)
        ax.set_title(arm, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("problems (mean over seeds)", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Buffer pool sizes vs step", fontsize=10)
    return _save(fig, path)


def pass_rate_heatmap(run: RunResult, levels: np.ndarray, path: Path) -> Path | None:
    """p̂ of every training problem at every evaluation of one run: rows sorted by difficulty level, then
    by final p̂ (unseen last); x = evaluation step. None when the run saved no snapshots."""
    snaps = buffer_snapshots(run.folder)
    if not snaps:
        return None
    plt = _plt()
    p = np.stack([s["p_hat"].astype(float) for _, s in snaps], axis=1)  # (problems, evaluations)
    final = np.where(np.isnan(p[:, -1]), np.inf, p[:, -1])  # within a level: lowest p̂ first, unseen last
    order = np.lexsort((final, levels))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgray")
    fig, ax = plt.subplots(figsize=FIGSIZE)
    im = ax.imshow(np.ma.masked_invalid(p[order]), aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=1)
    steps = [s for s, _ in snaps]
    ticks = np.linspace(0, len(steps) - 1, min(len(steps), 10)).round().astype(int)
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks])
    sorted_levels = levels[order]
    bounds = np.flatnonzero(np.diff(sorted_levels)) + 0.5
    for b in bounds:
        ax.axhline(b, color="white", lw=0.6)
    edges = np.concatenate([[-0.5], bounds, [len(order) - 0.5]])
    ax.set_yticks((edges[:-1] + edges[1:]) / 2, [f"L{lv}" for lv in np.unique(sorted_levels)], fontsize=7)
    ax.set_xlabel("evaluation step")
    ax.set_ylabel("training problems by difficulty level (then final p̂)")
    ax.set_title(f"{run.arm}, seed {run.seed}: pass rate p̂ per problem (gray: not yet seen)")
    fig.colorbar(im, ax=ax, label="p̂ (latest group)")
    return _save(fig, path)
