"""The five parts the loop talks to are typed by the Protocols in ``rlpp.distributed.runtime``; the Ray-backed
classes and the in-process fakes of ``tests/test_loop_fakes.py`` must both implement them."""

from __future__ import annotations

import inspect

import pytest

from rlpp.buffer import PriorityBuffer
from rlpp.distributed import runtime
from rlpp.distributed.control import RunControl
from rlpp.distributed.groups import LearnerGroup, RolloutGroup
from rlpp.distributed.weight_sync import WeightSync

PROTOCOLS = [runtime.BufferLike, runtime.RolloutPool, runtime.LearnerPool, runtime.WeightSyncLike, runtime.RunControlLike]


def members(proto) -> tuple[set[str], set[str]]:
    """(methods, data attributes) a Protocol declares."""
    methods = {n for n, v in vars(proto).items() if not n.startswith("_") and inspect.isfunction(v)}
    return methods, set(getattr(proto, "__annotations__", {}))


@pytest.mark.parametrize("proto, cls", [(runtime.BufferLike, PriorityBuffer), (runtime.RolloutPool, RolloutGroup),
                                        (runtime.LearnerPool, LearnerGroup), (runtime.WeightSyncLike, WeightSync),
                                        (runtime.RunControlLike, RunControl)])
def test_every_ray_backed_part_has_the_methods_its_protocol_declares(proto, cls):
    methods, _ = members(proto)
    missing = sorted(m for m in methods if not callable(getattr(cls, m, None)))
    assert not missing, f"{cls.__name__} lacks {missing} of {proto.__name__}"
    for m in methods:  # the loop's calls must bind: every parameter the protocol names is accepted
        want = [p for p in inspect.signature(getattr(proto, m)).parameters if p != "self"]
        have = inspect.signature(getattr(cls, m)).parameters
        if not any(p.kind == p.VAR_POSITIONAL for p in have.values()):
            assert len([p for p in have if p != "self"]) >= len(want), f"{cls.__name__}.{m} takes fewer arguments"


def test_the_fakes_the_loop_tests_run_on_implement_the_same_protocols(tmp_path):
    from tests.test_loop_fakes import make_trainer

    with make_trainer(tmp_path) as t:
        parts = t.parts
        for proto, part in zip(PROTOCOLS, (parts.buffer, parts.rollouts, parts.learners, parts.sync_weights, parts.control)):
            assert isinstance(part, proto), f"{type(part).__name__} does not implement {proto.__name__}"
