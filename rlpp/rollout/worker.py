"""The rollout worker: engine + tokenizer + problems + reward. Ray makes it the rollout actor.

It receives problem ids (the buffer's currency) and returns scored GRPO groups; problem text never
crosses the wire after start-up, since every worker holds the problem sets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from rlpp.config.schema import Config
from rlpp.data.problems import ProblemSet
from rlpp.models.tiny import load_tokenizer
from rlpp.reward.scorer import RewardScorer
from rlpp.rollout.engine import Completion, Sampling
from rlpp.rollout.factory import create_engine
from rlpp.sync import object_store


@dataclass
class RolloutResult:
    """Scored groups for the problems ``ids`` of one split."""

    ids: np.ndarray  # (P,) problem ids
    prompt_ids: list[list[int]]  # P prompts as token ids
    completions: list[list[Completion]]  # P groups of G completions
    rewards: np.ndarray  # (P, G) float
    metrics: dict[str, float] = field(default_factory=dict)
    weights: np.ndarray | None = None  # (P,) the sampler's importance weights; None: all 1
    version: int = 0
    """The policy version of the weights that generated these groups: 0 until a sync names one, so an actor
    restarted with the initial weights says so, and the schedule can refuse its groups."""

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, rows) -> "RolloutResult":
        """The groups at positions ``rows``, in that order."""
        rows = [int(r) for r in rows]
        return RolloutResult(self.ids[rows], [self.prompt_ids[i] for i in rows], [self.completions[i] for i in rows],
                             self.rewards[rows], self.metrics, None if self.weights is None else self.weights[rows],
                             self.version)

    def with_signal(self) -> np.ndarray:
        """Positions of the groups whose rewards are not all equal (the ones GRPO learns from)."""
        return np.flatnonzero(self.rewards.max(axis=1) > self.rewards.min(axis=1)) if len(self) else np.empty(0, dtype=np.int64)

    def train_inputs(self) -> tuple[list[list[int]], list[list[tuple[list[int], list[float]]]], torch.Tensor]:
        """(prompts, completions as (token ids, log-probs), rewards) in the form ``make_train_batch`` takes."""
        return (self.prompt_ids, [[(c.token_ids, c.logprobs) for c in g] for g in self.completions],
                torch.as_tensor(self.rewards))

    @staticmethod
    def concat(parts: list["RolloutResult"]) -> "RolloutResult":
        metrics: dict[str, float] = {}
        for p in parts:
            for k, v in p.metrics.items():
                # Times of actors working in parallel: the slowest one is the wall time.
                metrics[k] = max(metrics.get(k, 0.0), v) if k.startswith("time/") else metrics.get(k, 0.0) + v
        return RolloutResult(
            ids=np.concatenate([p.ids for p in parts]) if parts else np.empty(0, dtype=np.int64),
            prompt_ids=[x for p in parts for x in p.prompt_ids],
            completions=[x for p in parts for x in p.completions],
            rewards=np.concatenate([p.rewards for p in parts]) if parts else np.empty((0, 0)),
            metrics=metrics,
            weights=None if all(p.weights is None for p in parts) else np.concatenate(
                [np.ones(len(p.ids)) if p.weights is None else p.weights for p in parts]),
            version=max((p.version for p in parts), default=0),
        )


def encode_prompts(tokenizer, texts: list[str], data_cfg) -> list[list[int]]:
    """Token ids of templated prompt texts as the policy sees them: wrapped in the tokenizer's chat template
    as one user turn (after ``data.system_prompt``'s system turn, if set) with ``data.chat_template``, else
    the text alone. One place, so training, evaluation and the benchmarks prompt alike."""
    if not data_cfg.chat_template:
        return [list(e) for e in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    system = [{"role": "system", "content": data_cfg.system_prompt}] if data_cfg.system_prompt else []
    out = []
    for text in texts:
        enc = tokenizer.apply_chat_template([*system, {"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        # transformers 5 returns a BatchEncoding (a mapping, not a dict): list() of it gives its keys
        out.append([int(t) for t in (enc["input_ids"] if hasattr(enc, "keys") else enc)])
    return out


class RolloutWorker:
    def __init__(self, cfg: Config, model_path: str, problems: dict[str, ProblemSet], seed: int):
        rc = cfg.rollout
        if rc.gpus_per_actor == 0:
            torch.set_num_threads(cfg.torch_threads("rollout"))
        self.cfg = cfg
        self.problems = problems
        self.tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
        kwargs: dict = dict(dtype=cfg.model.dtype, seed=seed, trust_remote_code=cfg.model.trust_remote_code)
        self._prompt_cache: dict[tuple[str, int], list[int]] = {}
        if rc.engine == "vllm":
            v = rc.vllm
            kwargs.update(tensor_parallel_size=v.tensor_parallel_size, gpu_memory_utilization=v.gpu_memory_utilization,
                          enforce_eager=v.enforce_eager, max_model_len=v.max_model_len or self._context_length(model_path),
                          nccl_sync=cfg.weight_sync == "nccl", ipc_sync=cfg.weight_sync == "ipc",
                          sleep_mode=rc.colocate)
        elif rc.gpus_per_actor > 0 or (rc.colocate and cfg.learner.gpus_per_actor > 0):
            kwargs["device"] = "cuda"
        self.engine = create_engine(rc.engine, model_path, **kwargs)
        self.scorer = RewardScorer(cfg.reward)
        self.policy_version = 0  # of the weights loaded; named by each sync

    def generate(self, split: str, ids, sampling: Sampling) -> RolloutResult:
        ids = np.asarray(ids, dtype=np.int64)
        problems = self.problems[split]
        prompts = self._prompts(split, ids)
        t0 = time.perf_counter()
        groups = self.engine.generate(prompts, sampling) if len(ids) else []
        t1 = time.perf_counter()
        flat_texts = [self.tokenizer.decode(c.token_ids, skip_special_tokens=True) for g in groups for c in g]
        answers = [problems.answers[int(i)] for i in ids for _ in range(sampling.n)]
        scores, reward_metrics = self.scorer.score(flat_texts, answers)
        t2 = time.perf_counter()
        tokens = sum(len(c.token_ids) for g in groups for c in g)
        metrics = {**reward_metrics, "time/generate": t1 - t0, "time/reward": t2 - t1,
                   "rollout/tokens": float(tokens), "rollout/truncated": float(sum(not c.finished for g in groups for c in g))}
        metrics.pop("reward/mean", None)
        rewards = np.asarray(scores, dtype=np.float64).reshape(len(ids), sampling.n)
        return RolloutResult(ids, prompts, groups, rewards, metrics, version=self.policy_version)

    def _prompts(self, split: str, ids: np.ndarray) -> list[list[int]]:
        """The prompts of ``ids`` as token ids, cached; the ones not seen before are tokenized in one batch
        (one call into the tokenizer's backend instead of one per prompt: ~1 ms of a 45 ms tiny-default
        call, since most problems are drawn only once or twice in a run)."""
        cache, texts = self._prompt_cache, self.problems[split].prompts
        missing = list(dict.fromkeys(int(i) for i in ids if (split, int(i)) not in cache))
        if missing:
            encoded = encode_prompts(self.tokenizer, [texts[i] for i in missing], self.cfg.data)
            cache.update(((split, i), list(e)) for i, e in zip(missing, encoded))
        return [cache[(split, int(i))] for i in ids]

    def _context_length(self, model_path: str) -> int:
        """vLLM's ``max_model_len`` for ``rollout.vllm.max_model_len=0``: every prompt of every split is
        tokenized now (they are cached for the run), plus the completion budget."""
        from transformers import AutoConfig

        from rlpp.rollout.vllm_engine import context_length

        longest = max(len(p) for split, ps in self.problems.items() for p in self._prompts(split, np.arange(len(ps))))
        limit = getattr(AutoConfig.from_pretrained(model_path, trust_remote_code=self.cfg.model.trust_remote_code),
                        "max_position_embeddings", None)
        return context_length(longest, self.cfg.rollout.max_new_tokens, limit)

    # The rollout halves of the weight transports (rlpp.sync), called by rlpp.distributed.weight_sync.
    def load_weights(self, weights: Mapping[str, torch.Tensor], version: int | None = None) -> None:
        """The object-store sync: ``weights`` (rank 0's ``PackedWeights``) into the engine, then ``version``."""
        object_store.load_weights(self.engine, weights)
        if version is not None:
            self.policy_version = version

    def set_policy_version(self, version: int) -> None:
        """The version the weights just loaded by another path (NCCL, CUDA IPC) belong to."""
        self.policy_version = version

    def sync_receive_ipc(self, update_info: dict) -> None:
        """The CUDA IPC sync (``rlpp.sync.ipc.IpcWeightReceiver``)."""
        self.engine.receiver.receive(update_info)

    # The NCCL sync (``rlpp.sync.nccl.NcclWeightReceiver``; that module gives the order of these calls).
    def sync_world_size(self) -> int:
        return self.engine.receiver.world_size

    def sync_init(self, address: str, port: int, rank_offset: int, world_size: int) -> None:
        self.engine.receiver.init(address, port, rank_offset, world_size)

    def sync_receive(self, metadata) -> None:
        self.engine.receiver.receive(metadata)

    # Colocated mode (rollout.colocate): the engine frees its GPU memory while the learner trains.
    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.engine.wake_up(tags)

    def ping(self) -> bool:
        return True
