"""The learner: DeepSpeed engines performing GRPO updates (plain classes; Ray wraps them)."""
