"""GPU weight sync: learner rank 0 broadcasts full weights to vLLM rollout engines over NCCL.

Built on vLLM 0.32's own weight-transfer API (``vllm/distributed/weight_transfer/``): the engines run
the ``"nccl"`` worker backend, the learner runs vLLM's ``NCCLTrainerWeightTransferEngine``; rlpp only
wires the two halves so that each can be called from a different Ray actor.

How vLLM moves the weights (paths under ``vllm/``):

- ``LLM(weight_transfer_config={"backend": "nccl"})`` makes every worker build an
  ``NCCLWeightTransferEngine`` after loading the model (``v1/worker/gpu_worker.py:599-605``).
- ``LLM.init_weight_transfer_engine`` fans out to every worker (``entrypoints/rl/offline.py:12-27``);
  each joins one NCCL group through vLLM's ``StatelessProcessGroup`` (TCPStore hosted by rank 0)
  at rank ``rank_offset + dp_index * (TP*PP) + worker_rank`` (``distributed/weight_transfer/
  nccl_common.py:184-221``). The learner opens rank 0 of the same group (``nccl_common.py:224-262``).
- Per sync: ``start_weight_update`` puts every layer into layerwise-reload mode
  (``nccl_engine.py:159-165``); ``update_weights`` receives the broadcast, packed into fixed-size
  chunks or tensor by tensor, and feeds each received tensor to ``model.load_weights``
  (``nccl_engine.py:175-228``); ``finish_weight_update`` runs the post-load processing
  (``nccl_engine.py:167-173``).
- Tensor parallelism: every TP/PP worker is its own rank and receives every *full* tensor, named and
  shaped as in the Hugging Face checkpoint; the model's ``load_weights`` then keeps its own shard
  (e.g. ``model_executor/layers/linear.py:576-585`` narrows by ``tp_rank``; Qwen2 fuses q/k/v into
  ``qkv_proj`` in ``model_executor/models/qwen2.py:453``). The sender does not know the TP layout.

Why rlpp does not let the learner drive the engines with vLLM's ``RayVLLMWeightSyncClient``
(``distributed/weight_transfer/clients.py:99-138``): that path hands one init payload with
``rank_offset=1`` to every engine (``nccl_engine.py:294-303``), so two independent ``LLM`` engines
(each with ``data_parallel_index`` 0) would claim the same ranks; and it would make the learner call
into the rollout actors. Here each engine gets its own ``rank_offset`` (``transfer_group_layout``) and
the trainer loop drives both sides. The sender's ``NCCLTrainerWeightTransferEngine`` is handed a
client whose control-plane calls do nothing (``_ReceiverDrivenClient``), so its ``send_weights()``
only broadcasts (``nccl_engine.py:318-361``).

Call order across processes (the driver holding Ray handles: ``rlpp.distributed.weight_sync.NcclSync``;
"rollout" is the actor owning an ``LLM`` and an ``NcclWeightReceiver``, "learner" a learner rank owning
an ``NcclRankSender``, whose rank 0 drives an ``NcclWeightSender``):

1. Rollout actors build ``LLM(..., **NcclWeightReceiver.vllm_engine_kwargs())``.
2. ``world_size, offsets = transfer_group_layout([engine world sizes])`` (``receiver.world_size``);
   ``address, port = Learner.endpoint()`` (``rlpp.distributed.local.free_endpoint``) *inside learner
   rank 0*, since rank 0 hosts the TCPStore there (``distributed/utils.py:489-494``).
3. Rendezvous, all at once: launch ``receiver.init(address, port, offsets[i], world_size)`` on every
   rollout actor and ``sender.init(address, port, world_size)`` on every learner rank (only rank 0
   joins the group; the others read the weights, their share of each ZeRO-3 gather) as Ray calls,
   then ``ray.get`` all of them together. Each call blocks until all ``world_size`` ranks have joined
   (TCPStore timeout 300 s, ``distributed/utils.py:465-512``); awaiting one side before launching
   the other deadlocks. Rank 0's ``init`` returns the weights' ``WeightMetadata`` (constant across
   steps, so it is taken once).
4. Each sync, once the optimizer step is done and no ``generate`` is running on the engines: launch
   ``receiver.receive(meta)`` on every rollout actor *without awaiting it*, launch
   ``sender.send(meta)`` on every learner rank, then ``ray.get`` them all. Receivers block
   inside NCCL until the broadcast arrives and vice versa; the launch order does not matter so long as
   neither side is awaited before the other is launched. Send every parameter each time: a layer
   that receives only some of its tensors is rebuilt with the others uninitialized
   (``model_executor/model_loader/reload/layerwise.py:226-285,344-373``).
5. Nothing is closed: the run kills its actors at teardown and each communicator goes with its
   process (NCCL's destroy first waits for the operations still outstanding, which after a failed
   sync never complete).

A sync that fails on one side leaves the other blocked in NCCL with no timeout, and a failed receive
leaves the engine's layers half reloaded: treat any error in steps 3-4 as fatal and kill the actors.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlpp.sync import reset_prefix_cache

if TYPE_CHECKING:
    import torch
    from vllm import LLM

    from rlpp.sync.source import WeightSource

logger = logging.getLogger(__name__)

BACKEND = "nccl"
"""vLLM weight-transfer backend name (``vllm/distributed/weight_transfer/factory.py`` registry key)."""

DEFAULT_BUFFER_BYTES = 1 << 30
DEFAULT_NUM_BUFFERS = 2
# Same as vLLM's DEFAULT_PACKED_* (vllm/distributed/weight_transfer/packed_tensor.py:15-16),
# restated so that importing this module does not import vLLM.


@dataclass(frozen=True)
class WireParams:
    """How tensors travel; both sides must use the same value (a mismatch hangs NCCL or loads garbage).

    The worker side learns these only from ``init`` (``nccl_common.py:71-103``; its own default is
    unpacked), the sender from ``NCCLTrainerInitInfo`` (``nccl_engine.py:52-80``).
    """

    packed: bool = True
    """Concatenate tensors into ``buffer_size_bytes`` chunks per broadcast instead of one per tensor."""
    buffer_size_bytes: int = DEFAULT_BUFFER_BYTES
    """Bytes per packed chunk; GPU headroom needed on every rank ≈ this × ``num_buffers``."""
    num_buffers: int = DEFAULT_NUM_BUFFERS
    """Chunks in flight (double buffering overlaps packing with the broadcast)."""

    def __post_init__(self) -> None:
        if self.buffer_size_bytes <= 0:
            raise ValueError(f"WireParams.buffer_size_bytes must be > 0, got {self.buffer_size_bytes}")
        if self.num_buffers < 1:
            raise ValueError(f"WireParams.num_buffers must be >= 1, got {self.num_buffers}")


@dataclass(frozen=True)
class WeightMetadata:
    """What one sync sends, in send order: checkpoint names, dtype names (``"bfloat16"``), full shapes.

    Names are those of the Hugging Face checkpoint the engine loaded (``model.layers.0.mlp.up_proj.weight``,
    no DeepSpeed ``module.`` prefix); shapes are full, unsharded. Plain strings and ints, so it
    crosses Ray without torch on the caller's side.
    """

    names: tuple[str, ...]
    dtype_names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.dtype_names) == len(self.shapes)):
            raise ValueError(
                f"WeightMetadata: {len(self.names)} names, {len(self.dtype_names)} dtype_names, "
                f"{len(self.shapes)} shapes; all three must have one entry per tensor"
            )
        seen: set[str] = set()
        for name in self.names:
            if name in seen:
                raise ValueError(f"WeightMetadata: tensor {name!r} appears twice")
            seen.add(name)

    def update_info(self) -> dict[str, Any]:
        """The ``update_info`` dict of vLLM's ``NCCLWeightTransferUpdateInfo`` (``nccl_engine.py:83-109``)."""
        return {
            "names": list(self.names),
            "dtype_names": list(self.dtype_names),
            "shapes": [list(s) for s in self.shapes],
        }


