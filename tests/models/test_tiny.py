"""The tiny model and its character tokenizer survive save/load as the classes they were saved as."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast

from rlpp.data.synthetic import ARITHMETIC_CHARS
from rlpp.models.tiny import SPECIAL_TOKENS, load_model, load_tokenizer


def test_tokenizer_round_trip(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    assert type(tok) is PreTrainedTokenizerFast
    assert len(tok) == len(SPECIAL_TOKENS) + len(ARITHMETIC_CHARS)
    text = "123*45=-5"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text
    assert tok.convert_ids_to_tokens(tok.encode("x", add_special_tokens=False)) == ["<unk>"]
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)


def test_model_round_trip(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    ids = torch.tensor([[5, 6, 14]])
    with torch.no_grad():
        a = model(input_ids=ids).logits
        model.save_pretrained(tmp_path)
        b = load_model(tmp_path)(input_ids=ids).logits
    assert torch.equal(a, b)


def test_runs_of_every_seed_share_one_warm_start_unless_asked_otherwise():
    """The warm start stands in for a pretrained checkpoint: one per settings, whatever the run's seed
    (model.warmstart.seed=-1 gives each run seed its own)."""
    from rlpp.config.loader import load_config
    from rlpp.recipes.warmstart import _cache_key, warmstart_seed

    key = lambda *o: _cache_key(load_config("configs/tiny.yaml", list(o)))  # noqa: E731
    assert key("seed=0") == key("seed=2") == key("seed=2", "model.warmstart.seed=0")
    assert key("seed=2", "model.warmstart.seed=-1") == key("seed=2", "model.warmstart.seed=2") != key("seed=0")
    assert warmstart_seed(load_config("configs/tiny.yaml", ["seed=5", "model.warmstart.seed=-1"])) == 5
