"""Object-store weight sync: the packed payload (``rlpp.sync.packed``) against a state dict of tensors.

Both paths run on the same Ray cluster, learner actor and rollout actor, alternating call by call: the
learner returns its weights into the object store (``packed_weights``: one flat buffer, pickled out of
band; ``named_weights``: a dict of CPU tensor copies, pickled tensor by tensor), then the rollout actor
fetches them and loads them into its engine (``RolloutWorker.load_weights``). Each figure is the median
wall time of that whole round trip as the driver sees it, after ``--skip`` warm-up calls, per engine and
model. ``--model tiny`` is the tiny default's warm-started model; ``--model wide`` a randomly initialised
Qwen2-shaped model of ~50M parameters (a heavier payload, same code path).

    python benchmarks/weight_sync_bench.py --engines hf,vllm --models tiny,wide --calls 30

Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def model_folder(kind: str, cfg, tmp: Path) -> str:
    if kind == "tiny":
        from rlpp.data.loader import load_problems
        from rlpp.recipes.warmstart import prepare_model

        _, dev, held_out = load_problems(cfg.data)
        return prepare_model(cfg, dev, held_out)[0]
    from rlpp.config.schema import TinyModelConfig
    from rlpp.data.synthetic import ARITHMETIC_CHARS
    from rlpp.models.tiny import build_char_tokenizer, build_tiny_model, save_model

    tok = build_char_tokenizer(ARITHMETIC_CHARS)
    shape = TinyModelConfig(hidden_size=1024, num_layers=4, num_heads=8, num_kv_heads=2, intermediate_size=2816)
    save_model(tmp / "wide", build_tiny_model(shape, tok, seed=0), tok)
    return str(tmp / "wide")


def measure(engine: str, model: str, calls: int, skip: int) -> dict:
    import ray

    from rlpp.config.loader import load_config
    from rlpp.data.loader import load_problems
    from rlpp.distributed.groups import LearnerGroup, RolloutGroup

    cfg = load_config(ROOT / "configs/tiny.yaml", [f"rollout.engine={engine}", "learner.lr=1e-4"])
    train, _, _ = load_problems(cfg.data)
    with tempfile.TemporaryDirectory() as tmp:
        path = model_folder(model, cfg, Path(tmp))
        learners, rollouts = LearnerGroup(cfg, path), RolloutGroup(cfg, path, {"train": train}, seed=0)
        try:
            rollouts.wait_started()
            learner = learners.actors[0]
            paths = {"packed": learner.packed_weights, "dict": learner.named_weights}
            times: dict[str, list[float]] = {k: [] for k in paths}
            sizes = {}
            for i in range(calls + skip):
                for name in (list(paths) if i % 2 == 0 else list(paths)[::-1]):
                    t0 = time.perf_counter()
                    ref = paths[name].remote()
                    rollouts.load_weights(ref)
                    if i >= skip:
                        times[name].append(time.perf_counter() - t0)
                    if name == "packed" and not sizes:
                        sizes["mib"] = ray.get(ref).nbytes / 2**20
        finally:
            rollouts.shutdown()
            learners.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"engine": engine, "model": model, "payload_mib": sizes["mib"], "packed_ms": 1000 * med["packed"],
            "dict_ms": 1000 * med["dict"], "ratio": med["packed"] / med["dict"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="hf,vllm")
    ap.add_argument("--models", default="tiny,wide")
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--skip", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import ray

    from rlpp.distributed.local import keep_local_ray_on_loopback

    keep_local_ray_on_loopback()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        rows = [measure(e, m, args.calls, args.skip) for m in args.models.split(",") for e in args.engines.split(",")]
    finally:
        ray.shutdown()
    print(f"\nobject-store weight sync, median ms per sync ({args.calls} calls each, alternating):")
    print(f"  {'engine':<6} {'model':<6} {'MiB':>7} {'packed':>9} {'dict':>9} {'packed/dict':>12}")
    for r in rows:
        print(f"  {r['engine']:<6} {r['model']:<6} {r['payload_mib']:7.1f} {r['packed_ms']:9.2f} {r['dict_ms']:9.2f} "
              f"{r['ratio']:11.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
