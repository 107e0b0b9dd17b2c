"""Typed, frozen, validated configuration (schema here; YAML loading in ``rlpp.config.loader``)."""

from rlpp.config.schema import BufferConfig, Config, ConfigError, RetestConfig, validate

__all__ = ["BufferConfig", "Config", "ConfigError", "RetestConfig", "validate"]
