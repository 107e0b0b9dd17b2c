"""rlpp against TRL's ``GRPOTrainer`` on the same work: seconds per GRPO step, both measured in one run.

The work: the tiny default's warm-started model (cached), its training problems, 16 prompts x G = 8
completions per step, at most 8 new tokens at temperature 1, the arithmetic reward, the GRPO loss
(sequence mean, group-std-scaled advantages, clip 0.2, no KL, one optimizer step per batch), AdamW at
lr 3e-5, fp32 on CPU, every group trained on (rlpp's ``algo.drop_zero_variance=false``, as TRL keeps
zero-advantage groups). rlpp runs ``rlpp train`` (each of ``--modes``: sync, and pipelined with
max_staleness 1, which TRL's synchronous trainer does not do; real Ray actors, HF engine) and logs
``time/step``; TRL runs ``GRPOTrainer`` in a fresh process with a callback timing each step (its
generation happens inside the step). The two alternate ``--reps`` times; each run's figure is the median
step time after ``--skip`` warm-up steps; the report gives the median over reps and rlpp / TRL.

    pip install "trl==1.16.0" --no-deps        # the optional extra: pip install -e .[bench]
    python benchmarks/trl_compare.py --steps 30 --reps 3

Run it alone on the machine (both sides use both cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
B, G, NEW_TOKENS, LR = 16, 8, 8, 3e-5


def run_rlpp(steps: int, skip: int, out: Path, mode: str = "sync") -> dict:
    cmd = [sys.executable, "-m", "rlpp.cli", "train", str(ROOT / "configs/tiny.yaml"), "buffer.sampler=uniform",
           f"trainer.mode={mode}",
           f"trainer.batch_size={B}", f"rollout.group_size={G}", f"rollout.max_new_tokens={NEW_TOKENS}",
           f"learner.lr={LR}", "algo.loss=grpo", "algo.drop_zero_variance=false", f"trainer.steps={steps}",
           "trainer.eval_every=0", f"trainer.output_dir={out}", "log.progress_bar=false", "log.tensorboard=false",
           "log.buffer_snapshots=false"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    from rlpp.metrics import read_metrics

    times = [r["time/step"] for r in read_metrics(out / "metrics.jsonl") if "time/step" in r][skip:]
    return {"step_s": statistics.median(times), "process_s": time.perf_counter() - t0}


def run_trl(steps: int, skip: int, out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--trl-child", str(steps), str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the TRL run failed:\n{proc.stderr[-3000:]}")
    times = json.loads((out / "trl_steps.json").read_text())[skip:]
    return {"step_s": statistics.median(times), "process_s": time.perf_counter() - t0}


def trl_child(steps: int, out: Path) -> None:
    """One TRL GRPOTrainer run over the same model, problems and settings (in its own process)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlpp.config.loader import load_config
    from rlpp.data.loader import load_problems
    from rlpp.models.tiny import load_model, load_tokenizer
    from rlpp.recipes.warmstart import prepare_model
    from rlpp.reward.registry import check_reward

    torch.set_num_threads(2)
    cfg = load_config(ROOT / "configs/tiny.yaml")
    train, dev, held_out = load_problems(cfg.data)
    model_path, _ = prepare_model(cfg, dev, held_out)
    reward = check_reward(cfg.reward.name)

    def arithmetic(prompts, completions, answer, **_):
        return [float(reward(c, a)) for c, a in zip(completions, answer)]

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimes()
    args = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=B * G, num_generations=G,
                      max_completion_length=NEW_TOKENS, learning_rate=LR, loss_type="grpo", beta=0.0,
                      scale_rewards="group", num_iterations=1, temperature=1.0, epsilon=0.2, max_steps=steps,
                      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                      use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=10_000,
                      gradient_accumulation_steps=1, seed=0, disable_dropout=True)
    trainer = GRPOTrainer(model=load_model(model_path), reward_funcs=[arithmetic], args=args,
                          train_dataset=Dataset.from_dict({"prompt": train.prompts, "answer": train.answers}),
                          processing_class=load_tokenizer(model_path), callbacks=[timer])
    trainer.train()
    (out / "trl_steps.json").write_text(json.dumps(timer.times))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--trl-child":
        trl_child(int(sys.argv[2]), Path(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--modes", default="sync,pipelined", help="rlpp's trainer.mode values to run")
    ap.add_argument("--json")
    args = ap.parse_args()
    runs = {f"rlpp_{m}": (lambda steps, skip, out, m=m: run_rlpp(steps, skip, out, m)) for m in args.modes.split(",")}
    runs["trl"] = run_trl
    res: dict[str, list[dict]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):  # alternating, so drift over the run hits both alike
            for name, fn in runs.items():
                r = fn(args.steps, args.skip, Path(tmp) / f"{name}_{rep}")
                res[name].append(r)
                print(f"rep {rep} {name}: {r['step_s'] * 1000:.0f} ms/step (process {r['process_s']:.0f} s)", flush=True)
    med = {n: statistics.median(r["step_s"] for r in rs) for n, rs in res.items()}
    print(f"\nseconds per step, median of {args.reps} runs x {args.steps - args.skip} steps (target: rlpp / TRL <= 0.8x):")
    for name, v in med.items():
        print(f"  {name:<16} {v:.3f} s   {v / med['trl']:.2f}x TRL")
    if args.json:
        Path(args.json).write_text(json.dumps({"median_step_s": med, "runs": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
