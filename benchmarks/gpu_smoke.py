"""GPU smoke check of the learner, the HF engine and the CUDA IPC weight hand-off, without Ray or vLLM.

For a machine with one CUDA GPU where only torch and transformers (>= 5.16.1) are installed. The stages
also need omegaconf (rlpp's config) and DeepSpeed (the learner), without any compiled DeepSpeed op (torch's
AdamW, no fused kernels); ``--install`` gets both from the package index first:

    python benchmarks/gpu_smoke.py --install
    # = pip install 'omegaconf>=2.3' && DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed==0.19.8
    #   (--no-build-isolation: built against the torch already there, not a fresh download), then the run

Without ``--install`` the run starts by checking these and, when one is missing, prints exactly which and
the line above, and stops (exit code 2). Nothing here imports Ray, vLLM or datasets
(``tests/test_gpu_smoke.py`` runs the CPU mode with only the packages named above importable).

Everything runs in this process (plus one spawned child for the IPC check), through rlpp's plain
classes, never its Ray actors:

1. ``model``: a randomly initialised Qwen2 of Qwen2.5-0.5B's shape (bf16), saved to a temporary folder
   with a ``generation_config.json`` (eos 151645 and 151643); no hub access, no tokenizer.
2. ``learner``: one ``rlpp.learner.learner.Learner`` rank (DeepSpeed ZeRO-2, NCCL world of 1) trains
   ``--steps`` GRPO steps on synthetic groups (random prompts and completions, 0/1 rewards), split into
   micro-batches the way ``LearnerGroup.train`` does. Reports the median step time of the steps after
   the first (warm-up), completion tokens/s, and the peak of ``torch.cuda.max_memory_allocated`` over
   the timed steps, also as a share of an 80 GiB GPU. Then colocated mode's learner half (CUDA only):
   ``offload_states`` (reserved GPU memory before and after: what the engine gets back when it wakes)
   and one more step, which reloads the states and must not be skipped.
3. ``ipc``: the trained weights go to a spawned child process as vLLM-style CUDA IPC update info
   (``Learner.ipc_export``); the child rebuilds each tensor as vLLM's IPC receiver does, loads them into
   a fresh copy of the model and returns checksums, which must match ``Learner.named_weights()``.
4. ``engine``: ``rlpp.rollout.hf_engine.HFEngine`` on the GPU samples ``--gen-prompts`` x ``--gen-n``
   completions of ``--gen-tokens`` tokens; reports generated tokens/s and peak memory. It runs after
   the learner is torn down, so its peak is the engine's own (the baseline left over is reported too).

Every stage is wrapped: a failure is printed with its traceback and the later stages still run where
they can. A JSON summary goes to ``--out`` (default ``$OUT/gpu_smoke.json`` when ``OUT`` is set, else
``./gpu_smoke.json``). The exit code is 0 only when every stage ran and the IPC checksums matched (2
when a requirement is missing).

Run: ``python benchmarks/gpu_smoke.py --install`` on the GPU machine (about 3-5 minutes on one H200);
``python benchmarks/gpu_smoke.py --device cpu --model-shape tiny`` is a quick CPU pass over the same
code paths (fp32, ZeRO-0 over gloo, small sizes; the IPC stage is skipped, its child process, loading
and checksum comparison are exercised with shared-memory CPU tensors instead).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

try:
    import torch
except ImportError:  # reported by missing_requirements() before any stage runs
    torch = None

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # rlpp need not be pip-installed on the GPU machine
    sys.path.insert(0, str(ROOT))

GIB = 2**30
GPU_80GB = 80 * GIB

MIN_TRANSFORMERS = "5.16.1"  # as pyproject.toml: Qwen2Config(rope_parameters=...), from_pretrained(dtype=...)
DEEPSPEED = "0.19.8"  # the version rlpp is tested with
INSTALL = {
    # module: (pip install arguments, environment) that --install uses when it is missing. No DeepSpeed op is
    # built or JIT-compiled on this path (torch_adam: true; ZeRO-2 flattens with torch's own functions).
    "omegaconf": (["omegaconf>=2.3"], {}),
    "deepspeed": (["--no-build-isolation", f"deepspeed=={DEEPSPEED}"], {"DS_BUILD_OPS": "0"}),
}
NEEDED = ("torch", "transformers", "numpy", "yaml", "omegaconf", "deepspeed")
"""Every module outside the standard library and rlpp that the stages import themselves (the packages'
own dependencies come with them)."""

SHAPES = {
    # Qwen2.5-0.5B's config.json, random weights.
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1e6, eos=(151645, 151643)),
    "tiny": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1e6, eos=(999, 998)),
}

# Per-device defaults of the options left unset on the command line.
DEFAULTS = {
    "cuda": dict(model_shape="qwen2.5-0.5b", dtype="bfloat16", zero_stage=2, prompts=64, prompt_len=128, group_size=8,
                 min_len=256, max_len=2048, micro_batch_size=8, max_tokens_per_micro_batch=16384, gen_prompts=32,
                 gen_n=8, gen_tokens=512, threads=0),
    "cpu": dict(model_shape="tiny", dtype="float32", zero_stage=0, prompts=4, prompt_len=16, group_size=4, min_len=8,
                max_len=32, micro_batch_size=4, max_tokens_per_micro_batch=128, gen_prompts=4, gen_n=2, gen_tokens=16,
                threads=1),
}



class Skipped(Exception):
    """A stage that cannot run here; its message is the reason."""


# ---------------------------------------------------------------------------------------- helpers
def say(stage: str, label: str, text: str) -> None:
    print(f"[{stage}] {label}: {text}", flush=True)


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def reset_peak(cuda: bool) -> None:
    if cuda:
        torch.cuda.reset_peak_memory_stats()


def peak_gib(cuda: bool) -> float:
    """Peak allocated GPU memory since the last reset; on CPU the process's peak RSS (never reset)."""
    if cuda:
        return torch.cuda.max_memory_allocated() / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is KiB on Linux


