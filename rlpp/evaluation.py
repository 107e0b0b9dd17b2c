"""Evaluation of a policy on a problem split, shared by ``rlpp eval`` and the trainer's periodic evaluation.

Greedy accuracy always; with ``eval.k`` also pass@k from ``eval.samples`` sampled completions per
problem, by the unbiased estimator of Chen et al. (2021): for a problem with c correct of n samples,
pass@k = 1 - C(n - c, k) / C(n, k). Every figure carries the half-width of its 95% Student-t
confidence interval over problems (``..._ci95``), and is broken down by difficulty level (synthetic
task) or by ``data.group_key`` (datasets) when the problems have them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from rlpp.ablate.stats import mean_ci
from rlpp.data.problems import ProblemSet
from rlpp.rollout.engine import Sampling

Generate = Callable[[str, np.ndarray, Sampling], "RolloutResult"]  # noqa: F821 - RolloutGroup.generate


def pass_at_k(n: int, c: np.ndarray, k: int) -> np.ndarray:
    """Unbiased pass@k per problem from ``c`` correct of ``n`` samples (a product, so no huge binomials)."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= samples per problem ({n})")
    c = np.asarray(c, dtype=np.int64)
    out = np.ones(len(c), dtype=np.float64)
    for i, ci in enumerate(c):
        if n - ci >= k:  # else every k-subset holds a correct sample
            out[i] = 1.0 - float(np.prod(1.0 - k / np.arange(n - ci + 1, n + 1)))
    return out


def _breakdowns(problems: ProblemSet) -> list[tuple[str, np.ndarray]]:
    """(metric suffix, mask) per level or group of ``problems``."""
    out = []
    if problems.levels is not None:
        for level in np.unique(problems.levels):
            out.append((f"level{level}", problems.levels == level))
    if problems.groups is not None:
        labels = np.asarray(problems.groups, dtype=object)
        for g in sorted(set(problems.groups)):
            out.append((f"group_{re.sub(r'[^A-Za-z0-9_.-]+', '_', g)}", labels == g))
    return out


def evaluate(generate: Generate, problems: ProblemSet, split: str, *, max_new_tokens: int, threshold: float,
             k: Sequence[int] = (), samples: int = 0, temperature: float = 1.0, top_p: float = 1.0,
             seed: int | None = None) -> tuple[dict[str, float], list[dict]]:
    """Metrics named ``{split}/accuracy``, ``{split}/accuracy_ci95``, ``{split}/accuracy_level3`` (or
    ``_group_<label>``), ``{split}/pass@k`` and ``{split}/pass@k_ci95``; and one record per problem."""
    ids = np.arange(len(problems))
    greedy = generate(split, ids, Sampling(1, 0.0, 1.0, max_new_tokens))
    correct = (greedy.rewards[:, 0] >= threshold).astype(np.float64)
    metrics: dict[str, float] = {}
    _put(metrics, f"{split}/accuracy", correct)
    parts = _breakdowns(problems)
    for suffix, mask in parts:
        metrics[f"{split}/accuracy_{suffix}"] = float(correct[mask].mean())
    records = [{"id": int(i), "correct": bool(correct[i])} for i in ids]
    for i, r in enumerate(records):
        if problems.levels is not None:
            r["level"] = int(problems.levels[i])
        if problems.groups is not None:
            r["group"] = problems.groups[i]
    if k:
        n = samples or max(k)
        sampled = generate(split, ids, Sampling(n, temperature, top_p, max_new_tokens, seed))
        c = (sampled.rewards >= threshold).sum(axis=1)
        for r, ci in zip(records, c):
            r["samples_correct"] = int(ci)
        for kk in sorted(set(k)):
            per = pass_at_k(n, c, kk)
            _put(metrics, f"{split}/pass@{kk}", per)
            for suffix, mask in parts:
                metrics[f"{split}/pass@{kk}_{suffix}"] = float(per[mask].mean())
    return metrics, records


def _put(metrics: dict, name: str, values: np.ndarray) -> None:
    mean, half = mean_ci(values)
    metrics[name] = mean
    metrics[f"{name}_ci95"] = half if math.isfinite(half) else float("nan")


def eval_config_for(model: str, config: str | None, overrides: list[str]):
    """The config ``rlpp eval MODEL [CONFIG] [key=value ...]`` runs with, and the model folder it evaluates.

    MODEL may be a run folder written by ``rlpp train`` (its final ``model/``, with the run's ``config.yaml``),
    a checkpoint of one (``RUN/checkpoints/step_N``, with its run's config), an HF model folder, a ``.gguf``, or
    a hub name. The config is CONFIG, else the run's own, else the built-in defaults; then
    ``model.source=pretrained model.path=<the model folder>``; then the overrides. A local path that does
    not exist is an error naming it (not a hub name that fails to download)."""
    from pathlib import Path

    from rlpp import checkpoint
    from rlpp.config.loader import load_config
    from rlpp.config.schema import ConfigError

    path = Path(model).expanduser()
    if (path / checkpoint.MODEL_DIR / "config.json").is_file() and (path / "config.yaml").is_file():
        config = config or str(path / "config.yaml")
        model = str(path / checkpoint.MODEL_DIR)
    elif _looks_local(model) and not path.exists():
        raise ConfigError(f"{model}: no such folder (give a run folder, a checkpoint, a model folder or "
                          "a hub name)")
    elif config is None:
        run_config = path.resolve().parent.parent / "config.yaml"
        if (path / "config.json").is_file() and run_config.is_file():
            config = str(run_config)
    return load_config(config, ["model.source=pretrained", f"model.path={model}", *overrides]), model


