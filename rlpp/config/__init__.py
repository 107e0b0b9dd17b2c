"""Typed, frozen, validated configuration.

The schema (``rlpp.config.schema``) is plain dataclasses so light modules can import it; YAML loading
lives in ``rlpp.config.loader`` and is imported only by entry points, keeping omegaconf out of them.
"""

from rlpp.config.schema import BufferConfig, Config, ConfigError, PrioritizedConfig, RetestConfig, validate

__all__ = ["BufferConfig", "Config", "ConfigError", "PrioritizedConfig", "RetestConfig", "validate"]
