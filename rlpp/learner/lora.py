"""LoRA on the learner (``model.lora``): adapters in, merged weights out.

peft injects a LoRA layer in place of each target layer of the HF model: the frozen weight W moves to
``<layer>.base_layer.weight`` and the adapters A (rank x in) and B (out x rank) sit beside it, so the
layer computes W·x + B·A·x·alpha/rank. The learner keeps that HF model as ``TokenLogprobs.policy`` (its
decoder and head are where they were) and the ``PeftModel`` wrapper beside it, for what only the wrapper
does: switching the adapters off (the KL reference is the base model, not a second copy) and saving them
in peft's format.

The engines never see an adapter: ``merged_weights`` turns the injected state dict back into the base
model's names with W + B·A·alpha/rank in each adapted weight, which every weight transport sends and every
engine (vLLM or HF) loads as it would a fully trained model. Why merged and not vLLM's own LoRA: it needs
nothing of the engine (the HF engine has no LoRA support), and generation, most of an RL step, runs at the
base model's speed, where vLLM's LoRA keeps the adapters apart and adds their matmuls to every token. What
merging costs is a full-size sync instead of an adapter-size one, which rlpp pays for full training anyway.

The caller's obligation: a merged tensor is computed afresh when it is read, so a sender may keep it; but
the policy's own parameters (unadapted ones) are yielded as they are, valid until the next optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from rlpp.config.schema import LORA_ALL_LINEAR, ConfigError, LoraConfig

if TYPE_CHECKING:
    from peft import PeftModel

ADAPTER_DIR = "adapter"
"""A checkpoint's sub-folder holding the adapters as peft saves them (adapter_model.safetensors and
adapter_config.json). Not at the checkpoint's top: transformers reads an adapter_config.json there as
"load the base model named inside, then this adapter", and the top is the merged model ``rlpp eval`` reads."""

ADAPTER = "default"
"""peft's name of the one adapter rlpp trains."""


def linear_layers(model: nn.Module) -> tuple[list[str], str | None]:
    """Names of the layers LoRA may target (linear ones: ``nn.Linear`` and transformers' ``Conv1D``), and
    the output head's name when it is tied to the input embeddings and so excluded: an adapter on it would
    untie the learner's head from its embeddings while every engine ties them again."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    tied = getattr(model.config, "tie_word_embeddings", False)
    names, tied_name = [], None
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, Conv1D)):
            continue
        if tied and module is head:
            tied_name = name
            continue
        names.append(name)
    return names, tied_name


def target_problem(lora: LoraConfig, model: nn.Module) -> str | None:
    """Why ``lora.target_modules`` cannot adapt ``model`` (a message to follow the key), or None. Matches
    names as peft does with a list: a module whose name is the target or ends in ``.<target>``."""
    if list(lora.target_modules) == [LORA_ALL_LINEAR]:
        return None
    names, tied = linear_layers(model)
    unknown = [t for t in lora.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if not unknown:
        return None
    existing = sorted({n.rsplit(".", 1)[-1] for n in names})
    why = ""
    if tied is not None and any(tied == t or tied.endswith("." + t) for t in unknown):
        why = f" ({tied} is tied to the input embeddings, which the engines tie again: it cannot be adapted)"
    return (f"names no linear layer of {type(model).__name__}: {unknown}{why}; its linear layers are "
            f"{existing} (or [{LORA_ALL_LINEAR}])")


def check_targets(lora: LoraConfig, model_path: str, trust_remote_code: bool = False) -> None:
    """Refuse unknown ``model.lora.target_modules`` before any actor starts: the model is built on the
    meta device from its config alone (no weights read, no memory taken)."""
    if not lora.enabled:
        return
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError("model.lora.rank > 0 needs peft: pip install 'rlpp[lora]'") from None
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    problem = target_problem(lora, model)
    if problem:
        raise ConfigError(f"model.lora.target_modules {problem}")


def add_adapters(model: nn.Module, lora: LoraConfig, seed: int) -> PeftModel:
    """Inject LoRA layers into ``model`` in place (only the adapters then require grad) and return peft's
    wrapper around it. A is initialised from ``seed`` alone, so every data-parallel rank starts equal."""
    import peft

    problem = target_problem(lora, model)
    if problem:
        raise ConfigError(f"model.lora.target_modules {problem}")
    targets = LORA_ALL_LINEAR if list(lora.target_modules) == [LORA_ALL_LINEAR] else list(lora.target_modules)
    config = peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                             bias="none")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        # autocast_adapter_dtype=False: adapters in the model's dtype (peft would make them fp32 in a bf16
        # model, and DeepSpeed's bf16 optimizer expects its parameters in bf16; it keeps fp32 masters itself).
        return peft.get_peft_model(model, config, adapter_name=ADAPTER, autocast_adapter_dtype=False)


@torch.no_grad()
def merged_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every entry of the base model's state dict, tied aliases included: the adapted
    weights as W + B·A·alpha/rank (peft's ``get_delta_weight``, what ``merge_adapter`` adds), under the
    names the model had before peft (no ``base_layer``, no ``lora_A``/``lora_B``)."""
    from peft.tuners.lora import LoraLayer

    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    for key, t in model.state_dict(keep_vars=True).items():
        if ".lora_" in key:
            continue
        if ".base_layer." not in key:
            yield key, t
            continue
        owner, leaf = key.split(".base_layer.", 1)
        layer = layers[owner]
        if leaf == "weight" and not layer.disable_adapters and ADAPTER in layer.active_adapters:
            yield f"{owner}.weight", t + layer.get_delta_weight(ADAPTER).to(t.dtype)
        else:
            yield f"{owner}.{leaf}", t


def load_adapter_state(src: dict, dst: nn.Module) -> None:
    """DeepSpeed's ``custom_load_fn`` for a LoRA checkpoint, which holds the trainable parameters only
    (saved with ``exclude_frozen_parameters``): load them, and refuse a checkpoint whose adapters are not
    this model's (other target modules), which a non-strict load would silently leave at their init."""
    result = dst.load_state_dict(src, strict=False)
    trainable = {n for n, p in dst.named_parameters() if p.requires_grad}
    missing = sorted(trainable & set(result.missing_keys))
    if missing or result.unexpected_keys:
        from rlpp.checkpoint import CheckpointError

        raise CheckpointError(f"the checkpoint's adapters are not this run's (model.lora changed?): missing "
                              f"{missing[:3]}, unexpected {sorted(result.unexpected_keys)[:3]}")


def save_adapters(adapters: PeftModel, folder: str | Path) -> None:
    """The adapters in peft's format under ``folder/adapter`` (``PeftModel.from_pretrained(base, that)``)."""
    adapters.save_pretrained(str(Path(folder) / ADAPTER_DIR))
