"""The tiny policy of the CPU default: a Qwen2-shaped causal LM and a character tokenizer, built locally.

The tokenizer is a ``PreTrainedTokenizerFast`` over a word-level model that splits every character,
so any HF tool can use it. transformers 5 ``AutoTokenizer`` maps a folder's ``model_type: qwen2`` to
the Qwen2 tokenizer class, whatever ``tokenizer_config.json`` says; rlpp therefore marks its folders
with ``rlpp_tokenizer.json`` and ``load_tokenizer`` loads the class that was saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from rlpp.config.schema import TinyModelConfig

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
MARKER = "rlpp_tokenizer.json"


def build_char_tokenizer(chars: str) -> PreTrainedTokenizerFast:
    """One token per character of ``chars``, plus pad/eos/bos/unk."""
    if len(set(chars)) != len(chars):
        raise ValueError(f"tokenizer characters must be distinct, got {chars!r}")
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


def build_tiny_model(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> torch.nn.Module:
    """A freshly initialised Qwen2ForCausalLM sized by ``cfg`` (vLLM serves the same architecture)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        torch_dtype="float32",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(config)


def save_model(folder: str | Path, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
    """``save_pretrained`` both. A generic fast tokenizer (the character one) also gets the marker that
    makes ``load_tokenizer`` restore that class instead of the model type's own."""
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if type(tokenizer) is PreTrainedTokenizerFast:
        (folder / MARKER).write_text(json.dumps({"class": "PreTrainedTokenizerFast"}))


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer saved at ``path`` (local folder or hub name), as the class it was saved as."""
    if (Path(path) / MARKER).is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # generation pads batches; most chat models ship no pad token
    return tok


def load_model(path: str | Path, dtype: str = "float32", trust_remote_code: bool = False) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
    )
