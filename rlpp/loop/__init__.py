"""The rollout schedule and the group filters the training loop (``rlpp.trainer``) runs on."""
