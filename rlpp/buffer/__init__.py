"""Prioritized replay over training problems (pure Python + numpy; no Ray)."""

from rlpp.buffer import bayesian, oracle, skipping  # noqa: F401 - importing registers their samplers
from rlpp.buffer.buffer import HEAP, IN_FLIGHT, POOL_NAMES, SOLVED, UNSOLVED, PriorityBuffer, SampleBatch
from rlpp.buffer.samplers import SAMPLERS, Sampler, register_sampler

__all__ = ["PriorityBuffer", "SampleBatch", "SAMPLERS", "Sampler", "register_sampler", "POOL_NAMES",
           "HEAP", "SOLVED", "UNSOLVED", "IN_FLIGHT"]
