"""rlpp.sync.nccl: the CPU-checkable contract with vLLM, a CPU engine round trip with the NCCL wire
replaced by an in-process dict, and the real NCCL sync on GPUs."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from rlpp.sync.nccl import (
    NcclWeightReceiver,
    NcclWeightSender,
    WeightMetadata,
    WireParams,
    transfer_group_layout,
)

# The last prompt fills a whole KV block (block_size 32 below), so a prefix cache left stale by a
# sync would be hit when it is asked again.
PROMPTS = [[1, 2, 3, 4, 5], [7, 7, 7], [(5 * i + 3) % 32 for i in range(40)]]
NEW_TOKENS = 8


# --- CPU: contract with the installed vLLM, no engine ---------------------------------------------


def test_import_pulls_in_neither_torch_nor_vllm():
    code = "import sys, rlpp.sync.nccl; print(sorted({'torch', 'vllm', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_vllm_engine_kwargs_are_engine_args_fields():
    from vllm import LLM
    from vllm.config import WeightTransferConfig
    from vllm.engine.arg_utils import EngineArgs

    kwargs = NcclWeightReceiver.vllm_engine_kwargs()
    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    assert set(kwargs) <= fields
    # LLM passes unknown kwargs through to EngineArgs rather than shadowing them.
    params = inspect.signature(LLM.__init__).parameters
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert not set(kwargs) & set(params)

    args = EngineArgs(model="unused", **kwargs)
    assert isinstance(args.weight_transfer_config, WeightTransferConfig)
    assert args.weight_transfer_config.backend == "nccl"


def test_backend_is_registered_on_both_sides():
    from vllm.distributed.weight_transfer import WeightTransferEngineFactory, WeightTransferTrainerFactory
    from vllm.distributed.weight_transfer.nccl_engine import (
        NCCLTrainerInitInfo,
        NCCLTrainerWeightTransferEngine,
        NCCLWeightTransferEngine,
    )

    backend = NcclWeightReceiver.vllm_engine_kwargs()["weight_transfer_config"]["backend"]
    assert WeightTransferEngineFactory._registry[backend]() is NCCLWeightTransferEngine
    assert NCCLTrainerInitInfo.backend == backend
    assert WeightTransferTrainerFactory._registry[backend]() is NCCLTrainerWeightTransferEngine


def test_metadata_matches_vllm_update_info():
    import torch
    from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferUpdateInfo

    tensors = [("a.weight", torch.zeros(3, 4, dtype=torch.bfloat16)), ("b.bias", torch.ones(5))]
    meta = NcclWeightSender.metadata(tensors)
    assert meta == WeightMetadata(("a.weight", "b.bias"), ("bfloat16", "float32"), ((3, 4), (5,)))
    info = NCCLWeightTransferUpdateInfo(**meta.update_info())
    # The worker rebuilds dtypes with getattr(torch, name) (nccl_engine.py:205,222).
    assert [getattr(torch, d) for d in info.dtype_names] == [torch.bfloat16, torch.float32]
    assert info.shapes == [[3, 4], [5]]


def test_metadata_rejects_inconsistent_lists():
    with pytest.raises(ValueError, match="one entry per tensor"):
        WeightMetadata(("a",), ("float32", "float32"), ((1,),))
    with pytest.raises(ValueError, match="appears twice"):
        WeightMetadata(("a", "a"), ("float32", "float32"), ((1,), (1,)))


def test_transfer_group_layout():
    assert transfer_group_layout([1]) == (2, [1])
    assert transfer_group_layout([2, 2, 4]) == (9, [1, 3, 5])
    with pytest.raises(ValueError):
        transfer_group_layout([2, 0])


def test_wire_params_validated():
    with pytest.raises(ValueError, match="buffer_size_bytes"):
        WireParams(buffer_size_bytes=0)
    with pytest.raises(ValueError, match="num_buffers"):
        WireParams(num_buffers=0)


def test_send_and_receive_refuse_to_run_before_init():
    with pytest.raises(RuntimeError, match="before init"):
        NcclWeightSender().send([], WeightMetadata((), (), ()))
    with pytest.raises(RuntimeError, match="before init"):
        NcclWeightReceiver(llm=None).receive(WeightMetadata((), (), ()))


# --- helpers shared by the engine tests ------------------------------------------------------------


def _tiny_qwen2(path: Path) -> Path:
    """A random 2-layer Qwen2 (hidden 64, vocab 32) saved as a checkpoint folder; no tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32: the smallest vLLM's CPU attention supports
        num_key_value_heads=1,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        initializer_range=0.3,  # wide logits: greedy argmax has margins far above fp32 noise
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def _perturb(model, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=gen).to(param.device, param.dtype)
            param.add_(0.3 * noise)


