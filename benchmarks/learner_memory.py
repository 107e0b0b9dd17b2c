"""Peak memory of one learner training step with a real vocabulary, before and after chunked log-probs,
and the projection for Qwen2.5-1.5B at the shipped GPU config's sizes.

Each measurement runs in a fresh process: the real ``Learner`` (DeepSpeed, gloo, CPU) over a Qwen2-shaped
model with Qwen2.5's vocabulary (151,936) and a small body, one GRPO step on ``--batch`` sequences of T
tokens. The step's peak is the process's resident high-water mark during the step (reset through
``/proc/self/clear_refs`` just before it) minus its resident size before it; the first step also
allocates gradients and AdamW's moments, which the formula below counts.

Modes:
  before     what the learner did until now: the model's full [N, T, V] logits, log_softmax, gather,
             entropy from the full distribution, no gradient checkpointing;
  chunked    chosen-token log-probs in checkpointed chunks of the output head (``rlpp.algo.logprobs``);
  chunked+gc the same plus gradient checkpointing (the GPU config's setting).

The per-token model (``activation_bytes``) is fitted to nothing: it counts what autograd keeps per token
and is checked against the measured slope of peak memory over T; the projection then applies it, with
ZeRO-2 + bf16 model states, to Qwen2.5-1.5B.

    python benchmarks/learner_memory.py              # ~3 min on 2 cores; run it alone
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 151_936
SMALL = dict(hidden=256, layers=8, heads=4, kv_heads=2, intermediate=704)
QWEN_1_5B = dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, params=1.544e9)
PROMPT = 32
CHUNK = 256  # head chunk in the measurement (smaller than every T's completion tokens here)


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(mode: str, seq_len: int, batch: int, folder: str) -> dict:
    """One step of the real Learner in this process; returns its memory figures."""
    import socket

    import torch

    from rlpp.algo.batch import make_train_batch
    from rlpp.algo.logprobs import reference_token_logprobs
    from rlpp.algo.loss import LossNorm
    from rlpp.config.loader import load_config
    from rlpp.learner.learner import Learner

    torch.set_num_threads(2)
    overrides = ["model.source=pretrained", f"model.path={folder}", "learner.zero_stage=0", "learner.grad_clip=0",
                 f"learner.micro_batch_size={batch}", f"learner.logprob_chunk_tokens={CHUNK}",
                 f"learner.gradient_checkpointing={'true' if mode == 'chunked+gc' else 'false'}",
                 "trainer.output_dir=/tmp/rlpp-learner-memory"]
    cfg = load_config(None, overrides)
    learner = Learner(cfg, folder, 0, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    learner.connect("127.0.0.1", port)
    if mode == "before":  # the learner's log-probs as they were: full logits of the wrapped HF model
        def full(model, mb):
            ids = mb.input_ids
            logits = model.policy(input_ids=ids, attention_mask=mb.attention_mask).logits[:, :-1]
            return reference_token_logprobs(logits, ids[:, 1:], learner.temperature)
        learner._logprobs = full
    g = torch.Generator().manual_seed(0)
    comp = seq_len - PROMPT
    prompts = [torch.randint(3, VOCAB, (PROMPT,), generator=g).tolist() for _ in range(batch // 2)]
    groups = [[(torch.randint(3, VOCAB, (comp,), generator=g).tolist(), [-1.0] * comp) for _ in range(2)]
              for _ in prompts]
    tb, _ = make_train_batch(prompts, groups, torch.tensor([[1.0, 0.0]] * len(prompts)), estimator="grpo",
                             drop_zero_variance=True, pad_id=0)
    before = _kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current size
    t0 = time.perf_counter()
    m = learner.train([tb], LossNorm(len(tb), tb.num_tokens, comp))
    seconds = time.perf_counter() - t0
    peak = _kib("VmHWM")
    return {"mode": mode, "T": seq_len, "batch": batch, "tokens": tb.num_tokens, "rss_before": before,
            "step_peak": peak - before, "seconds": seconds, "loss": m["loss"]}


def build_model(folder: str) -> int:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=SMALL["hidden"], num_hidden_layers=SMALL["layers"],
                      num_attention_heads=SMALL["heads"], num_key_value_heads=SMALL["kv_heads"],
                      intermediate_size=SMALL["intermediate"], max_position_embeddings=8192, tie_word_embeddings=True,
                      eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def activation_bytes(shape: dict, dtype_bytes: int, checkpointing: bool) -> float:
    """Bytes autograd keeps per trained token in the decoder: each layer saves ~10 hidden-sized and 4
    intermediate-sized tensors for backward (norm inputs/outputs, q/k/v/o and SDPA's outputs, gate, up,
    activation, product); with checkpointing only each layer's input stays, plus one layer recomputed
    (and its gradients) during backward."""
    h, i, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    one_layer = (10 * h + 4 * i) * dtype_bytes
    if checkpointing:
        return layers * h * dtype_bytes + 2 * one_layer
    return layers * one_layer


def head_bytes(chunk_tokens: int, vocab: int = VOCAB) -> float:
    """The output head's chunk during backward: its fp32 logits, their gradient and the softmax (3 copies)."""
    return 3 * 4 * chunk_tokens * vocab


