"""YAML + ``key=value`` overrides -> a validated, frozen ``Config``.

Layers merge in order: the schema's defaults, the YAML file, then the command-line overrides. Unknown
keys and values of the wrong type are rejected by omegaconf's structured merge; range checks run once
in ``Config.__post_init__``. Every error becomes a ``ConfigError`` naming the file or override and the
full key path. YAML is data: nothing in a config is evaluated as code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import dataclasses
import functools
import re
import typing

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlpp.config.schema import Config, ConfigError


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true/false. YAML 1.1 also reads off/on/yes/no as booleans, which
    turned ``buffer.retest.mode: off`` into the string "False"; those words now stay text, and boolean
    settings still accept them (omegaconf converts on/off/yes/no for bool fields)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  [_first])


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Build the run's config from an optional YAML file and ``key=value`` overrides."""
    layers: list[tuple[str, dict]] = []
    if path is not None:
        layers.append((str(path), _read_yaml(Path(path))))
    if overrides:
        layers.append(("command-line overrides", _parse_overrides(overrides)))
    for source, layer in layers:
        _check_keys(layer, Config, "", source)
    try:  # one merge, one copy of the cached schema (each merge deep-copies its first argument)
        merged = OmegaConf.merge(_schema(), *(OmegaConf.create(layer) for _, layer in layers))
    except OmegaConfBaseException:
        merged = _schema()  # layer by layer, to name the one that is wrong
        for source, layer in layers:
            try:
                merged = OmegaConf.merge(merged, OmegaConf.create(layer))
            except OmegaConfBaseException as e:
                raise ConfigError(f"{source}: {_describe(e)}") from None
        raise
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e)) from None


def to_yaml(cfg: Config) -> str:
    """The fully resolved config as YAML (saved beside every run so it can be reproduced)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


@functools.cache
def _schema():
    """The defaults as an omegaconf structure, built once (building it takes most of a load's time)."""
    return OmegaConf.structured(Config)


@functools.cache
def _type_hints(schema: type) -> dict:
    """A schema class's resolved field types: resolving them costs milliseconds a class, and an ablation
    validates hundreds of configs."""
    return typing.get_type_hints(schema)


def _check_keys(layer: dict, schema: type, prefix: str, source: str) -> None:
    """Reject unknown keys and scalars given for whole groups, naming the full key (omegaconf's own
    message for the latter names no key)."""
    types = _type_hints(schema)
    for key, value in layer.items():
        full = f"{prefix}{key}"
        if key not in types:
            known = sorted(f.name for f in dataclasses.fields(schema))
            raise ConfigError(f"{source}: {full}: unknown key; known keys{' of ' + prefix[:-1] if prefix else ''}: {known}")
        group = types[key]
        if dataclasses.is_dataclass(group):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {full} is a group of settings, give its keys (e.g. {full}.<key>=...), got {value!r}")
            _check_keys(value, group, f"{full}.", source)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = _yaml(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config groups, got {type(data).__name__}")
    return data


def _parse_overrides(overrides: Sequence[str]) -> dict:
    items: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value (e.g. buffer.sampler=uniform)")
        try:
            value = _yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
        node = items
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} was already given a value")
        node[parts[-1]] = value
    return items


def _describe(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    msg = (getattr(e, "msg", None) or str(e)).splitlines()[0]
    return f"{key}: {msg}" if key else msg
