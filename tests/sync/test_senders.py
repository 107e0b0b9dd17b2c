"""The learner halves of the weight transports over a ``WeightSource``, without Ray, GPUs or vLLM: which
rank sends, that every rank reads the whole source (ZeRO-3 gathers are collectives), and that CUDA
kernels are waited for before the weights are read."""

from __future__ import annotations

import torch

from rlpp.sync.nccl import NcclRankSender, NcclWeightSender, WeightMetadata
from rlpp.sync.object_store import load_weights, pack_weights
from rlpp.sync.packed import PackedWeights
from rlpp.sync.source import WeightSource


def source(rank: int, reads: list, gathered: bool = False, on_cuda: bool = False) -> WeightSource:
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}

    def parameters():
        for name, t in tensors.items():
            reads.append(name)
            yield name, t

    return WeightSource(rank, gathered=gathered, parameters=parameters, on_cuda=on_cuda)


def test_object_store_rank0_packs_and_the_others_only_take_part():
    reads = []
    packed = pack_weights(source(0, reads))
    assert isinstance(packed, PackedWeights) and reads == ["w", "b"]
    assert torch.equal(packed["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    reads.clear()
    assert pack_weights(source(1, reads, gathered=True)) is None
    assert reads == ["w", "b"]  # every gather joined


def test_object_store_receiver_loads_every_tensor_into_the_engine():
    got = {}
    engine = type("Engine", (), {"load_weights": lambda self, items: got.update(items)})()
    load_weights(engine, pack_weights(source(0, [])))
    assert set(got) == {"w", "b"} and got["b"].dtype == torch.bfloat16


def test_nccl_ranks_other_than_0_describe_and_read_but_never_open_the_group():
    reads = []
    sender = NcclRankSender(source(1, reads))
    assert sender.init("127.0.0.1", 1, 2) is None and reads == ["w", "b"]  # metadata reads every tensor


def test_nccl_metadata_is_read_from_the_source():
    assert NcclWeightSender.metadata(source(0, [])) == WeightMetadata(("w", "b"), ("float32", "bfloat16"), ((2, 3), (2,)))


def test_nccl_send_waits_for_the_optimizer_step_on_cuda(monkeypatch):
    """vLLM's packed producer reads the weights on side streams that do not wait for the current one:
    the send synchronises it first (observed here through a stand-in stream; CUDA is not needed)."""
    events = []
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda: type("S", (), {"synchronize": lambda self: events.append("sync")})())
    NcclRankSender(source(1, events, on_cuda=True)).send(metadata=None)
    assert events == ["sync", "w", "b"]
