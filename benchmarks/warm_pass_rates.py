"""The warm model's pass-rate histogram at k = G over a run's training pool, overall and per level.

This is what a regime *is* for prioritization: how many training problems a group of G samples from the
starting policy always solves (k = G), never solves (k = 0), or splits. It loads (or warm-starts, once,
cached) the model of a training config, samples G completions per training problem with the HF engine at
the rollout temperature, scores them with the run's reward and counts successes.

    python benchmarks/warm_pass_rates.py configs/tiny.yaml                        # the rare regime
    python benchmarks/warm_pass_rates.py configs/tiny.yaml model.warmstart.target_accuracy=0.65 \
        --json benchmarks/results/regimes/capable.json

The ablation regimes (configs/ablate/{rare,capable,mixed}.yaml) name their training settings; the study
driver (benchmarks/prioritization_study.py) runs this for each and puts the histograms in its report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from rlpp.config.loader import load_config
from rlpp.data.loader import load_problems
from rlpp.models.tiny import load_tokenizer
from rlpp.recipes.warmstart import prepare_model
from rlpp.reward.scorer import RewardScorer
from rlpp.rollout.engine import Sampling
from rlpp.rollout.hf_engine import HFEngine
from rlpp.rollout.worker import encode_prompts


def pass_rate_histogram(config: str, overrides: list[str], seed: int = 0) -> dict:
    """Successes out of G per training problem of ``config``, as a histogram (overall and per level)."""
    cfg = load_config(config, overrides)
    train, dev, held_out = load_problems(cfg.data)
    model_path, info = prepare_model(cfg, dev, held_out)
    tok = load_tokenizer(model_path, cfg.model.trust_remote_code)
    engine = HFEngine(model_path, seed=seed, dtype=cfg.model.dtype)
    g = cfg.rollout.group_size
    t0 = time.perf_counter()
    prompts = encode_prompts(tok, train.prompts, cfg.data)
    groups = engine.generate(prompts, Sampling(n=g, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                                               max_new_tokens=cfg.rollout.max_new_tokens, seed=seed))
    texts = [tok.decode(c.token_ids, skip_special_tokens=True) for grp in groups for c in grp]
    scorer = RewardScorer(cfg.reward)
    try:
        scores, _ = scorer.score(texts, [a for a in train.answers for _ in range(g)])
    finally:
        scorer.close()
    k = (np.asarray(scores).reshape(len(train), g) >= cfg.buffer.success_threshold).sum(axis=1)
    hist = np.bincount(k, minlength=g + 1)
    out = {"config": config, "overrides": overrides, "group_size": g, "problems": len(train),
           "warmstart_dev_accuracy": info.get("dev_accuracy"), "histogram": hist.tolist(),
           "always_solved": float((k == g).mean()), "never_solved": float((k == 0).mean()),
           "zero_variance": float(((k == 0) | (k == g)).mean()), "mean_pass_rate": float(k.mean() / g),
           "seconds": round(time.perf_counter() - t0, 1)}
    if train.levels is not None:
        levels = np.asarray(train.levels)
        out["by_level"] = {int(lv): np.bincount(k[levels == lv], minlength=g + 1).tolist() for lv in np.unique(levels)}
    return out


def format_histogram(res: dict) -> str:
    g = res["group_size"]
    dev = res["warmstart_dev_accuracy"]
    start = "pretrained, not warm-started" if dev is None else f"warm dev accuracy {dev:.3f}"
    lines = [f"{res['problems']} training problems, G = {g}, {start}: "
             f"always solved {res['always_solved']:.1%}, never solved {res['never_solved']:.1%}, "
             f"zero-variance {res['zero_variance']:.1%}, mean pass rate {res['mean_pass_rate']:.3f}",
             "| level | " + " | ".join(f"{j}/{g}" for j in range(g + 1)) + " |",
             "| --- | " + " | ".join("---:" for _ in range(g + 1)) + " |"]
    rows = [("all", res["histogram"])] + [(str(lv), h) for lv, h in res.get("by_level", {}).items()]
    lines += [f"| {name} | " + " | ".join(str(x) for x in h) + " |" for name, h in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="training key=value overrides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    res = pass_rate_histogram(args.config, args.overrides, args.seed)
    if args.json:  # first: a measurement of minutes is not lost to a formatting error
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(format_histogram(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
