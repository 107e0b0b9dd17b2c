"""Learner → rollout weight transfer: NCCL broadcast on GPU (``rlpp.sync.nccl``)."""
