"""Colocated weight sync: a learner rank hands its weights to the vLLM engine on the same GPU through
CUDA IPC handles, on vLLM 0.32's ``"ipc"`` weight-transfer backend (``vllm/distributed/weight_transfer/
ipc_engine.py``). Nothing goes through host memory: the engine maps the learner's own tensors and copies
them into its parameters.

Call order (the driver drives both sides through Ray; ``rlpp.distributed.weight_sync.IpcSync``):

1. The engine is built with ``weight_transfer_config={"backend": "ipc"}`` and ``IpcWeightReceiver.init()``
   tells its workers the wire format (unpacked: one handle per tensor).
2. Each sync, after the optimizer step: every learner rank's ``IpcRankSender.export`` calls
   ``export_handles`` (under ZeRO-3 each parameter is gathered, a collective, and copied so the handle
   outlives the gather) and keeps the tensors alive; ``merge_update_infos`` joins the ranks' handles per
   tensor, keyed by GPU UUID, so each engine finds the one for its own GPU; every engine ``receive``s the
   merged info; then every learner rank drops its references (``IpcRankSender.release``), even when a
   receive failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from rlpp.sync import reset_prefix_cache

if TYPE_CHECKING:
    from vllm import LLM

    from rlpp.sync.source import WeightSource

BACKEND = "ipc"


def export_handles(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """This process's CUDA IPC handles for ``named_tensors``, as vLLM's IPC update info, and the tensors
    whose storage the handles point at (keep them alive until every engine has loaded them)."""
    from torch.multiprocessing.reductions import reduce_tensor

    names, dtypes, shapes, handles, keep = [], [], [], [], []
    uuid = None
    for name, tensor in named_tensors:
        t = tensor.detach().contiguous()
        if t.device.type != "cuda":
            raise ValueError(f"CUDA IPC needs CUDA tensors; {name} is on {t.device}")
        if uuid is None:
            uuid = str(torch.cuda.get_device_properties(t.device.index).uuid)
        names.append(name)
        dtypes.append(str(t.dtype).removeprefix("torch."))
        shapes.append(list(t.shape))
        handles.append({uuid: reduce_tensor(t)[1]})
        keep.append(t)
    return {"names": names, "dtype_names": dtypes, "shapes": shapes, "ipc_handles": handles}, keep


def merge_update_infos(infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One update info holding every rank's handle for each tensor (ranks on different GPUs)."""
    first = infos[0]
    for other in infos[1:]:
        if other["names"] != first["names"] or other["shapes"] != first["shapes"]:
            raise ValueError("learner ranks exported different tensors for one weight sync")
    merged = [dict() for _ in first["names"]]
    for info in infos:
        for slot, handle in zip(merged, info["ipc_handles"]):
            slot.update(handle)
    return {**first, "ipc_handles": merged}


class IpcRankSender:
    """One learner rank's half: exports handles to its full weights on its own GPU and keeps the tensors
    they point at alive until ``release``."""

    def __init__(self, source: WeightSource):
        self.source = source
        self._keep: list[torch.Tensor] = []

    def export(self) -> dict[str, Any]:
        """This rank's update info (every rank must call it: ZeRO-3 gathers)."""
        self.source.settle()  # the optimizer step's kernels are done before another process reads
        copy = self.source.gathered  # a gathered parameter is freed after its turn: copy it
        info, self._keep = export_handles((name, p.detach().clone() if copy else p.detach()) for name, p in self.source)
        return info

    def release(self) -> None:
        """Drop the exported tensors once every engine has loaded them (or failed to)."""
        self._keep = []
        torch.cuda.ipc_collect()
        torch.cuda.empty_cache()  # ZeRO-3's copies: their blocks back before the engine's KV cache wakes


class IpcWeightReceiver:
    """The engine side, inside the rollout actor that owns the ``LLM``."""

    def __init__(self, llm: LLM):
        self._llm = llm
        self._initialized = False

    def init(self) -> None:
        self._llm.init_weight_transfer_engine({"init_info": {"packed": False}})
        self._initialized = True

    def receive(self, update_info: dict[str, Any]) -> None:
        if not self._initialized:
            self.init()
        llm = self._llm
        llm.start_weight_update()
        llm.update_weights({"update_info": update_info})
        llm.finish_weight_update()
        reset_prefix_cache(llm)
