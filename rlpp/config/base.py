"""What every config group shares: the error type, range checks, and the validating walk.

Each group class lists its checks in ``_problems()`` as ``(field, message)`` pairs; ``validate`` walks
the tree and prefixes the path, so a check never needs to know where its group sits. A group may name
sub-groups its settings leave unused (``_unused_groups()``, e.g. the settings of samplers not chosen):
they are not validated, so a config written for one variant is not refused over another's defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

class ConfigError(ValueError):
    """An invalid configuration value; the message starts with the full key path."""


Problems = Iterator[tuple[str, str]]


def in_range(name: str, value: float, lo: float, hi: float, *, lo_open=False, hi_open=False) -> Problems:
    too_low = value <= lo if lo_open else value < lo
    too_high = value >= hi if hi_open else value > hi
    if too_low or too_high:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        yield name, f"must be in {left}{lo}, {hi}{right}, got {value!r}"


def at_least(name: str, value: float, lo: float) -> Problems:
    if value < lo:
        yield name, f"must be >= {lo}, got {value!r}"


def one_of(name: str, value: str, choices: tuple[str, ...]) -> Problems:
    if value not in choices:
        yield name, f"must be one of {list(choices)}, got {value!r}"


def validate(cfg: object, prefix: str = "") -> None:
    """Check ``cfg`` and every nested group; raise one ConfigError listing every problem found."""
    found = list(_walk(cfg, prefix))
    if found:
        raise ConfigError("; ".join(f"{key} {msg}" for key, msg in found))


def _walk(cfg: object, prefix: str) -> Problems:
    if hasattr(cfg, "_problems"):
        for name, msg in cfg._problems():
            yield f"{prefix}{name}", msg
    unused = cfg._unused_groups() if hasattr(cfg, "_unused_groups") else ()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and f.name not in unused:
            yield from _walk(value, f"{prefix}{f.name}.")