def transfer_group_layout(engine_world_sizes: Sequence[int]) -> tuple[int, list[int]]:
    """``(world_size, rank_offset per engine)`` of the transfer group: the sender is rank 0, then each
    engine's TP×PP workers in a contiguous block (``nccl_common.py:195-201`` adds the offset)."""
    for i, size in enumerate(engine_world_sizes):
        if size < 1:
            raise ValueError(f"engine {i} has world size {size}; expected >= 1")
    offsets: list[int] = []
    next_rank = 1
    for size in engine_world_sizes:
        offsets.append(next_rank)
        next_rank += size
    return next_rank, offsets


class NcclWeightReceiver:
    """Rollout side: drives one vLLM ``LLM`` (built with ``vllm_engine_kwargs()``) through a sync.

    Calls block the calling thread until every worker of the engine has finished its part.
    """

    def __init__(self, llm: LLM) -> None:
        self._llm = llm
        self._initialized = False

    @staticmethod
    def vllm_engine_kwargs() -> dict[str, Any]:
        """Extra ``LLM(...)`` kwargs enabling the NCCL backend.

        ``LLM`` forwards unknown kwargs to ``EngineArgs`` (``entrypoints/llm.py:223,296-337``), whose
        ``weight_transfer_config`` accepts a dict (``engine/arg_utils.py:844-847,880-883``); a dict
        keeps this picklable and free of vLLM imports.
        """
        return {"weight_transfer_config": {"backend": BACKEND}}

    @property
    def world_size(self) -> int:
        """Ranks this engine takes in the transfer group: its TP × PP × DP workers (``llm.py:389``)."""
        return self._llm.get_world_size(include_dp=True)

    def init(
        self,
        master_address: str,
        master_port: int,
        rank_offset: int,
        world_size: int,
        wire: WireParams = WireParams(),
    ) -> None:
        """Join the transfer group; blocks until the sender and every other engine have joined too."""
        from vllm.distributed.weight_transfer.nccl_common import (
            NCCLWeightTransferInitInfo,
            worker_init_payload,
        )

        if rank_offset < 1 or rank_offset + self.world_size > world_size:
            raise ValueError(
                f"rank_offset={rank_offset} with {self.world_size} workers does not fit in a transfer "
                f"group of world_size={world_size} whose rank 0 is the sender"
            )
        info = NCCLWeightTransferInitInfo(
            master_address=master_address,
            master_port=master_port,
            rank_offset=rank_offset,
            world_size=world_size,
            packed=wire.packed,
            packed_buffer_size_bytes=wire.buffer_size_bytes,
            packed_num_buffers=wire.num_buffers,
        )
        self._llm.init_weight_transfer_engine({"init_info": worker_init_payload(info)})
        self._initialized = True
        logger.info("engine joined weight-transfer group at ranks %d..%d of %d",
                    rank_offset, rank_offset + self.world_size - 1, world_size)

    def receive(self, metadata: WeightMetadata, version: str | None = None) -> None:
        """Receive one sync (the sender's ``send`` must run concurrently) and make it visible.

        ``version`` becomes the engine's weight version (``entrypoints/rl/offline.py:56-60``).
        """
        if not self._initialized:
            # Checked here because start_weight_update already moves layers to the meta device
            # (reload/layerwise.py:83-117) before the worker notices the missing group.
            raise RuntimeError("NcclWeightReceiver.receive() before init()")
        llm = self._llm
        llm.start_weight_update()
        llm.update_weights({"update_info": metadata.update_info()})
        llm.finish_weight_update(version)
        reset_prefix_cache(llm)  # finish_weight_update invalidates no cache (gpu_worker.py:1587-1604)

    def close(self) -> None:
        """Leave the transfer group (``gpu_worker.py:1498-1505``); the engine keeps serving."""
        if self._initialized:
            self._llm.shutdown_weight_transfer_engine()
            self._initialized = False