def _looks_local(model: str) -> bool:
    """Whether MODEL names a local path rather than a hub repo ("org/name") or a packaged GGUF ("pkg:..."): it
    starts like a path, has more than one "/", its first part is a folder here (``runs/tiny`` when ``runs/``
    exists), or it is a ``.gguf`` file name."""
    from pathlib import Path

    if model.startswith("pkg:"):
        return False
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        return True
    if model.count("/") == 1:
        return Path(model.split("/")[0]).is_dir()
    return model.endswith(".gguf")


def run_eval(cfg, model: str) -> dict:
    """Evaluate ``model`` on ``cfg.eval.split`` through rollout actors (``cfg.rollout``: vLLM or HF) and
    return the report written to JSON."""
    import time

    import ray

    from rlpp.data.loader import load_problems
    from rlpp.distributed.groups import RolloutGroup
    from rlpp.distributed.placement import check_fits
    from rlpp.recipes.warmstart import prepare_model
    from rlpp.reward.registry import check_reward
    from rlpp.distributed.local import init_ray

    check_reward(cfg.reward.name)
    train, dev, held_out = load_problems(cfg.data)
    splits = {"eval": held_out, "dev": dev, "train": train}
    problems = splits[cfg.eval.split]
    path, _ = prepare_model(cfg, dev, held_out)
    init_ray(cfg)
    if cfg.ray.check_resources:
        check_fits([RolloutGroup.request_for(cfg, cfg.rollout.num_actors)])
    t0 = time.perf_counter()
    rollouts = RolloutGroup(cfg, path, {cfg.eval.split: problems}, seed=cfg.seed)
    try:
        ec = cfg.eval
        metrics, records = evaluate(rollouts.generate, problems, ec.split, max_new_tokens=cfg.rollout.max_new_tokens,
                                    threshold=cfg.buffer.success_threshold, k=ec.k, samples=ec.samples,
                                    temperature=ec.temperature, top_p=ec.top_p, seed=cfg.seed)
    finally:
        rollouts.shutdown()
        ray.shutdown()
    return {"model": model, "split": ec.split, "problems": len(problems), "source": problems.source,
            "engine": cfg.rollout.engine, "max_new_tokens": cfg.rollout.max_new_tokens, "k": list(ec.k),
            "samples": (ec.samples or max(ec.k)) if ec.k else 0, "temperature": ec.temperature,
            "seconds": round(time.perf_counter() - t0, 1), "metrics": metrics, "per_problem": records}


def format_report(report: dict) -> str:
    """The table ``rlpp eval`` prints: each figure with its 95% CI, then the breakdowns."""
    m, split = report["metrics"], report["split"]
    rows = []
    for name in [f"{split}/accuracy", *(f"{split}/pass@{k}" for k in sorted(set(report["k"])))]:
        half = m.get(f"{name}_ci95", float("nan"))
        ci = f" ± {100 * half:.1f}" if math.isfinite(half) else ""
        label = "greedy accuracy" if name.endswith("/accuracy") else name.split("/", 1)[1]
        rows.append((label, f"{100 * m[name]:.1f}%{ci}"))
    parts = sorted({k.split("_", 1)[1] for k in m if k.startswith(f"{split}/accuracy_") and not k.endswith("_ci95")})
    for part in parts:
        cells = [f"{100 * m[f'{split}/accuracy_{part}']:.1f}%"]
        cells += [f"pass@{k} {100 * m[f'{split}/pass@{k}_{part}']:.1f}%" for k in sorted(set(report["k"]))]
        rows.append((f"  {part}", ", ".join(cells)))
    width = max(len(k) for k, _ in rows)
    head = (f"rlpp eval: {report['model']} on {report['problems']} {split} problems ({report['source']}), "
            f"{report['engine']} engine" + (f", {report['samples']} samples at T={report['temperature']:g} for pass@k"
                                            if report["k"] else ""))
    return head + "\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows) + "\n  (± is the 95% CI over problems)"


def main_eval(model: str, config: str | None, overrides: list[str]) -> int:
    import json
    import logging
    from pathlib import Path

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, model = eval_config_for(model, config, overrides)
    report = run_eval(cfg, model)
    out = Path(cfg.eval.output) if cfg.eval.output else (
        (Path(model) if Path(model).is_dir() else Path.cwd()) / f"eval_{cfg.eval.split}.json")
    out.write_text(json.dumps(report, indent=1))
    print(format_report(report))
    print(f"  written to {out}")
    return 0
