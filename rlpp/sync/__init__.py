"""Learner → rollout weight transfer, one module per transport, each holding both halves side by side:
``object_store`` (any engine, CPU or GPU), ``nccl`` (broadcast to vLLM engines on GPUs), ``ipc`` (CUDA IPC
to the colocated vLLM engine). The learner half of each reads a ``source.WeightSource``;
``rlpp.distributed.weight_sync`` drives both halves through Ray.

Nothing here imports torch, vLLM or Ray at import time, so the config (which resolves ``auto`` with
``resolve_weight_sync``) and GPU checks without Ray can use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlpp.config.schema import Config

TRANSPORTS = ("object_store", "nccl", "ipc")
"""The values ``rollout.weight_sync`` may take besides ``auto``."""


def resolve_weight_sync(cfg: Config) -> str:
    """``rollout.weight_sync`` with ``auto`` resolved: with a vLLM engine and a GPU learner, ``ipc`` when
    colocated (the engine shares the learner rank's GPU), else ``nccl``, except in pipelined mode, whose
    loads must queue between an actor's batches (an NCCL sync would make the learner wait for every
    queued batch); otherwise ``object_store``."""
    ro = cfg.rollout
    if ro.weight_sync != "auto":
        return ro.weight_sync
    if ro.engine != "vllm" or cfg.learner.gpus_per_actor <= 0:
        return "object_store"
    if ro.colocate:
        return "ipc"
    return "object_store" if cfg.trainer.mode == "pipelined" else "nccl"


def reset_prefix_cache(llm) -> None:
    """The end of every weight load into a vLLM ``LLM``, whatever the transport: no reload resets the
    scheduler's prefix cache (the model runner clears only LoRA, encoder and multimodal caches), and a
    prompt seen before would reuse KV computed with the old weights. vLLM refuses (returns False) while
    requests hold blocks; rollout actors load between their calls, so that is raised, never ignored."""
    if not llm.reset_prefix_cache():
        raise RuntimeError("prefix cache not reset after a weight load: requests still hold blocks")


NCCL_DEFAULTS = {"NCCL_NVLS_ENABLE": "0", "NCCL_CUMEM_ENABLE": "0"}
"""NCCL settings every learner and rollout actor starts with unless the driver's environment sets them.
Ray gives each actor only its own GPUs in CUDA_VISIBLE_DEVICES; on NVSwitch hosts (H100/H200) NCCL's
NVLink SHARP (NVLS) and cuMem-based buffers then hang or corrupt collectives between processes that
cannot see each other's devices (NVIDIA/nccl#1749, #1906; NeMo-RL turns them off the same way). Both
only cost some all-reduce bandwidth when off. Kept here, free of Ray, so GPU checks without Ray use it too."""
