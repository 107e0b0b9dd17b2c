"""The learner's optimizer step: torch AdamW's default CPU path against its fused kernel, in DeepSpeed.

The phase breakdown of a SmolLM2-135M step (``time/learner_optimizer``) showed the optimizer step taking a
third of the learner's time on CPU: DeepSpeed builds ``torch.optim.AdamW`` with ``foreach=None``, which
on CPU means the per-tensor loop (a dozen passes over the fp32 master weights). rlpp now asks for
``fused=True`` (one pass; CPU and CUDA). This measures both in fresh processes, one after the other in one
run, on a 134M-parameter stack of bf16 linear layers under the learner's own DeepSpeed settings (ZeRO-1,
bf16 weights, fp32 master weights and gradient accumulation, clipping at 1.0), and prints seconds per
``engine.step()`` (median of the steps after the first) and the ratio.

    python benchmarks/optimizer_bench.py                 # 1 thread, as a learner actor beside a rollout actor
    python benchmarks/optimizer_bench.py --threads 2

Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def child(kind: str, threads: int, steps: int, port: int) -> dict:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed
    import torch

    torch.set_num_threads(threads)
    model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048, bias=False) for _ in range(32)]).to(torch.bfloat16)
    params = {"lr": 1e-5, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8, "torch_adam": True}
    if kind == "fused":
        params["fused"] = True
    cfg = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": 1,
           "managed_gradient_accumulation": False, "gradient_clipping": 1.0, "zero_optimization": {"stage": 1},
           "bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"},
           "optimizer": {"type": "AdamW", "params": params}, "steps_per_print": 10**9}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    x = torch.randn(4, 2048, dtype=torch.bfloat16)
    times = []
    for _ in range(steps):
        engine.backward(engine(x).float().pow(2).mean(), scale_wrt_gas=False)
        t0 = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t0)
    return {"kind": kind, "parameters": sum(p.numel() for p in model.parameters()), "step_s": times}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, threads, steps, port = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(child(kind, threads, steps, port)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    med: dict[str, list[float]] = {"plain": [], "fused": []}
    for rep in range(args.reps):  # alternating fresh processes, so drift hits both alike
        for kind in med:
            proc = subprocess.run([sys.executable, __file__, "--child", kind, str(args.threads), str(args.steps),
                                   str(_free_port())],
                                  capture_output=True, text=True, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            med[kind].append(statistics.median(res["step_s"][1:]))
            print(f"rep {rep} {kind:<5} {res['parameters'] / 1e6:.0f}M parameters: {med[kind][-1]:.3f} s/step", flush=True)
    plain, fused = statistics.median(med["plain"]), statistics.median(med["fused"])
    print(f"\nDeepSpeed ZeRO-1 bf16 optimizer step, {args.threads} thread(s): AdamW default {plain:.3f} s, "
          f"fused {fused:.3f} s ({fused / plain:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
