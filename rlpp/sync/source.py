"""What a learner rank hands every transport's sender: its full parameters, read one at a time.

The learner knows nothing of the transports and the senders nothing of DeepSpeed: the learner builds a
``WeightSource`` over its state dict, and ``object_store.pack_weights``, ``nccl.NcclRankSender`` and
``ipc.IpcRankSender`` consume it. (vLLM has a ``WeightSource`` of its own, the sender-side view its NCCL
engine reads; ``nccl._round_source_cls`` feeds it from this one.) The caller's obligation: under ZeRO-3 reading the parameters is a
collective (each one is gathered for its turn and freed after it), so every rank must read the whole
source, in order, at the same time, including the ranks that send nothing (``take_part``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class WeightSource:
    """One learner rank's view of the weights it can send."""

    rank: int
    """Data-parallel rank; rank 0 is the one that sends when a single copy is enough."""
    gathered: bool
    """A tensor is valid only until the next one is read (ZeRO-3 frees a gathered parameter after its
    turn): a sender that keeps tensors must copy them."""
    parameters: Callable[[], Iterator[tuple[str, torch.Tensor]]]
    """A fresh iterator of (name, full tensor) for every entry of the model's state dict, on the learner's
    device (``Learner._full_parameters``)."""
    on_cuda: bool = False
    """The tensors live on a CUDA device (``settle`` then has kernels to wait for)."""

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return self.parameters()

    def take_part(self) -> None:
        """Read every parameter without using it: a rank that sends nothing still joins each ZeRO-3 gather."""
        for _ in self.parameters():
            pass

    def settle(self) -> None:
        """Wait for the kernels queued on the current CUDA stream (the optimizer step): a reader on
        another stream or in another process would otherwise see half-updated weights."""
        if self.on_cuda:
            import torch

            torch.cuda.current_stream().synchronize()
