"""rlpp: Ray-based RL post-training with prioritized replay over training problems."""

__version__ = "0.1.0"
