"""LoRA (``model.lora``): the learner trains adapters only, the KL reference is the base model with them
switched off, the engines receive merged weights equal to W + B·A·alpha/rank computed here from the
saved adapters, a checkpoint resumes exactly, and bad settings are one-line errors naming the key."""

from __future__ import annotations

import json

import pytest
import ray
import torch
from safetensors.torch import load_file

from rlpp.config.loader import load_config
from rlpp.config.schema import ConfigError, LoraConfig
from rlpp.learner import lora
from rlpp.models.tiny import load_model

RANK, ALPHA = 4, 8.0
LORA = [f"model.lora.rank={RANK}", f"model.lora.alpha={ALPHA}"]


def lora_cfg(tmp_path, *overrides):
    return load_config(None, ["learner.lr=0.01", "learner.cpus_per_actor=0.5", "learner.torch_threads=1",
                              "learner.grad_clip=0", f"trainer.output_dir={tmp_path}", *LORA, *overrides])


def one_line_error(overrides) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)
    return str(e.value)


# ------------------------------------------------------------------ settings
def test_bad_settings_are_one_line_errors_naming_the_key():
    assert one_line_error(["model.lora.rank=-1"]) == "model.lora.rank must be >= 0, got -1"
    assert one_line_error([*LORA, "model.lora.alpha=0"]).startswith("model.lora.alpha must be in (0.0")
    assert one_line_error([*LORA, "model.lora.dropout=1"]).startswith("model.lora.dropout must be in [0.0, 1.0)")
    assert one_line_error([*LORA, "model.lora.target_modules=[]"]).startswith("model.lora.target_modules must list")
    assert one_line_error([*LORA, "model.lora.target_modules=[all-linear,q_proj]"]).startswith(
        "model.lora.target_modules all-linear already names every linear layer")
    assert one_line_error([*LORA, "learner.zero_stage=3"]).startswith("learner.zero_stage must be <= 2 with model.lora.rank > 0")
    # Off (rank 0), the other settings are not looked at; ZeRO-3 is fine.
    assert not load_config(None, ["model.lora.alpha=0", "learner.zero_stage=3"]).model.lora.enabled


def test_an_unknown_target_module_names_the_key_and_the_layers_that_exist(tiny_model_dir):
    with pytest.raises(ConfigError) as e:
        lora.check_targets(LoraConfig(rank=4, target_modules=["q_proj", "qkv_proj"]), tiny_model_dir)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("model.lora.target_modules names no linear layer of Qwen2ForCausalLM: ['qkv_proj']")
    assert "['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']" in msg
    # The tiny model ties its head to the embeddings: an adapter there would be untied on the engines.
    with pytest.raises(ConfigError, match=r"\['lm_head'\] \(lm_head is tied to the input embeddings"):
        lora.check_targets(LoraConfig(rank=4, target_modules=["lm_head"]), tiny_model_dir)
    for ok in (["q_proj", "self_attn.v_proj", "mlp.down_proj"], ["all-linear"]):
        lora.check_targets(LoraConfig(rank=4, target_modules=ok), tiny_model_dir)


def test_the_trainer_checks_target_modules_before_starting_ray(tiny_model_dir, tmp_path, monkeypatch):
    import rlpp.trainer as trainer

    monkeypatch.setattr(trainer, "prepare_model", lambda cfg, dev, held_out: (tiny_model_dir, {}))
    monkeypatch.setattr(trainer, "init_ray", lambda cfg: pytest.fail("Ray started before the LoRA targets were checked"))
    cfg = load_config("configs/tiny.yaml", [*LORA, "model.lora.target_modules=[attn]", f"trainer.output_dir={tmp_path}",
                                            "data.synthetic.num_train=50", "data.synthetic.num_dev=10",
                                            "data.synthetic.num_eval=10", "log.tensorboard=false"])
    with pytest.raises(ConfigError, match=r"^model.lora.target_modules names no linear layer of Qwen2ForCausalLM: \['attn'\]"):
        trainer.Trainer(cfg)


