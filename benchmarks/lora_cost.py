"""LoRA against full fine-tuning on a real model: learner step time and memory, measured in one run.

The model is SmolLM2-135M-Instruct (the packaged GGUF, converted once, as ``configs/smollm2-cpu.yaml``
loads it). Each measurement is a fresh process holding the real ``Learner`` (DeepSpeed, gloo, CPU): one
warm-up step, then ``--steps`` timed GRPO steps on the same batch, ``--prompts`` x G = 8 sequences of a
40-token prompt and ``--completion`` completion tokens (random ids: the cost of a step does not depend on
which tokens they are). Arms alternate ``--reps`` times, so drift on the machine hits both alike:

  full   every parameter trained (AdamW moments for all 135M);
  lora   ``model.lora.rank`` adapters on every linear layer (``target_modules=[all-linear]``), the base
         frozen; DeepSpeed sees only the adapters.

Figures per arm: trainable parameters; median step seconds; the process's resident size once the learner
is built (``after build``); the extra resident memory the timed steps reach (high-water mark reset just
before them, minus the size before them, so the first step's one-off gradient/moment allocations are in
``after warm-up`` instead); and LoRA / full for each, from the same run.

    python benchmarks/lora_cost.py                       # ~5 min on 2 cores; run it alone
    python benchmarks/lora_cost.py --dtype bfloat16 --rank 16 --reps 2
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
G, PROMPT = 8, 40


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def model_folder() -> str:
    """The converted SmolLM2 folder (cached after the first conversion)."""
    from rlpp.config.loader import load_config
    from rlpp.data.loader import load_problems
    from rlpp.recipes.warmstart import prepare_model

    cfg = load_config(str(ROOT / "configs/smollm2-cpu.yaml"))
    _, dev, held_out = load_problems(cfg.data)
    return prepare_model(cfg, dev, held_out)[0]


def child(arm: str, folder: str, args) -> dict:
    import torch

    from rlpp.algo.batch import make_train_batch, plan_micro_batches
    from rlpp.algo.loss import LossNorm
    from rlpp.config.loader import load_config
    from rlpp.learner.learner import Learner

    torch.set_num_threads(args.threads)
    lora = [f"model.lora.rank={args.rank}", "model.lora.alpha=32"] if arm == "lora" else []
    cfg = load_config(None, [
        "model.source=pretrained", f"model.path={folder}", f"model.dtype={args.dtype}",
        f"learner.zero_stage={1 if args.dtype == 'bfloat16' else 0}", "learner.lr=1e-6",
        "learner.micro_batch_size=8", "learner.max_tokens_per_micro_batch=1024", "learner.gradient_checkpointing=true",
        "learner.logprob_chunk_tokens=256", f"rollout.max_new_tokens={args.completion}",
        f"trainer.output_dir={tempfile.mkdtemp(prefix='rlpp-lora-cost-')}", *lora])
    learner = Learner(cfg, folder, 0, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    learner.connect("127.0.0.1", port)
    module = learner.engine.module
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    built = _status("VmRSS")

    g = torch.Generator().manual_seed(0)
    vocab = module.policy.config.vocab_size
    prompts = [torch.randint(3, vocab, (PROMPT,), generator=g).tolist() for _ in range(args.prompts)]
    groups = [[(torch.randint(3, vocab, (args.completion,), generator=g).tolist(), [-1.0] * args.completion)
               for _ in range(G)] for _ in prompts]
    rewards = torch.tensor([[float(j % 2) for j in range(G)]] * args.prompts)
    batch, _ = make_train_batch(prompts, groups, rewards, estimator="grpo", drop_zero_variance=True, pad_id=0)
    (plan,) = plan_micro_batches(batch.attention_mask.sum(1).tolist(), 1, cfg.learner.micro_batch_size,
                                 cfg.learner.max_tokens_per_micro_batch)
    micro = [batch.select(rows) for rows in plan]
    norm = LossNorm(total_sequences=len(batch), total_tokens=batch.num_tokens, max_len=args.completion)

    t0 = time.perf_counter()
    learner.train(micro, norm)
    warm_s = time.perf_counter() - t0
    warm = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts at the current size
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        m = learner.train(micro, norm)
        times.append(time.perf_counter() - t0)
        if m["skipped"]:
            raise RuntimeError(f"{arm}: a step was skipped (non-finite loss)")
    return {"arm": arm, "trainable": trainable, "tokens": batch.num_tokens, "warmup_s": warm_s,
            "step_s": statistics.median(times), "steps_s": times, "rss_built": built, "rss_after_warmup": warm,
            "step_peak": _status("VmHWM") - warm}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--completion", type=int, default=48)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--child", nargs=2, metavar=("ARM", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args)))
        return 0
    folder = model_folder()
    passthrough = [f"--dtype={args.dtype}", f"--rank={args.rank}", f"--prompts={args.prompts}",
                   f"--completion={args.completion}", f"--steps={args.steps}", f"--threads={args.threads}"]
    runs: dict[str, list[dict]] = {"full": [], "lora": []}
    for rep in range(args.reps):
        for arm in ("full", "lora") if rep % 2 == 0 else ("lora", "full"):
            proc = subprocess.run([sys.executable, __file__, "--child", arm, folder, *passthrough], cwd=ROOT,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"the {arm} measurement failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[arm].append(r)
            print(f"rep {rep} {arm:4s}: {r['step_s']:.2f} s/step (warm-up {r['warmup_s']:.1f} s), built "
                  f"{r['rss_built'] / 2**30:.2f} GiB, after warm-up {r['rss_after_warmup'] / 2**30:.2f} GiB, "
                  f"timed steps +{r['step_peak'] / 2**30:.2f} GiB", flush=True)

    def med(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[arm])

    print(f"\nSmolLM2-135M-Instruct, {args.dtype}, {args.prompts} prompts x G={G}, {runs['full'][0]['tokens']} "
          f"completion tokens per step, {args.threads} threads, LoRA rank {args.rank} on every linear layer")
    print(f"{'':28s}{'full':>12s}{'lora':>12s}{'lora/full':>11s}")
    rows = [("trainable parameters", "trainable", 1.0, "{:,.0f}"), ("step seconds (median)", "step_s", 1.0, "{:.2f}"),
            ("RSS after build (GiB)", "rss_built", 2**-30, "{:.2f}"),
            ("RSS after warm-up (GiB)", "rss_after_warmup", 2**-30, "{:.2f}"),
            ("timed steps' extra (GiB)", "step_peak", 2**-30, "{:.2f}")]
    for label, key, scale, fmt in rows:
        f, lo = med("full", key) * scale, med("lora", key) * scale
        print(f"{label:28s}{fmt.format(f):>12s}{fmt.format(lo):>12s}{(lo / f if f else float('nan')):>10.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
