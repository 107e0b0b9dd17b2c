"""One learner rank: a DeepSpeed engine over the policy, GRPO steps, weights out, checkpoints.

A plain class; ``rlpp.distributed.groups.LearnerGroup`` wraps W of them in Ray actors that form one
data-parallel process group (gloo on CPU, NCCL on GPU).

One ``train`` call is one optimizer step over every micro-batch it is given. DeepSpeed runs with
``managed_gradient_accumulation: false``: ``backward`` only accumulates and ``step`` is the boundary,
so a step may hold however many micro-batches survived the zero-variance filter. Every rank must still
run the same number of micro-batches (ZeRO's collectives are per forward/backward), which the group
guarantees by padding with empty ones.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import torch

from rlpp.algo.batch import TrainBatch
from rlpp.algo.loss import LossNorm, PolicyLossInput, policy_loss, tis_weights
from rlpp.config.schema import Config
from rlpp.distributed.local import free_endpoint
from rlpp.learner import lora
from rlpp.learner.policy import TokenLogprobs
from rlpp.models.tiny import load_model
from rlpp.sync.ipc import IpcRankSender
from rlpp.sync.nccl import NcclRankSender, WeightMetadata
from rlpp.sync.object_store import pack_weights
from rlpp.sync.packed import PackedWeights
from rlpp.sync.source import WeightSource

log = logging.getLogger(__name__)


def deepspeed_config(cfg: Config, world_size: int) -> dict:
    lc = cfg.learner
    bf16 = cfg.model.dtype == "bfloat16"
    config = {
        "train_micro_batch_size_per_gpu": lc.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": lc.micro_batch_size * world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": lc.grad_clip,
        "zero_optimization": {"stage": lc.zero_stage},
        "bf16": {"enabled": bf16},
        # Gradients of a step's micro-batches add up in fp32, not in bf16's 8-bit mantissa (DeepSpeed
        # otherwise accumulates in the model's dtype). ZeRO-0 cannot do this with bf16 weights, which
        # config validation rejects.
        "data_types": {"grad_accum_dtype": "fp32"},
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW: no 45 s FusedAdam JIT build, and the same numerics on CPU and GPU. Its fused
            # kernel (CPU and CUDA) makes one pass over the weights instead of a dozen: on SmolLM2-135M's
            # fp32 master weights the optimizer step takes 0.55 s instead of 3 s on one CPU thread.
            "params": {"lr": lc.lr, "weight_decay": lc.weight_decay, "betas": [0.9, 0.999], "eps": lc.adam_eps,
                       "torch_adam": True, "fused": True},
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if lc.warmup_steps:  # DeepSpeed's WarmupLR refuses 0 steps; no scheduler is a constant rate
        config["scheduler"] = {
            "type": "WarmupLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": lc.lr, "warmup_num_steps": lc.warmup_steps,
                       "warmup_type": "linear"},
        }
    return config


STALE_LOCK_S = 600.0
"""A build lock older than this is a killed build's (the shm_comm build takes well under a minute)."""


def clear_stale_build_lock(max_age_s: float = STALE_LOCK_S) -> Path | None:
    """Remove a stale ``lock`` left in DeepSpeed's shm_comm build folder by a process killed while it
    built or checked the op: torch waits on that file forever, so every later run would hang in
    DeepSpeed's CPU set-up. Returns the path removed, if any."""
    import time

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    for lock in root.glob("*/deepspeed_shm_comm/lock"):
        try:
            age = time.time() - lock.stat().st_mtime
            if age > max_age_s:
                lock.unlink()
                log.warning("removed a stale DeepSpeed build lock %s (%.0f s old, left by a killed process)", lock, age)
                return lock
        except FileNotFoundError:
            pass
    return None


