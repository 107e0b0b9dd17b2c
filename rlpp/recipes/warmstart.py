"""Prepare the policy model folder every actor loads: a pretrained model as is, or the tiny model
built locally and warm-started by supervised training on the synthetic task.

The warm start stops once greedy accuracy on the dev split reaches ``target_accuracy`` (about 30%):
further along, most problems are always solved and their GRPO groups carry no signal. The result is
cached under ``cache_dir`` in a folder named by a hash of every setting that shapes it, written to a
temporary folder and renamed, so a half-written cache is never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from rlpp.config.schema import Config
from rlpp.data.problems import ProblemSet
from rlpp.models import ModelError
from rlpp.data.synthetic import ARITHMETIC_CHARS, make_arithmetic
from rlpp.models.tiny import build_char_tokenizer, build_tiny_model, load_tokenizer, save_model

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
DONE = "warmstart.json"


def prepare_model(cfg: Config, dev: ProblemSet, held_out: ProblemSet) -> tuple[str, dict]:
    """The folder of the initial policy, and facts about how it was made (for the run summary).

    ``dev`` decides when the warm start stops; neither it nor ``held_out`` is ever trained on."""
    if cfg.model.source == "pretrained":
        from rlpp.models.gguf import is_gguf_path, prepare_gguf

        if is_gguf_path(cfg.model.path):  # a .gguf file or pkg:DIST/FILE.gguf: its converted HF folder
            folder, info = prepare_gguf(cfg.model.path)
            return folder, {"gguf": info}
        _check_loads(cfg.model.path, cfg.model.trust_remote_code)
        return cfg.model.path, {}
    key = _cache_key(cfg)
    folder = Path(os.path.expanduser(cfg.model.warmstart.cache_dir)) / key
    if (folder / DONE).is_file():
        info = json.loads((folder / DONE).read_text())
        log.info("warm start: cached model %s (dev accuracy %.3f)", folder, info["dev_accuracy"])
        return str(folder), {**info, "cached": True}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
    try:
        info = _train(cfg, dev, set(held_out.prompts), tmp)
        (tmp / DONE).write_text(json.dumps(info, indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another run finished the same warm start first; use theirs
            if not (folder / DONE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder), {**info, "cached": False}


def _check_loads(path: str, trust_remote_code: bool) -> None:
    """Fail now, naming ``model.path``, if its config cannot be read (a typo, no hub access), rather than in
    every actor at once."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        local = "" if Path(path).expanduser().exists() else " (and there is no local folder of that name)"
        raise ModelError(f"model.path {path!r} does not load{local}: {first}") from e


def warmstart_seed(cfg: Config) -> int:
    """The seed the warm start trains with: ``model.warmstart.seed``, or the run's seed when it is -1."""
    seed = cfg.model.warmstart.seed
    return cfg.seed if seed < 0 else seed


def _cache_key(cfg: Config) -> str:
    ws = dataclasses.asdict(dataclasses.replace(cfg.model.warmstart, cache_dir=""))
    ws.pop("seed")  # folded into "seed" below: what matters is the seed used, not how it was chosen
    facts = {"v": FORMAT_VERSION, "tiny": dataclasses.asdict(cfg.model.tiny), "warmstart": ws,
             "synthetic": _synthetic_facts(cfg), "template": cfg.data.template,
             "reward": cfg.reward.name, "chars": ARITHMETIC_CHARS, "seed": warmstart_seed(cfg)}
    return "tiny-" + hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _synthetic_facts(cfg: Config) -> dict:
    facts = dataclasses.asdict(cfg.data.synthetic)
    if not facts["level_weights"]:
        del facts["level_weights"]  # even levels hash as they did before the key existed: caches stay valid
    return facts


def _train(cfg: Config, dev: ProblemSet, held_out_prompts: set[str], out: Path) -> dict:
    from rlpp.reward.scorer import RewardScorer
    from rlpp.rollout.engine import Sampling
    from rlpp.rollout.hf_engine import HFEngine

    ws = cfg.model.warmstart
    corpus = _corpus(cfg, held_out={*dev.prompts, *held_out_prompts})
    tok = build_char_tokenizer(ARITHMETIC_CHARS)
    model = build_tiny_model(cfg.model.tiny, tok, seed=warmstart_seed(cfg))
    gen = torch.Generator().manual_seed(warmstart_seed(cfg))
    rows = [(tok.encode(p, add_special_tokens=False), tok.encode(a, add_special_tokens=False) + [tok.eos_token_id])
            for p, a in zip(corpus.prompts, corpus.answers)]
    longest = max(len(p) + len(a) for p, a in rows)
    if longest > cfg.model.tiny.max_position:
        raise ValueError(f"a training problem needs {longest} tokens, more than model.tiny.max_position "
                         f"({cfg.model.tiny.max_position})")
    opt = torch.optim.AdamW(model.parameters(), lr=ws.lr)
    scorer = RewardScorer(cfg.reward)
    engine = HFEngine(model=model, seed=None)
    dev_prompts = [tok.encode(p, add_special_tokens=False) for p in dev.prompts]
    max_new = cfg.rollout.max_new_tokens

    def dev_accuracy() -> float:
        groups = engine.generate(dev_prompts, Sampling(n=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new))
        texts = [tok.decode(g[0].token_ids, skip_special_tokens=True) for g in groups]
        scores, _ = scorer.score(texts, dev.answers)
        return sum(s >= cfg.buffer.success_threshold for s in scores) / len(scores)

    t0, acc, step = time.perf_counter(), dev_accuracy(), 0
    while acc < ws.target_accuracy and step < ws.max_steps:
        model.train()
        for _ in range(ws.eval_every):
            idx = torch.randint(len(rows), (ws.batch_size,), generator=gen).tolist()
            loss = _sft_loss(model, [rows[i] for i in idx], tok.pad_token_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
        acc = dev_accuracy()
        log.info("warm start: step %d loss %.3f dev accuracy %.3f", step, loss.item(), acc)
    scorer.close()
    save_model(out, model.eval(), tok)
    if type(load_tokenizer(out)) is not type(tok):  # the class must survive the round trip
        raise RuntimeError(f"tokenizer saved in {out} does not load back as {type(tok).__name__}")
    return {"steps": step, "dev_accuracy": acc, "seconds": round(time.perf_counter() - t0, 1)}


def _corpus(cfg: Config, held_out: set[str]) -> ProblemSet:
    """Fresh problems for supervised training, without any dev or held-out problem. Problems of the RL
    pool may occur (the small levels hold only 100 problems each), as a pretrained model has seen easy
    problems before."""
    syn = cfg.data.synthetic
    fresh, _, _ = make_arithmetic(cfg.model.warmstart.num_problems, 0, 0, syn.max_level, seed=syn.seed + 1)
    keep = [i for i, p in enumerate(fresh.prompts) if p not in held_out]
    return fresh.subset(keep)


def _sft_loss(model: torch.nn.Module, rows: list[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
    """Next-token loss on the answer tokens (and eos) only."""
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (p, a) in enumerate(rows):
        ids[r, : len(p) + len(a)] = torch.tensor(p + a)
        labels[r, len(p) : len(p) + len(a)] = torch.tensor(a)
        mask[r, : len(p) + len(a)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
