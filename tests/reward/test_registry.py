"""Names, ``module:function`` resolution and its errors."""

from __future__ import annotations

import sys

import pytest

import rlpp.reward.builtin as builtin
from rlpp.reward import REWARDS, is_inline, register_reward, resolve_reward


def test_builtins_registered():
    assert {"arithmetic", "exact_match", "math_verify"} <= set(REWARDS)
    assert resolve_reward("arithmetic") is builtin.arithmetic
    assert is_inline(REWARDS["arithmetic"]) and is_inline(REWARDS["exact_match"])
    assert not is_inline(REWARDS["math_verify"])


def test_unknown_name():
    with pytest.raises(ValueError, match=r"reward\.name.*'nope'.*arithmetic"):
        resolve_reward("nope")


def test_module_function():
    import reward_plugins

    fn = resolve_reward("reward_plugins:half")
    assert fn is reward_plugins.half
    assert not is_inline(fn)
    assert fn("x", "y") == 0.5


@pytest.mark.parametrize("name, message", [
    ("rlpp_no_such_module:fn", "no module named 'rlpp_no_such_module'"),
    ("rlpp.no_such_module:fn", "no module named 'rlpp.no_such_module'"),
    ("reward_plugins:missing", "has no attribute 'missing'"),
    ("reward_plugins:NOT_CALLABLE", "is a int, not a callable"),
    (":half", "must look like"),
    ("reward_plugins:", "must look like"),
    ("reward_plugins:half:x", "must look like"),
])
def test_module_function_errors(name, message):
    with pytest.raises(ValueError) as info:
        resolve_reward(name)
    assert str(info.value).startswith("reward.name:")
    assert repr(name) in str(info.value)
    assert message in str(info.value)


def test_missing_dependency_inside_a_module_propagates():
    with pytest.raises(ModuleNotFoundError, match="rlpp_no_such_dependency"):
        resolve_reward("reward_plugins_broken:reward")


def test_register_runs_setup_on_resolve_and_rejects_duplicates():
    calls = []
    try:
        @register_reward("test_custom", inline=True, setup=lambda: calls.append(1))
        def custom(completion: str, answer: str) -> float:
            return 1.0

        assert calls == []
        assert resolve_reward("test_custom") is custom
        assert calls == [1]
        assert is_inline(custom)
        with pytest.raises(ValueError, match="already registered"):
            register_reward("test_custom")(lambda c, a: 0.0)
    finally:
        REWARDS.pop("test_custom", None)


def test_math_verify_missing_says_how_to_install(monkeypatch):
    builtin._load_math_verify.cache_clear()
    monkeypatch.setitem(sys.modules, "math_verify", None)  # makes `import math_verify` fail
    try:
        with pytest.raises(ImportError, match="pip install .*math-verify"):
            resolve_reward("math_verify")
    finally:
        builtin._load_math_verify.cache_clear()
