"""``load_problems(cfg.data)``: the (train, dev, eval) problem sets of a run.

``data.source=synthetic``: the arithmetic task (``rlpp.data.synthetic``) with ``data.synthetic``.
``data.source=dataset``: ``data.path`` is a local ``.jsonl``/``.json``/``.parquet`` file or a Hugging
Face hub dataset (``data.split``); rows give ``data.prompt_key`` and ``data.answer_key``.

Held-out problems, for a dataset:
  * with ``data.eval_path``: eval is that file or dataset (``data.eval_split``); dev is split off the
    training problems;
  * without: eval (``data.eval_size`` problems) and then dev are split off the training problems.
  Dev is min(200, max(1, 10% of the training problems left after eval)) problems. Both are drawn
  with a fixed seed (``SPLIT_SEED``), so a file always splits the same way, and every split keeps the
  file's order. A prompt found in both train and eval is logged as a warning (not removed).

For every source: ``data.template`` is applied to each prompt; ``data.eval_size`` caps eval (a
fixed-seed sample when there are more); ``data.max_problems`` keeps the first that many training
problems, after held-out problems are taken out.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from rlpp.config.schema import DataConfig
from rlpp.data.problems import ProblemSet
from rlpp.data.readers import DataError, read_pairs
from rlpp.data.synthetic import make_arithmetic

__all__ = ["DEV_FRACTION", "MAX_DEV", "SPLIT_SEED", "apply_template", "check_template", "load_problems"]

logger = logging.getLogger(__name__)

SPLIT_SEED = 0
"""Seed of the held-out draws from a dataset (fixed: the split belongs to the data, not to a run)."""
MAX_DEV = 200
"""Most dev problems split off a dataset's training problems."""
DEV_FRACTION = 0.1
"""Share of a dataset's training problems (after eval) that goes to dev, up to MAX_DEV."""


def load_problems(cfg: DataConfig) -> tuple[ProblemSet, ProblemSet, ProblemSet]:
    """The (train, dev, eval) problem sets ``cfg`` describes; raises DataError on malformed data."""
    check_template(cfg.template)
    if cfg.source == "synthetic":
        s = cfg.synthetic
        train, dev, held_out = make_arithmetic(s.num_train, s.num_dev, s.num_eval, s.max_level, s.seed, s.level_weights)
    elif cfg.source == "dataset":
        train, dev, held_out = _dataset_splits(cfg)
    else:
        raise ValueError(f"data.source must be 'synthetic' or 'dataset', got {cfg.source!r}")

    if len(held_out) > cfg.eval_size:
        held_out = held_out.subset(_sample(len(held_out), cfg.eval_size))
    if 0 < cfg.max_problems < len(train):
        train = train.subset(range(cfg.max_problems))
    train, dev, held_out = (apply_template(cfg.template, p) for p in (train, dev, held_out))
    _warn_overlap(train, held_out)
    logger.info("problems: %d train, %d dev, %d eval (from %s)", len(train), len(dev), len(held_out), train.source)
    return train, dev, held_out


def check_template(template: str) -> None:
    """Raise DataError unless ``template`` formats with ``prompt`` as its only field."""
    try:
        template.format(prompt="?")
    except (KeyError, IndexError, AttributeError, ValueError) as e:
        raise DataError(f"data.template {template!r} is not a valid template: {type(e).__name__}: {e}. "
                        "Its only field is {prompt}; write literal braces as {{ and }}") from None


def apply_template(template: str, problems: ProblemSet) -> ProblemSet:
    """``problems`` with each prompt put through ``template.format(prompt=...)``."""
    if template == "{prompt}":
        return problems
    return dataclasses.replace(problems, prompts=[template.format(prompt=p) for p in problems.prompts])


def _dataset_splits(cfg: DataConfig) -> tuple[ProblemSet, ProblemSet, ProblemSet]:
    prompts, answers, source, groups = read_pairs(cfg.path, cfg.split, cfg.prompt_key, cfg.answer_key,
                                                  config_key="data.path", answer_from=cfg.answer_from,
                                                  group_key=cfg.group_key)
    pool = ProblemSet(prompts=prompts, answers=answers, source=source, groups=groups)
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(pool))
    if cfg.eval_path:
        e_prompts, e_answers, e_source, e_groups = read_pairs(cfg.eval_path, cfg.eval_split, cfg.prompt_key,
                                                              cfg.answer_key, config_key="data.eval_path",
                                                              answer_from=cfg.answer_from, group_key=cfg.group_key)
        held_out = ProblemSet(prompts=e_prompts, answers=e_answers, source=e_source, groups=e_groups)
        n_eval = 0
    else:
        n_eval = cfg.eval_size
        held_out = pool.subset(np.sort(order[:n_eval]))
    rest = len(pool) - n_eval
    n_dev = min(MAX_DEV, max(1, int(rest * DEV_FRACTION)))
    if rest - n_dev < 1:
        raise DataError(f"{source}: {len(pool)} problems are too few to split off "
                        + (f"data.eval_size={n_eval} held-out problems and " if n_eval else "")
                        + f"{n_dev} dev problems and keep some for training; "
                        + ("lower data.eval_size or set data.eval_path" if n_eval else "add problems"))
    dev = pool.subset(np.sort(order[n_eval:n_eval + n_dev]))
    train = pool.subset(np.sort(order[n_eval + n_dev:]))
    return train, dev, held_out


def _sample(n: int, k: int) -> np.ndarray:
    """A fixed-seed choice of k of range(n), in increasing order."""
    return np.sort(np.random.default_rng(SPLIT_SEED).choice(n, size=k, replace=False))


def _warn_overlap(train: ProblemSet, held_out: ProblemSet) -> None:
    seen = set(held_out.prompts)
    shared = sum(p in seen for p in train.prompts)
    if shared:
        logger.warning("%d training prompts also occur in eval (%s); held-out accuracy will be optimistic",
                       shared, held_out.source)
