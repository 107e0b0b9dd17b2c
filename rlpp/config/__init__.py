"""Typed, frozen, validated configuration.

The schema (``rlpp.config.schema``) is plain dataclasses so light modules (the buffer, the algorithm code)
import it without omegaconf; YAML loading and writing live in ``rlpp.config.loader``, which the entry points,
the trainer (it writes each run's ``config.yaml``) and the ablation tools import.
"""

from rlpp.config.schema import BufferConfig, Config, ConfigError, PrioritizedConfig, RetestConfig, validate

__all__ = ["BufferConfig", "Config", "ConfigError", "PrioritizedConfig", "RetestConfig", "validate"]
