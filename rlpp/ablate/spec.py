"""The ablation spec: a YAML file naming a base training config, the arms to compare, the seeds and an
equal rollout budget, validated completely (every arm's training config included) before anything runs.

```yaml
base: configs/tiny.yaml           # training config every arm starts from (required)
overrides: {trainer.eval_every: 25}  # dotted training keys applied to every arm (optional)
budget_rollouts: 51200            # rollouts (generated samples) each run may spend (required)
seeds: [0, 1, 2]                  # every arm runs once per seed
arm_seeds: {uniform: [0, 1, 2, 3, 4]}  # arms that run other seeds (optional; e.g. more for the reference)
references: {prop: uniform_lr1e-4}  # a second reference per arm, e.g. uniform at the arm's own settings (optional)
arms:                             # name -> dotted training keys of that arm (required)
  prioritized: {buffer.sampler: prioritized}
  uniform: {buffer.sampler: uniform}
output_dir: runs/ablate/tiny      # runs go to OUTPUT_DIR/ARM/seed_S
parallel: 1                       # runs at once
description: ""                   # free text shown at the top of the report
```

Command-line ``key=value`` overrides change the spec's own keys (``budget_rollouts=2048``,
``seeds=[0]``); ``train.KEY=VALUE`` adds ``KEY: VALUE`` to ``overrides`` (every arm), and
``arms.NAME.KEY=VALUE`` changes (or adds) one arm's setting. Arm settings win over ``overrides``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

SPEC_FILE = "ablation.yaml"
"""The resolved spec, saved in the output folder by ``rlpp ablate``; ``rlpp report`` reads it."""
SPEC_KEYS = ("base", "overrides", "budget_rollouts", "seeds", "arm_seeds", "arms", "output_dir", "parallel", "description",
             "targets", "references")
DEFAULT_TARGETS = {"rollouts": 0.6, "zero_var": 0.4, "abs_adv": 1.3}
"""What an arm should achieve against the reference: rollouts to the reference's final accuracy ≤ 0.6×,
zero-variance share ≤ 0.4×, mean |advantage| ≥ 1.3× (the report says which are met)."""
RUNNER_KEYS = ("seed", "trainer.max_rollouts", "trainer.steps", "trainer.output_dir", "log.progress_bar")
"""Training keys ``rlpp ablate`` sets itself for each run; a spec may not set them."""
STEPS_FACTOR = 2
"""``trainer.steps`` = this × the steps the budget needs at B × G rollouts per step: only an upper
bound, so ``trainer.max_rollouts`` always ends the run (a step never costs fewer than B × G)."""
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ValueError):
    """An invalid ablation spec; the message names the file and the key."""


@dataclass(frozen=True)
class AblationSpec:
    """A validated ablation: ``arms`` and ``overrides`` hold flat dotted training keys."""

    base: str
    budget_rollouts: int
    arms: dict[str, dict[str, Any]]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    overrides: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs/ablate"
    parallel: int = 1
    description: str = ""
    targets: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    arm_seeds: dict[str, list[int]] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    """arm -> a second arm it is also compared with, seed by seed (e.g. uniform at that arm's batch size and
    learning rate, so a gain is not a batch-size or learning-rate effect)."""

    def seeds_of(self, arm: str) -> list[int]:
        """The seeds ``arm`` runs: its ``arm_seeds`` entry, else ``seeds``."""
        return list(self.arm_seeds.get(arm, self.seeds))

    @property
    def reference(self) -> str:
        """The arm others are compared with: ``uniform`` if there is one, else the first arm."""
        return "uniform" if "uniform" in self.arms else next(iter(self.arms))

    def run_dir(self, arm: str, seed: int) -> Path:
        return Path(self.output_dir) / arm / f"seed_{seed}"

    def train_overrides(self, arm: str, seed: int, steps: int) -> list[str]:
        """The ``key=value`` arguments of ``rlpp train BASE ...`` for one run (later keys win)."""
        merged = {**self.overrides, **self.arms[arm]}
        fixed = {"seed": seed, "trainer.max_rollouts": self.budget_rollouts, "trainer.steps": steps,
                 "trainer.output_dir": str(self.run_dir(arm, seed)), "log.progress_bar": False}
        return [f"{k}={format_value(v)}" for k, v in {**merged, **fixed}.items()]

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False, width=1000)


def format_value(value: Any) -> str:
    """A value as YAML text that ``rlpp train`` parses back to the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return text[: -len("\n...")].strip() if text.endswith("\n...") else text


