"""Policy models and tokenizers: the tiny locally built model, and loading from the hub or a folder."""