def projection(tokens_per_micro_batch: int, chunk_tokens: int) -> dict:
    """Qwen2.5-1.5B on one GPU, ZeRO-2, bf16 weights, fp32 gradient accumulation, AdamW."""
    p = QWEN_1_5B["params"]
    states = {"bf16 weights": 2 * p, "bf16 gradients": 2 * p, "fp32 gradient accumulation": 4 * p,
              "fp32 master weights": 4 * p, "AdamW moments (fp32)": 8 * p,
              "ZeRO-2 buckets (reduce + allgather, 5e8 elements each, bf16)": 2 * 5e8 * 2}
    acts = tokens_per_micro_batch * activation_bytes(QWEN_1_5B, 2, checkpointing=True)
    head = head_bytes(chunk_tokens)
    hidden = tokens_per_micro_batch * QWEN_1_5B["hidden"] * 2 * 2  # last hidden states + their gradient
    total = sum(states.values()) + acts + head + hidden
    return {"states": states, "activations": acts, "head chunk": head, "final hidden": hidden, "total": total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=3, metavar=("MODE", "T", "FOLDER"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lengths", default="256,512,1024,2048")
    args = ap.parse_args()
    if args.child:
        mode, t, folder = args.child
        print(json.dumps(child(mode, int(t), args.batch, folder)))
        return

    lengths = [int(x) for x in args.lengths.split(",")]
    tmp = tempfile.mkdtemp(prefix="rlpp-memory-")
    params = build_model(tmp)
    print(f"model: Qwen2 shape {SMALL}, vocab {VOCAB}, {params / 1e6:.1f}M parameters (fp32); batch {args.batch} "
          f"sequences of T tokens ({PROMPT} prompt); head chunk {CHUNK} tokens")
    rows = []
    for mode in ("before", "chunked", "chunked+gc"):
        for t in lengths:
            out = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--child", mode, str(t), tmp],
                                 capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
            if out.returncode != 0:
                print(f"{mode} T={t}: FAILED\n{out.stderr[-2000:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{mode:>11}  T={t:5d}  tokens={r['tokens']:5d}  step peak {r['step_peak'] / 2**20:8.1f} MiB  "
                  f"({r['seconds']:.1f} s)")
    print()
    # Ratios against `before`, measured in this run
    by = {(r["mode"], r["T"]): r for r in rows}
    for t in lengths:
        if ("before", t) in by:
            b = by[("before", t)]["step_peak"]
            ratios = ", ".join(f"{m} {by[(m, t)]['step_peak'] / b:.2f}x" for m in ("chunked", "chunked+gc") if (m, t) in by)
            print(f"T={t:5d}: peak vs before: {ratios}")
    # Growth in T: slope per token (least squares) against the model
    print()
    optimizer = 12 * params  # fp32 gradients + AdamW moments, allocated by this first step
    gc_ratio = 1.0
    for mode, gc in (("before", False), ("chunked", False), ("chunked+gc", True)):
        pts = [(by[(mode, t)]["tokens"], by[(mode, t)]["step_peak"]) for t in lengths if (mode, t) in by]
        if len(pts) < 2:
            continue
        n = len(pts)
        mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
        slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        intercept = my - slope * mx
        if mode == "before":
            # + the full fp32 logits, the log_softmax kept for backward, and exp/product for the entropy
            model = activation_bytes(SMALL, 4, False) + 4 * 4 * VOCAB
            const = optimizer
        else:
            model = activation_bytes(SMALL, 4, gc) + SMALL["hidden"] * 4 * 2
            const = optimizer + head_bytes(CHUNK)
        worst = max(abs(y - (const + model * x)) / y for x, y in pts)
        if mode == "chunked+gc":
            gc_ratio = slope / model
        print(f"{mode:>11}: measured {slope / 1024:7.1f} KiB/token + {intercept / 2**20:6.1f} MiB; model "
              f"{model / 1024:7.1f} KiB/token + {const / 2**20:6.1f} MiB; worst point off by {worst:.0%}")
    print()
    proj = projection(tokens_per_micro_batch=16_384, chunk_tokens=1024)
    print("Projection: Qwen2.5-1.5B, configs/qwen2.5-math-1.5b.yaml (ZeRO-2, bf16, gradient checkpointing, "
          "16,384 tokens per micro-batch, head chunk 1,024):")
    for k, v in proj["states"].items():
        print(f"  {k:<58} {v / 2**30:6.1f} GiB")
    for k in ("activations", "head chunk", "final hidden"):
        print(f"  {k:<58} {proj[k] / 2**30:6.1f} GiB")
    total = proj["total"] / 2**30
    print(f"  {'total':<58} {total:6.1f} GiB of 80 GB = 74.5 GiB: headroom {1 - total / 74.5:.0%} "
          f"({'meets' if total <= 0.8 * 74.5 else 'misses'} the >= 20% target)")
    if gc_ratio > 1:  # the per-token model undercounted what was measured: project with the measured slope
        fixed = total + proj["activations"] * (gc_ratio - 1) / 2**30
        print(f"  with activations scaled by measured/model slope ({gc_ratio:.2f}x): {fixed:.1f} GiB, headroom "
              f"{1 - fixed / 74.5:.0%} ({'meets' if fixed <= 0.8 * 74.5 else 'misses'} the target)")
    before_tok = 4 * VOCAB * 4  # what the old path kept per token in fp32 (see the `before` model above)
    print(f"  (the old path's logits alone at 16,384 tokens: {16_384 * before_tok / 2**30:.0f} GiB)")


if __name__ == "__main__":
    main()
