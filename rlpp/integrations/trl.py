"""rlpp's priority buffer inside TRL's ``GRPOTrainer`` (tested with trl 1.16.0 and transformers 5.19).

``RlppGRPOTrainer`` is TRL's ``GRPOTrainer`` with ``PriorityBufferMixin`` in front of it: the user keeps their
model, ``GRPOConfig``, dataset and reward functions, adds ``buffer=BufferConfig(...)``, and from then on each
generation batch's prompts come from a ``PriorityBuffer`` over the dataset's rows (any registered sampler but
``dapo_filter``) and each group's rewards go back to it. TRL is imported only when ``RlppGRPOTrainer`` is.

How TRL's loop and the buffer meet (one process):

- TRL's train dataloader yields one *generation batch* per micro-step: B = generation_batch_size / G prompts,
  each G times in a row, and the same batch ``steps_per_generation × num_iterations`` times in a row (TRL
  generates from the first and trains on the result for the rest). ``BufferSampler`` yields that shape and
  draws the B prompts (one ``buffer.sample``, one buffer step) only when it reaches a new generation batch,
  so each batch is chosen by the priorities of that moment; nothing is drawn for an epoch ahead.
- TRL reads its dataloader ahead (accelerate by one batch, the Trainer a gradient accumulation at a time), so
  the next batch is drawn before the one in training is scored: priorities lag one generation batch, and up
  to ``gradient_accumulation_steps // (steps_per_generation × num_iterations) + 1`` batches are in flight.
- After TRL's ``_calculate_rewards``, each completion's reward summed over the reward functions with
  ``reward_weights`` (the ``reward`` TRL logs) goes to ``buffer.update`` for the oldest batch drawn and not yet
  scored, G per prompt; a success is a reward >= ``buffer.success_threshold``. A prompt whose group holds a
  completion that no reward function scored (all returned None) is released unscored.
- ``rlpp_buffer.pt`` in every ``checkpoint-N`` folder holds the buffer's state and the batches drawn but not
  yet scored; ``resume_from_checkpoint`` restores both and serves those batches first, so a resumed run goes
  on as the uninterrupted one would. Batches still unscored when ``train`` returns are released.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Sized
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from rlpp.buffer import PriorityBuffer
from rlpp.buffer.samplers import sampler_class
from rlpp.config.schema import BufferConfig

log = logging.getLogger(__name__)

TESTED_TRL = "1.16"
"""The TRL minor version this module is tested with; pyproject's ``trl`` extra pins its release."""
STATE_FILE = "rlpp_buffer.pt"
"""The buffer's file in each of TRL's ``checkpoint-N`` folders."""
FORMAT = 1