class _ReceiverDrivenClient:
    """``VLLMWeightSyncClient`` (``distributed/weight_transfer/base.py:522``) whose calls do nothing:
    in rlpp the trainer loop drives the engines through ``NcclWeightReceiver``, not the learner."""

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        pass

    def start_weight_update(self) -> None:
        pass

    def update_weights(self, update_info: Any) -> None:
        pass

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        pass


@functools.cache
def _round_source_cls() -> type:
    """A vLLM ``WeightSource`` serving the tensors of the current ``send`` (defined lazily: vLLM import)."""
    import torch
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class _RoundSource(WeightSource):
        """Metadata declared by the receivers' copy of ``WeightMetadata``; tensors from the caller's
        iterable, moved to the sender's device (NCCL reads device memory only)."""

        def __init__(self, device: torch.device) -> None:
            self._device = device
            self._metas: list[ParamMeta] | None = None
            self._tensors: Iterable[tuple[str, torch.Tensor]] | None = None

        def begin(self, metadata: WeightMetadata, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
            self._metas = [
                ParamMeta(name, getattr(torch, dtype_name), tuple(shape))
                for name, dtype_name, shape in zip(metadata.names, metadata.dtype_names, metadata.shapes)
            ]
            self._tensors = named_tensors

        def end(self) -> None:
            self._metas = None
            self._tensors = None

        def metadata(self) -> list[ParamMeta]:
            if self._metas is None:
                raise RuntimeError("weight source read outside NcclWeightSender.send()")
            return self._metas

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            if self._tensors is None:
                raise RuntimeError("weight source read outside NcclWeightSender.send()")
            for name, tensor in self._tensors:
                # detach: packing concatenates tensors, which would otherwise record an autograd graph.
                yield name, tensor.detach().to(self._device)

    return _RoundSource


class NcclWeightSender:
    """Learner side: rank 0 of the transfer group, broadcasting the weights it holds in full.

    Run it in the process whose current CUDA device holds (or will receive) the weights; the group
    is bound to ``torch.cuda.current_device()`` at ``init``. Nothing here is DeepSpeed-specific:
    gathering ZeRO-3 partitions into full tensors is the caller's job.
    """

    def __init__(self, wire: WireParams = WireParams()) -> None:
        self.wire = wire
        self._engine: Any = None
        self._source: Any = None

    @staticmethod
    def metadata(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> WeightMetadata:
        """Describe ``named_tensors`` (read ``.shape``/``.dtype`` only; no data is touched)."""
        names: list[str] = []
        dtype_names: list[str] = []
        shapes: list[tuple[int, ...]] = []
        for name, tensor in named_tensors:
            names.append(name)
            dtype_names.append(str(tensor.dtype).removeprefix("torch."))  # as nccl_engine.py:334
            shapes.append(tuple(int(d) for d in tensor.shape))
        return WeightMetadata(tuple(names), tuple(dtype_names), tuple(shapes))

    def init(self, master_address: str, master_port: int, world_size: int) -> None:
        """Open rank 0 of the transfer group; blocks until every engine worker has joined."""
        import torch
        from vllm.distributed.weight_transfer import WeightTransferTrainerFactory
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        if self._engine is not None:
            raise RuntimeError("NcclWeightSender.init() called twice")
        if world_size < 2:
            raise ValueError(f"world_size={world_size}: the group needs the sender and >= 1 engine worker")
        self._source = _round_source_cls()(torch.device("cuda", torch.cuda.current_device()))
        info = NCCLTrainerInitInfo(
            master_address=master_address,
            master_port=master_port,
            world_size=world_size,
            rank=0,
            packed=self.wire.packed,
            packed_buffer_size_bytes=self.wire.buffer_size_bytes,
            packed_num_buffers=self.wire.num_buffers,
        )
        self._engine = WeightTransferTrainerFactory.trainer_init(
            info, client=_ReceiverDrivenClient(), source=self._source
        )
        logger.info("sender opened weight-transfer group of %d ranks at %s:%d",
                    world_size, master_address, master_port)

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]], metadata: WeightMetadata) -> None:
        """Broadcast ``named_tensors``, which must match ``metadata`` (the receivers' copy) element by
        element; returns once every broadcast has left this GPU.

        ``named_tensors`` is iterated once, lazily, so a generator may gather one parameter at a
        time. A mismatch raises ``ValueError`` naming the first divergent tensor
        (``nccl_engine.py:395-436``), after the receivers have already taken the tensors before it.
        """
        if self._engine is None:
            raise RuntimeError("NcclWeightSender.send() before init()")
        self._source.begin(metadata, named_tensors)
        try:
            self._engine.send_weights()
        finally:
            self._source.end()