def test_merged_weights_carry_the_base_names_and_w_plus_ba_scale(tiny_model_dir):
    """In process, no DeepSpeed: the export renames peft's entries back and adds B·A·alpha/rank."""
    model = load_model(tiny_model_dir)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    adapters = lora.add_adapters(model, LoraConfig(rank=RANK, alpha=ALPHA, target_modules=["q_proj", "down_proj"]), seed=0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (merged = base); give it something to merge
            torch.nn.init.normal_(p)
    merged = dict(lora.merged_weights(model))
    assert set(merged) == set(base)
    adapted = {k for k in base if k.endswith(("q_proj.weight", "down_proj.weight"))}
    assert len(adapted) == 2 * 2  # two layers
    for k, w in base.items():
        if k in adapted:
            owner = k.removesuffix(".weight")
            a = model.get_submodule(owner).lora_A["default"].weight
            b = model.get_submodule(owner).lora_B["default"].weight
            torch.testing.assert_close(merged[k], w + b @ a * (ALPHA / RANK), atol=1e-6, rtol=0)
            assert not torch.allclose(merged[k], w)
        else:
            assert torch.equal(merged[k], w), k
    # The adapters switched off give the base model's outputs; on, the merged model's.
    ids = torch.tensor([[5, 6, 14, 11, 17, 5, 13]])
    plain = load_model(tiny_model_dir)
    with torch.no_grad():
        with adapters.disable_adapter():
            torch.testing.assert_close(model(input_ids=ids).logits, plain(input_ids=ids).logits, atol=0, rtol=0)
        plain.load_state_dict(merged)
        torch.testing.assert_close(model(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_a_checkpoint_with_other_adapters_is_refused(tiny_model_dir):
    """DeepSpeed loads a LoRA checkpoint non-strictly (it holds no frozen weights): adapters for other
    layers must not be silently left at their initial values."""
    from rlpp.checkpoint import CheckpointError

    def adapted(targets):
        model = load_model(tiny_model_dir)
        lora.add_adapters(model, LoraConfig(rank=RANK, target_modules=targets), seed=0)
        return model

    saved = {k: v for k, v in adapted(["q_proj"]).state_dict().items() if "lora_" in k}
    lora.load_adapter_state(saved, adapted(["q_proj"]))  # the same layers load
    with pytest.raises(CheckpointError, match="adapters are not this run's"):
        lora.load_adapter_state(saved, adapted(["v_proj"]))


# ------------------------------------------------------------------ the learner through Ray
def call(group, fn):
    return ray.get(group.actors[0].__ray_call__.remote(fn))


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2])
def test_lora_learner_trains_adapters_syncs_merged_weights_and_resumes_exactly(
        ray_local, tiny_model_dir, tmp_path, grpo_batch, stage):
    from peft import PeftModel

    from rlpp.distributed.groups import LearnerGroup
    from rlpp.learner.policy import TokenLogprobs
    from rlpp.rollout.hf_engine import HFEngine
    from rlpp.sync.object_store import load_weights

    cfg = lora_cfg(tmp_path, f"learner.zero_stage={stage}", "algo.kl_coef=0.1", "learner.micro_batch_size=3")
    base = load_model(tiny_model_dir).state_dict()
    batch = grpo_batch()
    group = LearnerGroup(cfg, tiny_model_dir)
    try:
        m1, m2 = group.train(batch), group.train(batch)
        assert m1["train/grad_norm"] > 0 and m2["train/kl"] > 0  # the policy moved off the reference
        # Only the adapters train: Adam's moments cover their elements alone (ZeRO-2 flattens them into
        # one partition, padded to an alignment).
        trainable, moments = call(group, lambda self: (
            {n: p.numel() for n, p in self.engine.module.named_parameters() if p.requires_grad},
            sum(s["exp_avg"].numel() for s in self.engine.basic_optimizer.state.values())))
        assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
        assert len(trainable) == 2 * 7 * 2  # A and B x 7 linear layers x 2 blocks
        assert sum(trainable.values()) <= moments < sum(trainable.values()) + 64

        # The reference is the base model: the adapters switched off equal a fresh copy of it, while
        # the policy (adapters on) has moved.
        ids, mask, loss_mask = batch.input_ids, batch.attention_mask, batch.loss_mask

        def ref_and_policy(self):
            with torch.no_grad():
                return self.ref(ids, mask, loss_mask)[0], self.engine.module(ids, mask, loss_mask)[0]

        ref, policy = call(group, ref_and_policy)
        with torch.no_grad():
            fresh, _ = TokenLogprobs(load_model(tiny_model_dir), temperature=cfg.rollout.temperature,
                                     chunk_tokens=cfg.learner.logprob_chunk_tokens).eval()(ids, mask, loss_mask)
        torch.testing.assert_close(ref, fresh, atol=1e-6, rtol=0)
        assert (policy - ref).abs().max() > 1e-3
        assert call(group, lambda self: all(p.requires_grad for n, p in self.engine.module.named_parameters() if "lora_" in n))

        group.save(str(tmp_path / "ckpt"))
        received = ray.get(group.weights())  # the object-store sync's payload
        m3 = group.train(batch)
        after = ray.get(group.weights())
    finally:
        group.shutdown()

    # The engine receives W + B·A·alpha/rank, computed here from the adapters as peft saved them.
    ckpt = tmp_path / "ckpt"
    config = json.loads((ckpt / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (RANK, ALPHA)
    saved = load_file(ckpt / "adapter" / "adapter_model.safetensors")
    engine = HFEngine(tiny_model_dir)
    load_weights(engine, received)
    got = engine.model.state_dict()
    adapted = 0
    for k, w in base.items():
        owner = "base_model.model." + k.removesuffix(".weight")
        if f"{owner}.lora_A.weight" in saved:
            a, b = saved[f"{owner}.lora_A.weight"], saved[f"{owner}.lora_B.weight"]
            torch.testing.assert_close(got[k], w + b @ a * (config["lora_alpha"] / config["r"]), atol=1e-6, rtol=0)
            assert not torch.allclose(got[k], w, atol=1e-4)
            adapted += 1
        else:
            assert torch.equal(got[k], w), f"{k}: a frozen weight changed"
    assert adapted == 7 * 2
    # The checkpoint's HF weights (what rlpp eval reads) are those merged weights; peft loads the adapters.
    top = load_model(ckpt)
    for k, v in top.state_dict().items():
        torch.testing.assert_close(v, got[k], atol=0, rtol=0)
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(load_model(tiny_model_dir), str(ckpt / "adapter"))
        torch.testing.assert_close(peft_model(input_ids=ids).logits, top(input_ids=ids).logits, atol=1e-5, rtol=0)
    # DeepSpeed's state holds the adapters, not a second copy of the base. (It drops the frozen parameters
    # it finds by named_parameters(), which lists the tied head once, under the embeddings' name: the
    # head's alias stays.)
    (states,) = (ckpt / "deepspeed" / "state").glob("mp_rank_00_model_states.pt")
    module = torch.load(states, weights_only=False)["module"]
    assert sum("lora_" in k for k in module) == 2 * 7 * 2
    assert {k for k in module if "lora_" not in k} == {"policy.lm_head.weight"}

    # Resume: a fresh learner loads the checkpoint and its next step equals the uninterrupted one's.
    group = LearnerGroup(cfg, tiny_model_dir)
    try:
        group.load(str(ckpt))
        torch.testing.assert_close(dict(ray.get(group.weights())), dict(received), atol=0, rtol=0)
        r3 = group.train(batch)
        resumed = ray.get(group.weights())
    finally:
        group.shutdown()
    assert r3["train/loss"] == m3["train/loss"] and r3["train/kl"] == m3["train/kl"]
    torch.testing.assert_close(dict(resumed), dict(after), atol=0, rtol=0)