def steps_for(budget: int, batch_size: int, group_size: int) -> int:
    """Upper bound on steps for a run of ``budget`` rollouts (see ``STEPS_FACTOR``)."""
    return STEPS_FACTOR * math.ceil(budget / (batch_size * group_size))


def load_spec(path: str | Path, cli: Sequence[str] = ()) -> AblationSpec:
    """Read, override and validate an ablation spec; raises SpecError naming the key."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: ablation file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: top level must be a mapping of {list(SPEC_KEYS)}")
    _apply_cli(raw, cli)
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise SpecError(f"{path}: {unknown[0]}: unknown key; known keys: {list(SPEC_KEYS)}")
    return _build(raw, path)


def _apply_cli(raw: dict, cli: Sequence[str]) -> None:
    for item in cli:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"override {item!r} must look like key=value (e.g. budget_rollouts=2048)")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise SpecError(f"override {item!r}: value is not valid YAML: {e}") from None
        head, _, rest = key.partition(".")
        if head == "train" and rest:
            raw["overrides"] = {**_flat(raw.get("overrides") or {}, "overrides"), rest: value}
        elif head == "arms" and rest:
            name, _, arm_key = rest.partition(".")
            if not arm_key:
                raise SpecError(f"override {item!r}: give an arm's training key, e.g. arms.{name}.buffer.sampler=uniform")
            arms = raw.setdefault("arms", {})
            if not isinstance(arms, dict):
                raise SpecError(f"arms must be a mapping of arm name -> training overrides, got {arms!r}")
            arms[name] = {**_flat(arms.get(name) or {}, f"arms.{name}"), arm_key: value}
        elif head in SPEC_KEYS and not rest:
            raw[key] = value
        else:
            raise SpecError(f"override {item!r}: {key}: unknown key; known keys: {list(SPEC_KEYS)}, "
                            "train.<training key> (every arm) or arms.<arm>.<training key>")


def _build(raw: dict, path: Path) -> AblationSpec:
    where = str(path)
    if "base" not in raw or not raw["base"]:
        raise SpecError(f"{where}: base: required: the training config every arm starts from (e.g. configs/tiny.yaml)")
    base = Path(str(raw["base"])).expanduser()
    if not base.is_absolute() and not base.is_file() and (path.parent / base).is_file():
        base = path.parent / base  # relative to the ablation file when not found from the working directory
    if not base.is_file():
        raise SpecError(f"{where}: base: training config {raw['base']!r} not found")
    budget = raw.get("budget_rollouts")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise SpecError(f"{where}: budget_rollouts: required, an integer >= 1, got {budget!r}")
    seeds = _seeds(raw.get("seeds", [0, 1, 2]), f"{where}: seeds")
    arm_seeds_raw = raw.get("arm_seeds") or {}
    if not isinstance(arm_seeds_raw, dict):
        raise SpecError(f"{where}: arm_seeds: a mapping of arm name -> list of seeds, got {arm_seeds_raw!r}")
    arm_seeds = {str(a): _seeds(v, f"{where}: arm_seeds.{a}") for a, v in arm_seeds_raw.items()}
    parallel = raw.get("parallel", 1)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise SpecError(f"{where}: parallel: must be an integer >= 1, got {parallel!r}")
    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, dict) or not arms_raw:
        raise SpecError(f"{where}: arms: required, a mapping of arm name -> training overrides (e.g. "
                        "{uniform: {buffer.sampler: uniform}}), got " + repr(arms_raw))
    arms = {}
    for name, value in arms_raw.items():
        if not isinstance(name, str) or not _ARM_NAME.match(name):
            raise SpecError(f"{where}: arms.{name}: an arm name must be letters, digits, '_', '-' or '.'")
        arms[name] = _flat(value or {}, f"{where}: arms.{name}")
    unknown = sorted(set(arm_seeds) - set(arms))
    if unknown:
        raise SpecError(f"{where}: arm_seeds.{unknown[0]}: no such arm; arms: {list(arms)}")
    references = raw.get("references") or {}
    if not isinstance(references, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in references.items()):
        raise SpecError(f"{where}: references: a mapping of arm name -> reference arm name, got {references!r}")
    for arm, ref_arm in references.items():
        if arm not in arms or ref_arm not in arms:
            raise SpecError(f"{where}: references.{arm}: {arm if arm not in arms else ref_arm!r} is not an arm; "
                            f"arms: {list(arms)}")
    overrides = _flat(raw.get("overrides") or {}, f"{where}: overrides")
    for key in RUNNER_KEYS:
        for label, layer in (("overrides", overrides), *((f"arms.{n}", a) for n, a in arms.items())):
            if key in layer:
                raise SpecError(f"{where}: {label}.{key}: set by rlpp ablate for each run (use budget_rollouts, "
                                "seeds and output_dir)")
    output_dir = raw.get("output_dir") or f"runs/ablate/{path.stem}"
    description = raw.get("description") or ""
    if not isinstance(output_dir, str) or not isinstance(description, str):
        raise SpecError(f"{where}: output_dir and description must be strings")
    targets = raw.get("targets") or {}
    if not isinstance(targets, dict) or set(targets) - set(DEFAULT_TARGETS) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in targets.values()):
        raise SpecError(f"{where}: targets: a mapping of {list(DEFAULT_TARGETS)} to positive numbers, got {targets!r}")
    return AblationSpec(base=str(base), budget_rollouts=budget, arms=arms, seeds=list(seeds), overrides=overrides,
                        output_dir=output_dir, parallel=parallel, description=description, arm_seeds=arm_seeds,
                        references=references,
                        targets={**DEFAULT_TARGETS, **{k: float(v) for k, v in targets.items()}})


def _seeds(seeds: Any, where: str) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise SpecError(f"{where}: must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    return list(seeds)


def _flat(value: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """``{buffer: {sampler: x}}`` and ``{buffer.sampler: x}`` alike become ``{"buffer.sampler": x}``."""
    if not isinstance(value, dict):
        raise SpecError(f"{where}: must be a mapping of training keys to values (e.g. {{buffer.sampler: uniform}}), "
                        f"got {value!r}")
    out: dict[str, Any] = {}
    for key, v in value.items():
        full = f"{prefix}{key}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, where, f"{full}."))
        else:
            out[full] = v
    return out


def resolve_configs(spec: AblationSpec) -> dict[tuple[str, int], tuple[Any, list[str]]]:
    """Every run's validated training ``Config`` and its ``rlpp train`` overrides, keyed by (arm, seed).

    Raises SpecError naming the arm when a training config is invalid, so a typo fails before any run."""
    from rlpp.config.loader import load_config
    from rlpp.config.schema import ConfigError

    out = {}
    for arm in spec.arms:
        for seed in spec.seeds_of(arm):
            try:
                probe = load_config(spec.base, spec.train_overrides(arm, seed, steps=1))
                steps = steps_for(spec.budget_rollouts, probe.trainer.batch_size, probe.rollout.group_size)
                overrides = spec.train_overrides(arm, seed, steps)
                out[arm, seed] = (load_config(spec.base, overrides), overrides)
            except ConfigError as e:
                raise SpecError(f"arms.{arm} (seed {seed}): training config: {e}") from None
    return out