class NcclRankSender:
    """One learner rank's part in every NCCL sync, over its ``WeightSource``: rank 0 is rank 0 of the
    transfer group and broadcasts through an ``NcclWeightSender``; every other rank only reads the
    source, which under ZeRO-3 is its share of each gather."""

    def __init__(self, source: WeightSource, wire: WireParams = WireParams()) -> None:
        self.source = source
        self._sender = NcclWeightSender(wire) if source.rank == 0 else None

    def init(self, master_address: str, master_port: int, world_size: int) -> WeightMetadata | None:
        """Describe the weights (every rank: reading them gathers each parameter under ZeRO-3); rank 0
        then opens the transfer group and returns the metadata for the receivers, the others None."""
        metadata = NcclWeightSender.metadata(self.source)
        if self._sender is None:
            return None
        self._sender.init(master_address, master_port, world_size)
        return metadata

    def send(self, metadata: WeightMetadata | None) -> None:
        """Broadcast the current weights (rank 0) or take part in their gathers (other ranks)."""
        # vLLM's packed producer copies and broadcasts on side streams that do not wait for this one:
        # the optimizer step's kernels must be done before the weights are read.
        self.source.settle()
        if self._sender is None:
            self.source.take_part()
            return
        self._sender.send(((name, p.detach()) for name, p in self.source), metadata)