class Learner:
    """Data-parallel rank ``rank`` of ``world_size``."""

    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int):
        self.cfg, self.model_path, self.rank, self.world_size = cfg, model_path, rank, world_size
        self.temperature = cfg.rollout.temperature
        self.adapters = None
        """peft's wrapper around the policy's HF model with ``model.lora`` (``rlpp.learner.lora``), else None."""

    @staticmethod
    def endpoint() -> tuple[str, int]:
        """This node's address and a free port, for rank 0 to host a rendezvous (the process group's, or
        the NCCL weight-transfer group's)."""
        return free_endpoint()

    def connect(self, master_addr: str, master_port: int) -> None:
        """Join the process group and build the DeepSpeed engine (all ranks at once)."""
        cfg, rank, world_size, model_path = self.cfg, self.rank, self.world_size, self.model_path
        use_cuda = cfg.learner.gpus_per_actor > 0
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK="0")
        if not use_cuda:
            torch.set_num_threads(cfg.torch_threads("learner"))
            clear_stale_build_lock()
        import deepspeed

        self.device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        backend = "nccl" if use_cuda else "gloo"
        # torch's own rendezvous (init_method env://) listens on every interface; this one listens on
        # the rank-0 node's address only. DeepSpeed then finds the process group made and adopts it.
        torch.distributed.init_process_group(backend, store=self._rendezvous(master_addr, master_port),
                                             rank=rank, world_size=world_size)
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
        torch.manual_seed(cfg.seed + rank)
        model = self._policy(gradient_checkpointing=cfg.learner.gradient_checkpointing, adapters=cfg.model.lora.enabled)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=deepspeed_config(cfg, world_size),
        )
        self._offloaded = False  # see offload_states
        self.ref = None
        if cfg.algo.kl_coef > 0 and self.adapters is not None:
            self.ref = WithoutAdapters(self.adapters, self.engine.module)
        elif cfg.algo.kl_coef > 0:
            ref = self._policy(gradient_checkpointing=False).eval().requires_grad_(False)
            if cfg.learner.zero_stage == 3:
                # Partitioned like the policy: a full unsharded copy per rank would undo ZeRO-3.
                ref_config = {k: v for k, v in deepspeed_config(cfg, world_size).items()
                              if k not in ("optimizer", "scheduler", "data_types", "gradient_clipping")}
                ref, _, _, _ = deepspeed.initialize(model=ref, config=ref_config)
            else:
                ref = ref.to(self.device)
            self.ref = ref

    def _rendezvous(self, address: str, port: int) -> torch.distributed.TCPStore:
        """The process group's key-value store, hosted by rank 0 on ``address`` alone."""
        import datetime
        import socket

        timeout = datetime.timedelta(minutes=10)
        if self.rank != 0:
            return torch.distributed.TCPStore(address, port, self.world_size, is_master=False, timeout=timeout)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._store_socket = socket.socket(family, socket.SOCK_STREAM)
        self._store_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._store_socket.bind((address, port))
        self._store_socket.listen()
        return torch.distributed.TCPStore(address, port, self.world_size, is_master=True, timeout=timeout,
                                          master_listen_fd=self._store_socket.fileno())

    def _policy(self, gradient_checkpointing: bool, adapters: bool = False) -> TokenLogprobs:
        """The HF model wrapped to return chosen-token log-probs (``rlpp.learner.policy``); with ``adapters``
        it trains LoRA adapters only (``self.adapters`` is then peft's wrapper around it)."""
        cfg = self.cfg
        model = load_model(self.model_path, cfg.model.dtype, cfg.model.trust_remote_code)
        model.config.use_cache = False
        if gradient_checkpointing:  # keep one layer's activations, recompute the rest in backward
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if adapters:
            self.adapters = lora.add_adapters(model, cfg.model.lora, seed=cfg.seed)
        return TokenLogprobs(model, temperature=self.temperature, chunk_tokens=cfg.learner.logprob_chunk_tokens)

    # ------------------------------------------------------------------ training
    def train(self, micro_batches: list[TrainBatch | None], norm: LossNorm) -> dict[str, float]:
        """One optimizer step. ``norm`` holds the step's global sequence/token counts (all ranks).

        A non-finite loss on any rank skips the whole step on every rank (gradients dropped, weights
        and optimizer state untouched) and is reported as ``skipped``; the trainer decides when to stop.
        """
        engine, algo = self.engine, self.cfg.algo
        self._reload_states()
        engine.train()
        sums = {"loss": 0.0, "pg_loss": 0.0, "clip_frac": 0.0, "clip_frac_low": 0.0, "clip_frac_high": 0.0,
                "ratio_mean": 0.0, "kl": 0.0, "logprob_diff": 0.0, "entropy": 0.0, "tis_mean": 0.0, "tis_capped_frac": 0.0}
        tokens, skipped = 0, False
        clock = _PhaseClock(self.device)
        for mb in micro_batches:
            empty = mb is None or mb.num_tokens == 0
            mb = self._placeholder() if mb is None else mb
            clock.start()
            logp, entropy = self._logprobs(engine, mb)
            mask = mb.loss_mask[:, 1:].to(self.device)
            ref = None
            if self.ref is not None:
                with torch.no_grad():
                    ref, _ = self._logprobs(self.ref, mb)
            # The ratio's denominator: the behaviour policy's log-probs when the group passed them (several
            # optimizer steps per batch, or the rollout engine's), else this policy's own (one on-policy step).
            old = logp.detach() if mb.old_logprobs is None else mb.old_logprobs[:, 1:].to(self.device)
            tis, tis_stats = None, {}
            if algo.tis_cap > 0:
                tis, tis_stats = tis_weights(old, mb.rollout_logprobs[:, 1:].to(self.device), mask, algo.tis_cap)
            out = policy_loss(
                PolicyLossInput(logprobs=logp, old_logprobs=old, advantages=mb.advantages.to(self.device),
                                mask=mask, ref_logprobs=ref, token_weights=tis,
                                sequence_weights=None if mb.weights is None else mb.weights.to(self.device)),
                variant=algo.loss, clip_low=algo.clip_low, clip_high=algo.clip_high, kl_coef=algo.kl_coef,
                total_sequences=norm.total_sequences, total_tokens=norm.total_tokens, max_len=norm.max_len,
            )
            # Every rank takes the same branch (ZeRO's collectives run inside backward).
            skipped = skipped or not self._all_finite(out.loss)
            clock.stop("forward")
            if skipped:
                continue
            # DeepSpeed averages gradients over ranks; the loss is already a share of the global sum.
            clock.start()
            engine.backward(out.loss * (0.0 if empty else self.world_size), scale_wrt_gas=False)
            clock.stop("backward")
            if empty:
                continue
            n = mb.num_tokens
            tokens += n
            sums["loss"] += out.loss.item()
            sums["pg_loss"] += out.metrics["pg_loss"]
            for k in ("clip_frac", "clip_frac_low", "clip_frac_high", "ratio_mean", "kl"):
                sums[k] += out.metrics.get(k, 0.0) * n
            for k, v in tis_stats.items():
                sums[k] += v * n
            m = mask.bool()
            sums["logprob_diff"] += float((logp.detach() - mb.rollout_logprobs[:, 1:].to(self.device))[m].abs().sum())
            sums["entropy"] += float(entropy[m].sum())
        if skipped:
            self._drop_gradients()
            return {**{k: 0.0 for k in sums}, "tokens": 0, "lr": float(engine.get_lr()[0]),
                    "grad_norm": float("nan"), "skipped": True, **self._memory_metrics(), **clock.seconds}
        clock.start()
        local_norm = self._local_grad_norm() if self.cfg.learner.zero_stage == 0 else None
        engine.step()
        clock.stop("optimizer")
        # ZeRO optimizers report the global norm; without ZeRO DeepSpeed clips but keeps the norm to
        # itself, so report the one measured here (exact for one learner, rank 0's share otherwise).
        grad_norm = engine.get_global_grad_norm()
        grad_norm = local_norm if grad_norm is None else grad_norm
        # Sums over this rank's tokens; the group adds ranks up and divides by the step's token count.
        return {
            **sums, "tokens": tokens, "lr": float(engine.get_lr()[0]), "skipped": False,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"), **self._memory_metrics(),
            **clock.seconds,
        }

    def _memory_metrics(self) -> dict[str, float]:
        """On CUDA, what torch's caching allocator holds after a step: the learner's peak, which colocated
        mode must give back before the engine wakes (``offload_states``)."""
        if self.device.type != "cuda":
            return {}
        return {"memory_reserved_gib": torch.cuda.memory_reserved(self.device) / 2**30}

    @torch.no_grad()
    def logprobs(self, micro_batches: list[TrainBatch | None]) -> list[torch.Tensor | None]:
        """This policy's log-probs of each micro-batch's tokens ([n, L] on CPU, 0 off the completion,
        aligned with ``input_ids``), for old log-probs recomputed once per batch. Every rank runs the
        same number of forwards (``None`` entries run a placeholder), since ZeRO-3 gathers inside them."""
        self.engine.eval()
        out: list[torch.Tensor | None] = []
        for mb in micro_batches:
            logp, _ = self._logprobs(self.engine, self._placeholder() if mb is None else mb)
            if mb is None:
                out.append(None)
                continue
            full = torch.zeros(mb.input_ids.shape, dtype=torch.float32)
            full[:, 1:] = logp.float().cpu() * mb.loss_mask[:, 1:]
            out.append(full)
        return out

    def _all_finite(self, loss: torch.Tensor) -> bool:
        ok = torch.isfinite(loss.detach()).float().reshape(1)
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    def _drop_gradients(self) -> None:
        """Forget what this step accumulated without touching weights or optimizer moments."""
        self.engine.zero_grad()
        optimizer = self.engine.optimizer
        if hasattr(optimizer, "zero_grad"):
            optimizer.zero_grad()
        from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

        if isinstance(optimizer, DeepSpeedZeroOptimizer):
            # ZeRO-1/2 adds each micro-batch's reduced gradients into buffers that zero_grad leaves alone
            # and the next step would add to: all_grad_tensors (same dtype as the weights), or with bf16
            # weights and fp32 accumulation an fp32 partition buffer (averaged_gradients). Release both,
            # as DeepSpeed's own overflow branch in step() does.
            for buffers in (optimizer.averaged_gradients, optimizer.all_grad_tensors):
                for k in buffers:
                    buffers[k] = None

    # ------------------------------------------------------------------ colocated memory
    def offload_states(self) -> None:
        """Colocated mode, before the engine on this GPU wakes (``rlpp.distributed.weight_sync``): move the
        states only ``train`` reads to CPU and return the step's cached blocks to the driver. vLLM sized its
        KV cache at start-up, before this learner existed, and takes all of it back on every wake, while
        torch's allocator would otherwise keep the step's peak (activations, logits chunks, reduction
        buckets) reserved. The bf16/fp32 weights stay: the weight sync and ``logprobs`` read them.
        ``train`` moves the states back. A no-op on CPU."""
        if self.device.type != "cuda":
            return
        self._offload()
        torch.cuda.empty_cache()
        log.info("learner rank %d: %.2f GiB reserved with the engine awake (%.2f GiB allocated)", self.rank,
                 torch.cuda.memory_reserved(self.device) / 2**30, torch.cuda.memory_allocated(self.device) / 2**30)

    def _offload(self) -> None:
        include = self._offloadable()
        if include and not self._offloaded:
            self.engine.offload_states(include=include)
            self._offloaded = True

    def _reload_states(self) -> None:
        if self._offloaded:
            self.engine.reload_states()
            self._offloaded = False

    def _offloadable(self) -> list:
        """What DeepSpeed can move off this engine's device (``engine.offload_states``): ZeRO-1/2 its fp32
        master weights, Adam moments and gradient partitions; ZeRO-3 only its gradient buffers (its master
        weights and moments only under FusedAdam, which rlpp does not build); ZeRO-0's torch optimizer and
        ZeRO-1 + bf16's BF16_Optimizer nothing. Those keep their states on the GPU, partitioned over ranks."""
        from deepspeed.runtime.zero.offload_config import OffloadStateTypeEnum as State
        from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
        from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

        optimizer = self.engine.optimizer
        if isinstance(optimizer, DeepSpeedZeroOptimizer):
            return [State.optim_states, State.hp_params, State.lp_grads]
        if isinstance(optimizer, DeepSpeedZeroOptimizer_Stage3):
            return [State.lp_grads, State.contiguous_grad_buffer]
        return []

    def _local_grad_norm(self) -> float:
        grads = [p.grad.detach().float() for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0

    def _placeholder(self) -> TrainBatch:
        """An empty micro-batch: keeps this rank's forward/backward count equal to the others'."""
        one = torch.zeros((1, 1), dtype=torch.long)
        return TrainBatch(one, torch.ones_like(one), one.bool(), torch.zeros(1), torch.zeros((1, 1)))

    def _logprobs(self, model, mb: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, L-1] log-probs (and entropy) of the completion tokens; 0 at prompt and padding."""
        return model(mb.input_ids.to(self.device), mb.attention_mask.to(self.device), mb.loss_mask.to(self.device))

    # ------------------------------------------------------------------ weights
    def _full_parameters(self):
        """(name, full tensor) for every entry of the model's state dict, tied aliases included (vLLM's
        layerwise reload leaves a tied lm_head uninitialised unless it arrives under its own name).
        Under ZeRO-3 each parameter is gathered in turn, a collective: every rank must iterate.
        Tensors stay on the learner's device and are valid until the next one is yielded. With LoRA, the
        base model's entries with the adapters merged in (``lora.merged_weights``; ZeRO-3 is refused)."""
        if self.adapters is not None:
            yield from lora.merged_weights(self.engine.module.policy)
            return
        state = self.engine.module.policy.state_dict(keep_vars=True)
        if self.cfg.learner.zero_stage != 3:
            yield from state.items()
            return
        import deepspeed

        for name, t in state.items():
            if isinstance(t, torch.nn.Parameter):
                with deepspeed.zero.GatheredParameters([t], modifier_rank=None):
                    yield name, t
            else:
                yield name, t

    def _weight_source(self) -> WeightSource:
        """What the weight transports' senders read (``rlpp.sync.source``)."""
        return WeightSource(self.rank, gathered=self.cfg.learner.zero_stage == 3, parameters=self._full_parameters,
                            on_cuda=self.device.type == "cuda")

    def named_weights(self) -> dict[str, torch.Tensor] | None:
        """Full weights on CPU (rank 0; None elsewhere). Collective under ZeRO-3: call on every rank."""
        out = {name: p.detach().to("cpu", copy=True) for name, p in self._full_parameters() if self.rank == 0}
        return out if self.rank == 0 else None

    # The learner halves of the weight transports (rlpp.sync), called by rlpp.distributed.weight_sync on
    # every rank at once.
    def packed_weights(self) -> PackedWeights | None:
        """The object-store sync's payload (rank 0; None elsewhere)."""
        return pack_weights(self._weight_source())

    def sync_init(self, address: str, port: int, world_size: int) -> WeightMetadata | None:
        """Join the NCCL weight-transfer group; rank 0 returns the weights' metadata for the receivers."""
        self._nccl = NcclRankSender(self._weight_source())
        return self._nccl.init(address, port, world_size)

    def sync_send(self, metadata: WeightMetadata | None) -> None:
        self._nccl.send(metadata)

    def ipc_export(self) -> dict:
        """CUDA IPC handles to this rank's full weights, valid until ``ipc_release``."""
        return self._ipc.export()

    def ipc_release(self) -> None:
        self._ipc.release()

    @functools.cached_property
    def _ipc(self) -> IpcRankSender:
        return IpcRankSender(self._weight_source())

    # ------------------------------------------------------------------ checkpoints
    def save(self, folder: str) -> None:
        """HF weights (``save_pretrained``, rank 0) plus DeepSpeed optimizer/scheduler state (all ranks).
        With LoRA the HF weights are the merged ones (what ``rlpp eval`` reads), the adapters go to
        ``adapter/`` in peft's format, and DeepSpeed's state holds the adapters and their optimizer state
        alone: the frozen base is rebuilt from ``model.path`` on resume, not stored again. Offloaded states
        (``offload_states``) are saved from CPU where they are."""
        weights = self.named_weights()
        if self.rank == 0:
            self.engine.module.policy.save_pretrained(folder, state_dict=weights)
            if self.adapters is not None:
                lora.save_adapters(self.adapters, folder)
        self.engine.save_checkpoint(str(Path(folder) / "deepspeed"), tag="state",
                                    exclude_frozen_parameters=self.adapters is not None)

    def load(self, folder: str) -> None:
        self._reload_states()  # load_checkpoint writes into the optimizer's buffers on the device
        custom = lora.load_adapter_state if self.adapters is not None else None
        path, _ = self.engine.load_checkpoint(str(Path(folder) / "deepspeed"), tag="state", custom_load_fn=custom)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed state under {folder}/deepspeed")


class WithoutAdapters:
    """The KL reference under LoRA: the policy module called with its adapters switched off, which is the
    base model exactly (B·A is left out, W is frozen), at no memory cost. Called under ``no_grad``
    between the policy's forward and backward: peft's ``disable_adapter`` clears the adapters'
    ``requires_grad`` and sets it back on exit, before the backward that needs it."""

    def __init__(self, adapters, policy: TokenLogprobs):
        self.adapters, self.policy = adapters, policy

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        training = self.policy.training
        self.policy.eval()  # as the separate reference model is: no dropout
        try:
            with self.adapters.disable_adapter():
                return self.policy(*inputs)
        finally:
            self.policy.train(training)


class _PhaseClock:
    """Seconds a learner step spends in each phase (``time_forward``: log-probs and loss, ``time_backward``,
    ``time_optimizer``: clipping and the optimizer step), summed over micro-batches. On CUDA it waits for
    the device at each phase boundary, so a phase is charged its own kernels."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.seconds = {"time_forward": 0.0, "time_backward": 0.0, "time_optimizer": 0.0}
        self._t0 = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        self._t0 = self._now()

    def stop(self, phase: str) -> None:
        self.seconds[f"time_{phase}"] += self._now() - self._t0