def _hf_greedy(model, prompts: list[list[int]]) -> list[list[int]]:
    import torch

    device = next(model.parameters()).device
    out = []
    for ids in prompts:
        tokens = model.generate(
            torch.tensor([ids], device=device), max_new_tokens=NEW_TOKENS, do_sample=False
        )
        out.append(tokens[0, len(ids):].tolist())
    return out


def _vllm_greedy(llm, prompts: list[list[int]]) -> list[list[int]]:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, detokenize=False)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def _engine_kwargs() -> dict:
    return dict(
        dtype="float32",
        enforce_eager=True,
        skip_tokenizer_init=True,
        max_model_len=64,
        block_size=32,
        gpu_memory_utilization=0.25,  # ignored on CPU; leaves room for the other GPU tests
        seed=0,
        **NcclWeightReceiver.vllm_engine_kwargs(),
    )


# --- CPU: a real vLLM engine; the NCCL wire replaced by a dict in this process ---------------------

_LOOPBACK: dict = {}


def _loopback_engine_cls():
    from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine

    class LoopbackEngine(NCCLWeightTransferEngine):
        """vLLM's NCCL worker engine with only the wire swapped: init_info and update_info are
        parsed by vLLM, weights go through the real layerwise reload and ``load_weights``."""

        init_infos: list = []

        def init_transfer_engine(self, init_info) -> None:
            type(self).init_infos.append(init_info)
            self.packed = init_info.packed

        def update_weights(self, update_info) -> None:
            # base.py:491-502 without torch.accelerator.synchronize(), which needs a device.
            self.receive_weights(self.parse_update_info(update_info))

        def receive_weights(self, update_info) -> None:
            info = update_info
            for name, dtype_name, shape in zip(info.names, info.dtype_names, info.shapes):
                tensor = _LOOPBACK[name]
                assert str(tensor.dtype) == f"torch.{dtype_name}" and list(tensor.shape) == shape, name
                self.model.load_weights([(name, tensor.clone())])

    return LoopbackEngine


@pytest.mark.slow
def test_receiver_round_trip_on_cpu_engine(tmp_path, monkeypatch):
    """Everything but NCCL: the receiver drives a CPU vLLM engine through init and two syncs, and the
    engine's greedy tokens then equal transformers' on the sender's weights."""
    pytest.importorskip("transformers")
    from transformers import Qwen2ForCausalLM
    from vllm import LLM
    from vllm.distributed.weight_transfer import WeightTransferEngineFactory

    engine_cls = _loopback_engine_cls()
    monkeypatch.setitem(WeightTransferEngineFactory._registry, "nccl", lambda: engine_cls)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the worker runs in this process
    model_dir = _tiny_qwen2(tmp_path / "model")
    learner = Qwen2ForCausalLM.from_pretrained(model_dir, dtype="float32").eval()

    llm = LLM(model=str(model_dir), **_engine_kwargs())
    try:
        receiver = NcclWeightReceiver(llm)
        assert receiver.world_size == 1
        assert _vllm_greedy(llm, PROMPTS) == _hf_greedy(learner, PROMPTS)

        world_size, offsets = transfer_group_layout([receiver.world_size])
        wire = WireParams(packed=False)
        receiver.init("127.0.0.1", 29555, offsets[0], world_size, wire)
        (info,) = engine_cls.init_infos
        assert (info.rank_offset, info.world_size, info.packed) == (1, 2, False)

        previous = _hf_greedy(learner, PROMPTS)
        for seed in (1, 2):
            _perturb(learner, seed)
            named = list(learner.named_parameters())
            meta = NcclWeightSender.metadata(named)
            _LOOPBACK.clear()
            _LOOPBACK.update({n: p.detach().clone() for n, p in named})
            receiver.receive(meta, version=f"step-{seed}")
            expected = _hf_greedy(learner, PROMPTS)
            assert expected != previous  # the perturbation is visible in greedy decoding
            assert _vllm_greedy(llm, PROMPTS) == expected
            assert llm.get_weight_version() == f"step-{seed}"
            previous = expected
        receiver.close()
    finally:
        _LOOPBACK.clear()
        engine_cls.init_infos.clear()
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


