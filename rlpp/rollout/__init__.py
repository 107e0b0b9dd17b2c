"""Rollout: generation engines (vLLM, HF), and the actor that generates and scores GRPO groups."""
