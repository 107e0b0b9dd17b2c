"""Learner → rollout weight transfer: NCCL broadcast on GPU (``rlpp.sync.nccl``)."""

NCCL_DEFAULTS = {"NCCL_NVLS_ENABLE": "0", "NCCL_CUMEM_ENABLE": "0"}
"""NCCL settings every learner and rollout actor starts with unless the driver's environment sets them.
Ray gives each actor only its own GPUs in CUDA_VISIBLE_DEVICES; on NVSwitch hosts (H100/H200) NCCL's
NVLink SHARP (NVLS) and cuMem-based buffers then hang or corrupt collectives between processes that
cannot see each other's devices (NVIDIA/nccl#1749, #1906; NeMo-RL turns them off the same way). Both
only cost some all-reduce bandwidth when off. Kept here, free of Ray, so GPU checks without Ray use it too."""