class BufferSampler(Sampler[int]):
    """TRL's train sampler, drawing from a ``PriorityBuffer``. Yields each generation batch as TRL's
    ``RepeatSampler`` does (``prompts_per_batch`` dataset indices, each ``buffer.group_size`` times in a row, the
    whole batch ``repeats`` times in a row) and keeps the batches drawn but not yet scored, oldest first, for
    ``score``. An epoch is ``num_problems // prompts_per_batch`` batches, as with ``RepeatSampler``, so TRL's
    step and epoch counts do not change.
    """

    def __init__(self, buffer: PriorityBuffer, prompts_per_batch: int, repeats: int,
                 prompt_of: Callable[[int], Any] | None = None):
        """``prompt_of(i)``, when given, is dataset row i's prompt: ``score`` checks that the rows TRL scored
        are the ones drawn, so a reordered dataloader fails loudly instead of crediting the wrong problems."""
        self.buffer = buffer
        self.size = prompts_per_batch
        self.group_size = buffer.group_size
        self.repeats = repeats
        self.prompt_of = prompt_of
        self.batches = buffer.num_problems // prompts_per_batch
        self.pending: deque[np.ndarray] = deque()
        self.skip = 0
        """Dataloader batches the Trainer discards at the start of the next pass (set on resume)."""

    def __len__(self) -> int:
        return self.batches * self.size * self.group_size * self.repeats

    def __iter__(self) -> Iterator[int]:
        skipped, self.skip = self.skip // self.repeats, 0
        # What the Trainer skips on resume it trained on before the checkpoint: any index will do, no draw.
        yield from itertools.repeat(0, skipped * self.repeats * self.size * self.group_size)
        resumed = list(self.pending)  # drawn by an earlier pass or run and never trained on: served first
        for _ in range(self.batches - skipped):
            ids = resumed.pop(0) if resumed else self._draw()
            rows = np.repeat(ids, self.group_size).tolist()
            for _ in range(self.repeats):
                yield from rows

    def _draw(self) -> np.ndarray:
        batch = self.buffer.sample(self.size)
        if len(batch) != self.size:  # a pass draws at most num_problems // size batches: others hold the rest
            self.buffer.release(batch.ids)
            raise RuntimeError(f"rlpp buffer: drew {len(batch)} of {self.size} prompts; "
                               f"{len(self.buffer.in_flight())} of {self.buffer.num_problems} are in flight elsewhere")
        self.pending.append(batch.ids)
        return batch.ids

    def score(self, rewards, prompts: list | None = None) -> None:
        """Hand the oldest unscored batch's rewards to the buffer. ``rewards`` holds one per completion in the
        order the batch was yielded (G per prompt), NaN where nothing scored a completion; ``prompts``, the
        scored rows' prompts in that order, checked against ``prompt_of``."""
        if not self.pending:
            raise RuntimeError("rlpp buffer: TRL scored a generation batch that the buffer never drew")
        ids, g = self.pending[0], self.group_size
        r = np.asarray(rewards, dtype=np.float64)
        if r.shape != (len(ids) * g,):
            raise RuntimeError(f"rlpp buffer: TRL scored {r.shape} completions, the buffer drew {len(ids)} prompts "
                               f"x {g} (a generation batch split or merged)")
        if prompts is not None and self.prompt_of is not None:
            want = [self.prompt_of(int(i)) for i in ids]
            got = [prompts[k * g:(k + 1) * g] for k in range(len(ids))]
            if any(rows != [w] * g for rows, w in zip(got, want)):
                raise RuntimeError("rlpp buffer: the rows TRL scored are not the prompts the buffer drew, G in a row "
                                   "in draw order (a dataloader that reorders or splits batches)")
        r = r.reshape(len(ids), g)
        unscored = np.isnan(r).any(axis=1)
        if (~unscored).any():
            self.buffer.update(ids[~unscored], r[~unscored])
        if unscored.any():
            self.buffer.release(ids[unscored])
        self.pending.popleft()

    def release_pending(self) -> int:
        """Hand back every batch drawn and never scored (the run stopped first); returns how many prompts."""
        n = 0
        while self.pending:
            n += self.buffer.release(self.pending.popleft())
        return n

    def state_dict(self) -> dict:
        """The buffer's full state and the unscored batches (in flight in that state), oldest first."""
        return {"format": FORMAT, "buffer": self.buffer.state_dict(), "pending": [ids.copy() for ids in self.pending]}

    def load_state_dict(self, state: dict, skip_batches: int) -> None:
        """Restore a ``state_dict``; the Trainer will discard ``skip_batches`` dataloader batches of the next pass
        (those it trained on in the interrupted epoch), which must end on a generation batch."""
        if state.get("format") != FORMAT:
            raise ValueError(f"rlpp buffer checkpoint has format {state.get('format')!r}, this version reads {FORMAT}")
        if skip_batches % self.repeats:
            raise ValueError(
                f"resume_from_checkpoint: the checkpoint falls inside a generation batch ({skip_batches % self.repeats} "
                f"of its {self.repeats} dataloader batches, steps_per_generation x num_iterations, done) and TRL would "
                f"regenerate a batch the buffer already scored; resume from a checkpoint between generation batches or "
                f"set ignore_data_skip=True")
        pending = [np.asarray(ids, dtype=np.int64) for ids in state["pending"]]
        if any(ids.shape != (self.size,) for ids in pending):
            raise ValueError(f"rlpp buffer checkpoint drew batches of {[len(i) for i in pending]} prompts; this run "
                             f"draws {self.size} (generation_batch_size / num_generations changed)")
        self.buffer.load_state_dict(state["buffer"])
        self.pending = deque(pending)
        self.skip = skip_batches


def check_versions() -> None:
    """Refuse a TRL other than the tested one: the mixin hooks into TRL's and the Trainer's private methods,
    whose contracts a new release may change without an error, crediting rewards to the wrong problems."""
    import transformers
    import trl

    if not trl.__version__.startswith(TESTED_TRL + "."):
        raise RuntimeError(f"rlpp.integrations.trl is tested with trl {TESTED_TRL} (pip install 'trl=={TESTED_TRL}.0'), "
                           f"found trl {trl.__version__}")
    if not hasattr(transformers.Trainer, "_init_training_state"):
        raise RuntimeError(f"rlpp.integrations.trl needs Trainer._init_training_state (transformers 5.19 has it), "
                           f"found transformers {transformers.__version__}")


def check_supported(args, dataset, cfg: BufferConfig) -> None:
    """Refuse, in one line naming the setting, a run whose batches would not line up with the buffer's draws:
    groups split across processes or batches, no dataset index to draw, a sampler that needs rlpp's own loop.
    Every other TRL setting runs as TRL runs it."""
    if sampler_class(cfg).group_filter != "none":
        raise ValueError(f"buffer.sampler={cfg.sampler}: its groups are filtered and drawn again by rlpp's trainer "
                         f"(dynamic sampling), which TRL's GRPOTrainer does not do; use uniform")
    if args.world_size > 1:
        raise ValueError(f"world_size={args.world_size}: rlpp's buffer runs in TRL in one process only (each process "
                         f"would hold its own buffer)")
    if dataset is None or not isinstance(dataset, Sized) or not hasattr(dataset, "__getitem__"):
        raise ValueError(f"train_dataset: the buffer draws rows by index, so it needs a map-style datasets.Dataset, "
                         f"got {type(dataset).__name__}")
    g, gen = args.num_generations, args.generation_batch_size
    if gen % g:
        raise ValueError(f"generation_batch_size={gen}: not a multiple of num_generations={g}, it would split a group")
    if args.per_device_train_batch_size * args.steps_per_generation != gen:
        raise ValueError(f"generation_batch_size={gen}: TRL's dataloader batch (per_device_train_batch_size x "
                         f"steps_per_generation = {args.per_device_train_batch_size * args.steps_per_generation}) "
                         f"must be one generation batch")
    if len(dataset) < gen // g:
        raise ValueError(f"train_dataset has {len(dataset)} prompts, fewer than one generation batch of {gen // g} "
                         f"(generation_batch_size / num_generations)")


