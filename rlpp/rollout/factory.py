"""Rollout engines by name (``rollout.engine``): the registry is the only list of their names.

Each entry names the module and class to import, so choosing ``hf`` never imports vLLM. The engines
import the protocol module (``rlpp.rollout.engine``); nothing imports them back but this factory.
"""

from __future__ import annotations

import importlib

from rlpp.rollout.engine import RolloutEngine

ENGINES: dict[str, str] = {
    "hf": "rlpp.rollout.hf_engine:HFEngine",
    "vllm": "rlpp.rollout.vllm_engine:VllmEngine",
}
"""``rollout.engine`` name -> ``module:Class``; add an engine by adding its entry."""


def create_engine(kind: str, model_path: str, **kwargs) -> RolloutEngine:
    """The engine named by ``rollout.engine``; imports only what that engine needs."""
    if kind not in ENGINES:
        raise ValueError(f"rollout.engine must be one of {sorted(ENGINES)}, got {kind!r}")
    module, cls = ENGINES[kind].split(":")
    return getattr(importlib.import_module(module), cls)(model_path, **kwargs)
