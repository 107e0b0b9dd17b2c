"""Reward functions by name: the registry, its decorator, and ``module:function`` resolution.

A reward function is ``fn(completion: str, answer: str) -> float``: ``completion`` is the generated
text (prompt excluded, end-of-sequence token stripped), ``answer`` the reference answer string from
the dataset row.
"""

from __future__ import annotations

import importlib
from typing import Callable

RewardFn = Callable[[str, str], float]

REWARDS: dict[str, RewardFn] = {}

# Set by ``register_reward`` on the function object, so a resolved function carries its own policy.
_INLINE = "rlpp_inline"
_SETUP = "rlpp_setup"


def register_reward(
    name: str, *, inline: bool = False, setup: Callable[[], None] | None = None
) -> Callable[[RewardFn], RewardFn]:
    """Register a reward function under ``name`` (the value of ``reward.name``).

    ``inline=True`` is for rewards whose cost is bounded and tiny (a regex, an int parse): the scorer
    runs them in the calling thread, where ``reward.timeout_s`` does not apply (exceptions are still
    caught and counted). ``setup`` runs once when the reward is resolved, e.g. to import an optional
    package, so a missing dependency fails at startup instead of scoring every completion 0.
    """

    def wrap(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered (to {REWARDS[name].__qualname__})")
        setattr(fn, _INLINE, inline)
        setattr(fn, _SETUP, setup)
        REWARDS[name] = fn
        return fn

    return wrap


def is_inline(fn: RewardFn) -> bool:
    """Whether ``fn`` was registered as cheap enough to run in the calling thread."""
    return bool(getattr(fn, _INLINE, False))


class RewardError(ValueError):
    """``reward.name`` names no usable reward function."""


def check_reward(name: str) -> RewardFn:
    """``resolve_reward`` for the driver's up-front check: a plugin module that fails while importing (its
    own bug, or a dependency it lacks) is reported as a ``RewardError`` naming ``reward.name`` too, so the
    user sees one line instead of a traceback from every rollout actor."""
    try:
        return resolve_reward(name)
    except RewardError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the plugin raised, with its type kept in the message
        raise RewardError(f"reward.name {name!r}: loading it failed: {type(e).__name__}: {e}") from e


def resolve_reward(name: str) -> RewardFn:
    """The reward function for ``reward.name``: a registered name or ``package.module:function``.

    Raises ValueError naming ``reward.name`` for an unknown name, a module that does not exist, a
    missing attribute or one that is not callable. Errors raised while importing an existing module
    propagate unchanged (they are bugs in that module). Runs the reward's ``setup`` hook, if any.
    """
    if ":" in name:
        fn = _import_function(name)
    elif name in REWARDS:
        fn = REWARDS[name]
    else:
        raise RewardError(f"reward.name: unknown reward {name!r}; registered: {sorted(REWARDS)}, "
                         f"or give 'package.module:function'")
    setup = getattr(fn, _SETUP, None)
    if setup is not None:
        setup()
    return fn


def _import_function(name: str) -> RewardFn:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr or ":" in attr:
        raise RewardError(f"reward.name: {name!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the named module (or a parent package) missing is a config error; a missing
        # dependency inside an existing module is that module's bug and propagates as is.
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        raise RewardError(f"reward.name: {name!r}: no module named {module_name!r}") from exc
    if not hasattr(module, attr):
        raise RewardError(f"reward.name: {name!r}: module {module_name!r} has no attribute {attr!r}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise RewardError(f"reward.name: {name!r}: {module_name}.{attr} is a {type(fn).__name__}, "
                         f"not a callable")
    return fn
