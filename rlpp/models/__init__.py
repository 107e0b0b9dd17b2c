"""Policy models and tokenizers: the tiny locally built model, and loading from the hub or a folder."""


class ModelError(ValueError):
    """``model.path`` names nothing that loads (a missing folder, an unreachable hub name, a bad GGUF path)."""