def check_save_steps(args, save_steps: int) -> None:
    """Checkpoints must fall between generation batches: resumed inside one, TRL regenerates it and the buffer
    would be handed rewards for problems it already scored."""
    per_batch = args.steps_per_generation * args.num_iterations
    if args.save_strategy == "steps" and save_steps * args.gradient_accumulation_steps % per_batch:
        raise ValueError(f"save_steps={save_steps}: a checkpoint every {save_steps} x gradient_accumulation_steps="
                         f"{args.gradient_accumulation_steps} micro-steps falls inside a generation batch of {per_batch} "
                         f"(steps_per_generation x num_iterations); make that product a multiple of {per_batch}")


class PriorityBufferMixin:
    """Put in front of ``GRPOTrainer`` (or of your subclass of it) to draw prompts from rlpp's ``PriorityBuffer``
    and hand it the rewards; ``RlppGRPOTrainer`` is exactly that. ``self.buffer`` is the buffer (``stats()``,
    ``set_oracle_rates``); its ``stats()`` join every log."""

    def __init__(self, *args, buffer: BufferConfig, buffer_seed: int | None = None,
                 clusters: np.ndarray | None = None, **kwargs):
        """``buffer`` configures it (validated like ``buffer.*`` in rlpp); ``buffer_seed`` defaults to
        ``GRPOConfig.seed``; ``clusters`` labels each dataset row for ``buffer.prior.mode=cluster``."""
        check_versions()
        if not isinstance(buffer, BufferConfig):
            raise ValueError(f"buffer must be an rlpp BufferConfig, got {type(buffer).__name__}")
        super().__init__(*args, **kwargs)
        grpo, dataset = self.args, self.train_dataset
        check_supported(grpo, dataset, buffer)
        seed = grpo.seed if buffer_seed is None else buffer_seed
        self.buffer = PriorityBuffer(buffer, len(dataset), seed=seed, group_size=grpo.num_generations, clusters=clusters)
        prompts = dataset.select_columns(["prompt"]) if "prompt" in dataset.column_names else None
        self.buffer_sampler = BufferSampler(self.buffer, grpo.generation_batch_size // grpo.num_generations,
                                            grpo.steps_per_generation * grpo.num_iterations,
                                            prompt_of=None if prompts is None else (lambda i: prompts[i]["prompt"]))
        if self.buffer.oracle_request() is not None:
            log.warning("buffer.sampler=oracle selects uniformly until measured pass rates are handed to "
                        "trainer.buffer.set_oracle_rates; this integration does not measure them")
        if sampler_class(buffer).corrects_bias:
            log.warning("buffer.sampler=%s: TRL's loss takes no per-sample weights, so its importance weights "
                        "are not applied", buffer.sampler)

    def _get_train_sampler(self, dataset=None) -> BufferSampler:
        return self.buffer_sampler

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.model.training:  # evaluation draws from its own sampler, never from the buffer
            rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
            rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
            self.buffer_sampler.score(rewards.cpu().numpy(), [x.get("prompt") for x in inputs])
        return rewards_per_func

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint,
                             trial):
        epochs_trained, skip = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial)
        check_save_steps(self.args, self.state.save_steps)
        if resume_from_checkpoint is not None:
            path = Path(resume_from_checkpoint) / STATE_FILE
            if not path.is_file():
                raise ValueError(f"resume_from_checkpoint={resume_from_checkpoint}: no {STATE_FILE} (not written by "
                                 f"RlppGRPOTrainer?)")
            self.buffer_sampler.load_state_dict(torch.load(path, weights_only=False), skip)
        return epochs_trained, skip

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        if self.args.should_save:  # before TRL's files, so a folder with trainer_state.json has the buffer too
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(self.buffer_sampler.state_dict(), folder / STATE_FILE)
        super()._save_checkpoint(model, trial)

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self.buffer_sampler.release_pending()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        super().log({**logs, **self.buffer.stats()}, start_time)


def __getattr__(name: str):
    """``RlppGRPOTrainer`` is built on first use, so this module (and ``BufferSampler``) imports without TRL."""
    if name != "RlppGRPOTrainer":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from trl import GRPOTrainer

    cls = type(name, (PriorityBufferMixin, GRPOTrainer), {
        "__module__": __name__, "__doc__": "TRL's GRPOTrainer drawing its prompts from rlpp's PriorityBuffer."})
    globals()[name] = cls
    return cls