# --- GPU: the real NCCL sync between two Ray actors -------------------------------------------------


class _Rollout:
    """Rollout actor stand-in: one vLLM engine and its receiver."""

    def __init__(self, model_dir: str) -> None:
        from vllm import LLM

        self.llm = LLM(model=model_dir, **_engine_kwargs())
        self.receiver = NcclWeightReceiver(self.llm)

    def world_size(self) -> int:
        return self.receiver.world_size

    def init(self, address: str, port: int, rank_offset: int, world_size: int, wire: WireParams) -> None:
        self.receiver.init(address, port, rank_offset, world_size, wire)

    def receive(self, meta: WeightMetadata) -> None:
        self.receiver.receive(meta)

    def generate(self, prompts: list[list[int]]) -> list[list[int]]:
        return _vllm_greedy(self.llm, prompts)


class _Learner:
    """Learner rank-0 stand-in: the transformers model (full weights on its GPU) and the sender."""

    def __init__(self, model_dir: str, wire: WireParams) -> None:
        import torch
        from transformers import Qwen2ForCausalLM

        torch.cuda.set_device(0)
        self.model = Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
        self.sender = NcclWeightSender(wire)

    def endpoint(self) -> tuple[str, int]:
        from rlpp.distributed.local import free_endpoint  # what Learner.endpoint answers

        return free_endpoint()

    def init(self, address: str, port: int, world_size: int) -> None:
        self.sender.init(address, port, world_size)

    def perturb(self, seed: int) -> None:
        _perturb(self.model, seed)

    def metadata(self) -> WeightMetadata:
        return NcclWeightSender.metadata(self.model.named_parameters())

    def send(self, meta: WeightMetadata) -> None:
        self.sender.send(self.model.named_parameters(), meta)

    def generate(self, prompts: list[list[int]]) -> list[list[int]]:
        return _hf_greedy(self.model, prompts)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize(
    "wire",
    [WireParams(packed=False), WireParams(packed=True, buffer_size_bytes=16 << 10)],  # ~20 chunks
    ids=["per-tensor", "packed"],
)
def test_nccl_sync_matches_transformers(tmp_path, ray_local, wire):
    import torch

    if torch.cuda.device_count() < 2:
        # NCCL refuses two ranks of one communicator on the same GPU ("Duplicate GPU detected").
        pytest.skip("needs 2 GPUs: the sender and the engine cannot share one in an NCCL group")
    ray = ray_local
    # Ray workers cannot import this test module by name; ship its actor classes by value.
    this_module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(this_module)
    model_dir = str(_tiny_qwen2(tmp_path / "model"))
    rollout = ray.remote(num_gpus=1, num_cpus=0)(_Rollout).remote(model_dir)
    learner = ray.remote(num_gpus=1, num_cpus=0)(_Learner).remote(model_dir, wire)
    try:
        before = ray.get(rollout.generate.remote(PROMPTS))
        assert before == ray.get(learner.generate.remote(PROMPTS))

        world_size, offsets = transfer_group_layout([ray.get(rollout.world_size.remote())])
        address, port = ray.get(learner.endpoint.remote())
        ray.get([
            rollout.init.remote(address, port, offsets[0], world_size, wire),
            learner.init.remote(address, port, world_size),
        ])

        previous = before
        for seed in (1, 2):
            ray.get(learner.perturb.remote(seed))
            meta = ray.get(learner.metadata.remote())
            ray.get([rollout.receive.remote(meta), learner.send.remote(meta)])
            expected = ray.get(learner.generate.remote(PROMPTS))
            assert expected != previous
            assert ray.get(rollout.generate.remote(PROMPTS)) == expected
            previous = expected
    finally:  # as in a run, the actors are killed with their communicators (rlpp.sync.nccl, step 5)
        ray.kill(rollout)
        ray.kill(learner)
        ray.cloudpickle.unregister_pickle_by_value(this_module)