def report_peak(stage: str, out: dict, cuda: bool, what: str) -> None:
    """Peak memory lines (and figures in ``out``): allocated and reserved on CUDA, RSS on CPU."""
    peak = peak_gib(cuda)
    out["peak_gib"] = peak
    if cuda:
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
        say(stage, f"peak GPU memory allocated ({what})", f"{peak:.2f} GiB")
        say(stage, f"peak GPU memory reserved ({what})", f"{out['peak_reserved_gib']:.2f} GiB")
        out["peak_of_80gib"] = peak * GIB / GPU_80GB
        verdict = "fits" if out["peak_of_80gib"] < 0.9 else "too close to or over"
        say(stage, "projected peak on an 80 GiB GPU", f"{100 * out['peak_of_80gib']:.1f}% ({verdict} 80 GiB)")
    else:
        say(stage, "peak RSS of the process so far (CPU: no CUDA allocator stats)", f"{peak:.2f} GiB")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checksums(state: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """(sum, sum of |x|) per tensor, in float64: a copy that lost, moved or garbled values shows up."""
    return {name: (float(t.detach().double().sum()), float(t.detach().double().abs().sum()))
            for name, t in state.items()}


def compare_checksums(got: dict, want: dict) -> tuple[bool, float, list[str]]:
    """Whether the checksums agree (float64 sums in a different order: relative 1e-9), the largest
    relative difference, and the names present on one side only."""
    only = sorted(set(got) ^ set(want))
    worst = 0.0
    for name in set(got) & set(want):
        for a, b in zip(got[name], want[name]):
            worst = max(worst, abs(a - b) / max(1.0, abs(b)))
    return not only and worst <= 1e-9, worst, only


# ---------------------------------------------------------------------------------------- stages
def stage_model(args, ctx) -> dict:
    """A random model of the chosen shape, saved with a generation_config.json and no tokenizer."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    shape = dict(SHAPES[args.model_shape])
    eos = list(shape.pop("eos"))
    theta = shape.pop("rope_theta")
    config = Qwen2Config(**shape, tie_word_embeddings=True, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": theta}, use_sliding_window=False,
                         bos_token_id=eos[1], eos_token_id=eos[0])
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    with torch.device(ctx.device):  # initialising 0.5B parameters on the GPU takes a second, not a minute
        model = Qwen2ForCausalLM(config)
    model = model.to(getattr(torch, args.dtype))
    folder = Path(ctx.workdir) / "model"
    model.save_pretrained(folder)
    GenerationConfig(bos_token_id=eos[1], eos_token_id=eos, pad_token_id=eos[1]).save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()
    ctx.model_path = str(folder)
    ctx.eos = eos
    out = {"path": str(folder), "parameters": params, "build_save_s": time.perf_counter() - t0}
    say("model", f"{args.model_shape} ({args.dtype}) parameters", f"{params / 1e6:.1f} M")
    say("model", "build + save time", f"{out['build_save_s']:.1f} s")
    return out


def synthetic_batch(args, cfg, vocab_low: int, pad_id: int):
    """GRPO groups of random tokens: ``--prompts`` prompts x ``--group-size`` completions of random
    length in [--min-len, --max-len], fake log-probs, 0/1 rewards with both values in every group."""
    from rlpp.algo.batch import make_train_batch

    gen = torch.Generator().manual_seed(args.seed)

    def tokens(n: int) -> list[int]:
        return torch.randint(0, vocab_low, (n,), generator=gen).tolist()

    prompts = [tokens(args.prompt_len) for _ in range(args.prompts)]
    completions = []
    for _ in range(args.prompts):
        group = []
        for _ in range(args.group_size):
            n = int(torch.randint(args.min_len, args.max_len + 1, (1,), generator=gen))
            group.append((tokens(n), (-4.0 * torch.rand(n, generator=gen)).tolist()))
        completions.append(group)
    rewards = (torch.rand(args.prompts, args.group_size, generator=gen) < 0.5).float()
    rewards[:, 0], rewards[:, 1] = 1.0, 0.0  # every group has variance: none is dropped
    batch, _ = make_train_batch(prompts, completions, rewards, estimator=cfg.algo.estimator,
                                drop_zero_variance=cfg.algo.drop_zero_variance, pad_id=pad_id)
    return batch


def micro_batches(batch, cfg):
    """``LearnerGroup.train``'s split for a world of one rank (no empty padding micro-batches needed)."""
    from rlpp.algo.batch import plan_micro_batches
    from rlpp.algo.loss import LossNorm

    lc = cfg.learner
    (plan,) = plan_micro_batches(batch.attention_mask.sum(1).tolist(), 1, lc.micro_batch_size,
                                 lc.max_tokens_per_micro_batch)
    micro = [batch.select(rows) for rows in plan]
    norm = LossNorm(total_sequences=len(batch), total_tokens=batch.num_tokens, max_len=cfg.rollout.max_new_tokens)
    return micro, norm


def stage_learner(args, ctx) -> dict:
    from rlpp.config.loader import load_config
    from rlpp.learner.learner import Learner

    if ctx.model_path is None:
        raise Skipped("no model (the model stage failed)")
    if args.steps < 2:
        raise ValueError(f"--steps must be >= 2 (the first is a warm-up), got {args.steps}")
    overrides = [
        "model.source=pretrained", f"model.path={ctx.model_path}", f"model.dtype={args.dtype}",
        f"learner.zero_stage={args.zero_stage}", f"learner.gpus_per_actor={1 if ctx.cuda else 0}",
        "learner.gradient_checkpointing=true", f"learner.max_tokens_per_micro_batch={args.max_tokens_per_micro_batch}",
        f"learner.micro_batch_size={args.micro_batch_size}", "learner.logprob_chunk_tokens=1024",
        f"trainer.output_dir={Path(ctx.workdir) / 'run'}", "algo.loss=dapo", f"seed={args.seed}",
        f"rollout.group_size={args.group_size}", f"rollout.max_new_tokens={args.max_len}",
        *([f"learner.torch_threads={args.threads}"] if args.threads else []),
        *args.set,
    ]
    cfg = load_config(None, overrides)
    out: dict = {"overrides": overrides}

    batch = synthetic_batch(args, cfg, vocab_low=min(ctx.eos), pad_id=ctx.eos[1])
    micro, norm = micro_batches(batch, cfg)
    padded = sum(mb.input_ids.numel() for mb in micro)
    out.update(sequences=len(batch), completion_tokens=batch.num_tokens, micro_batches=len(micro), padded_tokens=padded)
    say("learner", "batch", f"{len(batch)} sequences, {batch.num_tokens} completion tokens, {len(micro)} micro-batches "
                            f"({padded} tokens with padding)")

    t0 = time.perf_counter()
    learner = Learner(cfg, ctx.model_path, rank=0, world_size=1)
    # connect sets MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE and forms DeepSpeed's world of one (nccl on
    # CUDA, gloo on CPU), then loads the policy into a DeepSpeed engine.
    learner.connect("127.0.0.1", free_port())
    ctx.learner = learner
    out["connect_s"] = time.perf_counter() - t0
    say("learner", "connect (process group + model load + DeepSpeed init)", f"{out['connect_s']:.1f} s")
    if ctx.cuda:
        out["allocated_after_connect_gib"] = torch.cuda.memory_allocated() / GIB
        say("learner", "GPU memory allocated after connect", f"{out['allocated_after_connect_gib']:.2f} GiB")

    times, steps = [], []
    for step in range(args.steps):
        if step == 1:  # the timed steps: the peak excludes the warm-up's one-off allocations
            reset_peak(ctx.cuda)
        sync(ctx.cuda)
        t0 = time.perf_counter()
        metrics = learner.train(micro, norm)
        sync(ctx.cuda)
        dt = time.perf_counter() - t0
        if metrics["skipped"]:
            raise RuntimeError(f"step {step} was skipped: non-finite loss ({metrics})")
        steps.append({"seconds": dt, "loss": metrics["loss"], "grad_norm": metrics["grad_norm"]})
        if step:
            times.append(dt)
        say("learner", f"step {step}{' (warm-up)' if not step else ''}",
            f"{dt:.2f} s, loss {metrics['loss']:.4g}, grad norm {metrics['grad_norm']:.4g}")
    out["steps"] = steps
    out["step_s"] = statistics.median(times)
    out["tokens_per_s"] = batch.num_tokens / out["step_s"]
    say("learner", f"step time (median of {len(times)} timed steps)", f"{out['step_s']:.2f} s")
    say("learner", "throughput", f"{out['tokens_per_s']:.0f} completion tokens/s")
    report_peak("learner", out, ctx.cuda, "timed steps")
    out["offload"] = offload_round_trip(learner, micro, norm, ctx.cuda)
    return out


def offload_round_trip(learner, micro, norm, cuda: bool) -> dict:
    """Colocated mode's learner half (gpu-path review 2, H1): what ``offload_states`` hands back before the
    engine on the same GPU wakes, and a step after it (``train`` reloads the states), which must not be
    skipped. On CPU ``offload_states`` is a no-op and this only says so."""
    if not cuda:
        say("learner", "offload round trip", "skipped on CPU (offload_states is a no-op without CUDA)")
        return {"skipped": "cpu"}
    out = {"reserved_before_gib": torch.cuda.memory_reserved() / GIB,
           "allocated_before_gib": torch.cuda.memory_allocated() / GIB}
    t0 = time.perf_counter()
    learner.offload_states()
    sync(cuda)
    out["offload_s"] = time.perf_counter() - t0
    out["reserved_after_gib"] = torch.cuda.memory_reserved() / GIB
    out["allocated_after_gib"] = torch.cuda.memory_allocated() / GIB
    out["freed_for_the_engine_gib"] = out["reserved_before_gib"] - out["reserved_after_gib"]
    say("learner", "offload_states (colocated: before the engine wakes)",
        f"{out['offload_s']:.2f} s; reserved {out['reserved_before_gib']:.2f} -> {out['reserved_after_gib']:.2f} GiB, "
        f"allocated {out['allocated_before_gib']:.2f} -> {out['allocated_after_gib']:.2f} GiB")
    t0 = time.perf_counter()
    metrics = learner.train(micro, norm)
    sync(cuda)
    out["step_after_reload_s"] = time.perf_counter() - t0
    if metrics["skipped"]:
        raise RuntimeError(f"the step after offload_states was skipped: non-finite loss ({metrics})")
    out["loss_after_reload"] = metrics["loss"]
    say("learner", "step after offload (states reloaded)", f"{out['step_after_reload_s']:.2f} s, loss {metrics['loss']:.4g}")
    return out


def stage_ipc(args, ctx) -> dict:
    """Hand the trained weights to a spawned child and compare what it loaded with ``named_weights``."""
    learner = ctx.learner
    if learner is None:
        raise Skipped("no trained learner (the learner stage failed)")
    transport = "cuda-ipc" if ctx.cuda else "shared-memory"
    mp = torch.multiprocessing.get_context("spawn")
    inbox, outbox = mp.Queue(), mp.Queue()
    child = mp.Process(target=ipc_child, args=(ctx.model_path, args.dtype, transport, args.threads, inbox, outbox),
                       daemon=True)
    t0 = time.perf_counter()
    child.start()
    out: dict = {"transport": transport}
    exported = False
    try:
        receive(child, outbox, args.ipc_timeout)  # the child has loaded its fresh model
        out["child_start_s"] = time.perf_counter() - t0
        weights = learner.named_weights()
        want = checksums(weights)
        t0 = time.perf_counter()
        if ctx.cuda:
            info = learner.ipc_export()
            exported = True
        else:  # CPU stand-in: the same child, loading and checksums, with tensors in shared memory
            info = {"names": list(weights), "tensors": list(weights.values())}
        inbox.put(info)
        result = receive(child, outbox, args.ipc_timeout)
        out["handoff_s"] = time.perf_counter() - t0
        child.join(timeout=60)
    finally:
        if exported:
            learner.ipc_release()
        if child.is_alive():
            child.kill()
    match, worst, only = compare_checksums(result.pop("checksums"), want)
    changed = result.pop("changed_by_load")
    out.update(result, match=match, max_rel_diff=worst, names_on_one_side=only[:10], tensors_changed_by_load=changed)
    label = "CUDA IPC" if ctx.cuda else "shared-memory stand-in"
    say("ipc", f"{label} checksum of {result['tensors']} tensors vs learner.named_weights()",
        f"{'MATCH' if match else 'MISMATCH'} (max relative difference {worst:.1e}"
        f"{', names on one side only: ' + ', '.join(only[:5]) if only else ''})")
    say("ipc", "hand-off time (export + queue + rebuild + load in the child)", f"{out['handoff_s']:.2f} s")
    say("ipc", "rebuild + load time inside the child", f"{result['load_s']:.2f} s")
    say("ipc", "bytes handed over", f"{result['bytes'] / GIB:.3f} GiB; {changed} tensors differ from the initial model")
    if not match:
        raise RuntimeError(f"{label} weights differ from the learner's (max relative difference {worst:.1e}, "
                           f"names on one side only: {only[:5]})")
    if not ctx.cuda:
        raise Skipped("needs CUDA", out)
    return out


def receive(child, outbox, timeout_s: float) -> dict | None:
    """The child's next message; raises with its traceback if it failed, died or went silent."""
    import queue

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            kind, payload = outbox.get(timeout=1.0)
            break
        except queue.Empty:
            if not child.is_alive():
                raise RuntimeError(f"the IPC child process died (exit code {child.exitcode})") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from the IPC child within {timeout_s:.0f} s") from None
    if kind == "error":
        raise RuntimeError(f"the IPC child failed:\n{payload}")
    return payload


def ipc_child(model_path: str, dtype: str, transport: str, threads: int, inbox, outbox) -> None:
    """The receiving side, in a spawned process: a fresh copy of the model, then the sender's tensors
    rebuilt from their CUDA IPC handles (as ``vllm/distributed/weight_transfer/ipc_engine.py``
    ``receive_weights`` does, unpacked) and loaded with ``load_state_dict``."""
    try:
        from rlpp.models.tiny import load_model

        cuda = transport == "cuda-ipc"
        if threads:
            torch.set_num_threads(threads)
        device = torch.device("cuda", 0) if cuda else torch.device("cpu")
        model = load_model(model_path, dtype).to(device)
        before = checksums(model.state_dict())
        outbox.put(("ready", None))

        info = inbox.get()
        t0 = time.perf_counter()
        if cuda:
            named = rebuild_cuda_tensors(info, device)
        else:
            named = list(zip(info["names"], info["tensors"]))
        missing, unexpected = model.load_state_dict(dict(named), strict=False)
        # A tied lm_head may arrive under the embedding's name only (rlpp sends both).
        missing = [k for k in missing if k not in (getattr(model, "_tied_weights_keys", None) or ())]
        if missing or unexpected:
            raise ValueError(f"weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if cuda:
            torch.cuda.synchronize()
        load_s = time.perf_counter() - t0
        after = checksums(model.state_dict())
        nbytes = sum(t.numel() * t.element_size() for _, t in named)
        del named  # drop the mapped tensors before the sender releases them
        changed = sum(before.get(k) != v for k, v in after.items())
        outbox.put(("done", {"checksums": after, "changed_by_load": changed, "load_s": load_s,
                             "tensors": len(info["names"]), "bytes": nbytes}))
    except BaseException:
        outbox.put(("error", traceback.format_exc()))


def rebuild_cuda_tensors(info: dict, device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """vLLM's unpacked IPC receive: each handle is keyed by the physical GPU's UUID, and argument 6 of
    ``rebuild_cuda_tensor`` is the device index, rewritten to the receiver's."""
    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    uuid = str(torch.cuda.get_device_properties(device.index).uuid)
    named = []
    for name, dtype, shape, handle in zip(info["names"], info["dtype_names"], info["shapes"], info["ipc_handles"]):
        if uuid not in handle:
            raise ValueError(f"no IPC handle for GPU {uuid} in {name}'s; available: {list(handle)}")
        args = list(handle[uuid])
        args[6] = device.index
        t = rebuild_cuda_tensor(*args)
        if t.dtype != getattr(torch, dtype) or list(t.shape) != list(shape):
            raise ValueError(f"{name}: rebuilt {t.dtype} {list(t.shape)}, update info says {dtype} {shape}")
        named.append((name, t))
    return named


def release_learner(ctx) -> None:
    """Free the learner's memory so the engine stage measures the engine alone."""
    ctx.learner = None
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


def stage_engine(args, ctx) -> dict:
    from rlpp.rollout.engine import Sampling
    from rlpp.rollout.hf_engine import HFEngine

    if ctx.model_path is None:
        raise Skipped("no model (the model stage failed)")
    out: dict = {}
    if ctx.cuda:
        out["baseline_gib"] = torch.cuda.memory_allocated() / GIB
        say("engine", "GPU memory still allocated before the engine (left by earlier stages)",
            f"{out['baseline_gib']:.2f} GiB")
    reset_peak(ctx.cuda)
    t0 = time.perf_counter()
    engine = HFEngine(ctx.model_path, dtype=args.dtype, device=ctx.device.type, seed=args.seed)
    out["load_s"] = time.perf_counter() - t0
    say("engine", "load", f"{out['load_s']:.1f} s")

    gen = torch.Generator().manual_seed(args.seed + 1)
    prompts = [torch.randint(0, min(ctx.eos), (args.prompt_len,), generator=gen).tolist()
               for _ in range(args.gen_prompts)]
    engine.generate(prompts[:2], Sampling(n=1, temperature=1.0, top_p=1.0, max_new_tokens=4))  # warm-up
    sampling = Sampling(n=args.gen_n, temperature=1.0, top_p=1.0, max_new_tokens=args.gen_tokens, seed=args.seed)
    sync(ctx.cuda)
    t0 = time.perf_counter()
    groups = engine.generate(prompts, sampling)
    sync(ctx.cuda)
    dt = time.perf_counter() - t0
    completions = [c for g in groups for c in g]
    tokens = sum(len(c.token_ids) for c in completions)
    out.update(rows=len(completions), generated_tokens=tokens, seconds=dt, tokens_per_s=tokens / dt,
               finished=sum(c.finished for c in completions))
    say("engine", "generate", f"{len(prompts)} prompts x n={args.gen_n}, up to {args.gen_tokens} new tokens: {tokens} "
                              f"tokens in {dt:.2f} s ({out['finished']} of {len(completions)} rows stopped at eos)")
    say("engine", "throughput", f"{out['tokens_per_s']:.0f} generated tokens/s")
    report_peak("engine", out, ctx.cuda, "load + generate")
    if ctx.cuda:
        out["peak_above_baseline_gib"] = out["peak_gib"] - out["baseline_gib"]
        say("engine", "peak GPU memory above the baseline", f"{out['peak_above_baseline_gib']:.2f} GiB")
    return out


# ---------------------------------------------------------------------------------------- requirements
def missing_requirements() -> dict[str, str]:
    """{module: why it cannot be used} for each of ``NEEDED`` that does not import (or is too old)."""
    import importlib

    missing = {}
    for name in NEEDED:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            missing[name] = "not installed" if e.name == name else f"does not import: {e}"
            continue
        except Exception as e:  # noqa: BLE001 - a broken install is reported like a missing one
            missing[name] = f"does not import: {type(e).__name__}: {e}"
            continue
        if name == "transformers":
            from packaging.version import Version

            if Version(module.__version__) < Version(MIN_TRANSFORMERS):
                missing[name] = f"version {module.__version__}, need >= {MIN_TRANSFORMERS}"
    return missing


def install_command(modules) -> str:
    """The shell line that installs ``modules`` (those of them ``INSTALL`` knows) from the package index."""
    parts = []
    for name in modules:
        if name in INSTALL:
            pip_args, env = INSTALL[name]
            prefix = "".join(f"{k}={v} " for k, v in env.items())
            parts.append(prefix + "pip install " + " ".join(f"'{a}'" if ">" in a else a for a in pip_args))
    return " && ".join(parts)


def install(modules, wheels: str | None) -> None:
    """pip-install ``modules`` (those ``INSTALL`` knows) into this interpreter, from the configured index or
    only from the folder ``wheels``."""
    import subprocess

    for name in modules:
        if name not in INSTALL:
            continue
        pip_args, env = INSTALL[name]
        source = ["--no-index", "--find-links", wheels] if wheels else []
        command = [sys.executable, "-m", "pip", "install", *source, *pip_args]
        print(f"gpu_smoke: installing {name}: {''.join(f'{k}={v} ' for k, v in env.items())}{' '.join(command)}",
              flush=True)
        subprocess.run(command, check=True, env={**os.environ, **env})


def report_missing(missing: dict[str, str]) -> str:
    lines = ["the stages need what is missing here:", *(f"  {name}: {why}" for name, why in missing.items())]
    installable = [m for m in missing if m in INSTALL]
    if installable:
        lines += ["install from the package index with:", f"  {install_command(installable)}",
                  "or run: python benchmarks/gpu_smoke.py --install"]
    if set(missing) - set(INSTALL):
        lines.append(f"torch (its CUDA build) and transformers>={MIN_TRANSFORMERS} must be installed first")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- driver
def run_stage(name: str, fn, args, ctx, summary: dict) -> None:
    """Run one stage; record ``ok``, ``skipped: why`` or ``failed`` (with traceback) and its figures."""
    print(f"== {name}", flush=True)
    t0 = time.perf_counter()
    try:
        record = {"status": "ok", **fn(args, ctx)}
    except Skipped as e:
        reason, figures = e.args[0], (e.args[1] if len(e.args) > 1 else {})
        record = {"status": f"skipped: {reason}", **figures}
        say(name, "status", record["status"])
    except Exception as e:
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        record = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": tb}
        say(name, "status", f"FAILED: {type(e).__name__}: {e}")
    record["wall_s"] = time.perf_counter() - t0
    summary["stages"][name] = record


def environment(ctx) -> dict:
    import transformers

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
           "cuda_available": torch.cuda.is_available()}
    try:
        import deepspeed

        env["deepspeed"] = deepspeed.__version__
    except Exception as e:  # reported, and the learner stage will fail with the real error
        env["deepspeed"] = f"not importable: {e}"
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=props.total_memory / GIB, cuda=torch.version.cuda)
    return env


def write_summary(path: str, summary: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(f"gpu_smoke: summary written to {out}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--install", action="store_true",
                   help="first pip-install what is missing of omegaconf and DeepSpeed (DS_BUILD_OPS=0, "
                        "--no-build-isolation), from the package index")
    p.add_argument("--wheels", metavar="DIR", help="with --install: only from this folder of wheels (no index)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda (default) or the quick cpu mode")
    p.add_argument("--model-shape", choices=sorted(SHAPES), help="default: qwen2.5-0.5b on cuda, tiny on cpu")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--zero-stage", type=int, help="learner.zero_stage (default: 2 on cuda, 0 on cpu)")
    p.add_argument("--steps", type=int, default=3, help="train steps; the first is a warm-up (default 3)")
    p.add_argument("--prompts", type=int, help="GRPO groups per step (default 64 / 4)")
    p.add_argument("--prompt-len", type=int, help="prompt tokens, learner and engine (default 128 / 16)")
    p.add_argument("--group-size", type=int, help="completions per prompt (default 8 / 4)")
    p.add_argument("--min-len", type=int, help="shortest completion (default 256 / 8)")
    p.add_argument("--max-len", type=int, help="longest completion (default 2048 / 32)")
    p.add_argument("--micro-batch-size", type=int, help="learner.micro_batch_size (default 8 / 4)")
    p.add_argument("--max-tokens-per-micro-batch", type=int,
                   help="learner.max_tokens_per_micro_batch (default 16384 / 128)")
    p.add_argument("--gen-prompts", type=int, help="engine prompts (default 32 / 4)")
    p.add_argument("--gen-n", type=int, help="engine completions per prompt (default 8 / 2)")
    p.add_argument("--gen-tokens", type=int, help="engine max_new_tokens (default 512 / 16)")
    p.add_argument("--threads", type=int,
                   help="torch threads, also learner.torch_threads (default: torch's own on cuda, 1 on cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra rlpp config override for the learner (repeatable), e.g. --set learner.zero_stage=3")
    p.add_argument("--stages", default="learner,ipc,engine", help="comma-separated subset of learner,ipc,engine")
    p.add_argument("--ipc-timeout", type=float, default=600.0, help="seconds to wait for the IPC child (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="where the model and run folder go (default: a temporary folder, deleted)")
    p.add_argument("--out", help="JSON summary (default: $OUT/gpu_smoke.json if OUT is set, else ./gpu_smoke.json)")
    args = p.parse_args(argv)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = str(Path(os.environ["OUT"]) / "gpu_smoke.json") if os.environ.get("OUT") else "gpu_smoke.json"
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(args.stages) - {"learner", "ipc", "engine"}
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}; choose from learner, ipc, engine")
    if not 1 <= args.min_len <= args.max_len:
        p.error(f"need 1 <= --min-len <= --max-len, got {args.min_len} and {args.max_len}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    missing = missing_requirements()
    if args.install and set(missing) & set(INSTALL):
        install([m for m in missing if m in INSTALL], args.wheels)
        missing = missing_requirements()
    if missing:
        problem = report_missing(missing)
        write_summary(args.out, {"args": vars(args), "stages": {}, "ok": False, "missing": missing,
                                 "problems": [problem]})
        print(f"gpu_smoke: FAILED: {problem}", file=sys.stderr, flush=True)
        return 2
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        problem = "--device cuda but torch sees no CUDA GPU (use --device cpu for the quick mode)"
        write_summary(args.out, {"args": vars(args), "stages": {}, "ok": False, "problems": [problem]})
        print(f"gpu_smoke: FAILED: {problem}", file=sys.stderr)
        return 2
    from rlpp.sync import NCCL_DEFAULTS  # what every rlpp learner actor starts with

    for key, value in NCCL_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="rlpp-gpu-smoke-")
        workdir = Path(tmp.name)
    ctx = SimpleNamespace(cuda=cuda, device=torch.device("cuda", 0) if cuda else torch.device("cpu"),
                          workdir=str(workdir), model_path=None, eos=None, learner=None)
    if cuda:
        torch.cuda.set_device(ctx.device)
    summary = {"args": {k: v for k, v in vars(args).items()}, "environment": environment(ctx), "stages": {}}
    print(f"gpu_smoke: {json.dumps(summary['environment'])}", flush=True)
    t_start = time.perf_counter()
    try:
        run_stage("model", stage_model, args, ctx, summary)
        if "learner" in args.stages:
            run_stage("learner", stage_learner, args, ctx, summary)
        if "ipc" in args.stages:
            run_stage("ipc", stage_ipc, args, ctx, summary)
        release_learner(ctx)
        if "engine" in args.stages:
            run_stage("engine", stage_engine, args, ctx, summary)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if tmp is not None:
            tmp.cleanup()

    # Success: every stage ran; the IPC stage may be skipped only in the CPU mode (where its stand-in
    # must still have matched: a mismatch is a failure), and the CUDA IPC checksums must match.
    problems = []
    for name, record in summary["stages"].items():
        status = record["status"]
        if status == "failed" or (status.startswith("skipped") and not (name == "ipc" and not cuda)):
            problems.append(f"{name}: {record.get('error', status)}")
    ipc = summary["stages"].get("ipc")
    if cuda and ipc is not None and ipc["status"] == "ok" and not ipc.get("match"):
        problems.append("ipc: checksum mismatch")
    summary["ok"] = not problems
    summary["problems"] = problems
    summary["wall_s"] = time.perf_counter() - t_start
    write_summary(args.out, summary)
    if problems:
        print("gpu_smoke: FAILED\n  " + "\n  ".join(problems), flush=True)
        return 1
    statuses = ", ".join(f"{name} {record['status']}" for name, record in summary["stages"].items())
    print(f"gpu_smoke: OK ({statuses})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
