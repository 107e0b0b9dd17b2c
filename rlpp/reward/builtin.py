"""The built-in rewards: ``arithmetic``, ``final_number``, ``exact_match`` and ``math_verify``.

Each scores 1.0 (correct) or 0.0. A malformed *reference* answer raises, so the scorer counts it under
``reward/errors`` and warns, instead of silently scoring it 0 like a wrong completion.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
from types import ModuleType

from rlpp.reward.registry import register_reward

_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")
_BRACES = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")
_LATEX_DELIMITERS = ("$", "\\(", "\\[", "\\boxed")
_MATH_VERIFY_PIP = 'pip install "math-verify[antlr4_13_2]"'


@register_reward("arithmetic", inline=True)
def arithmetic(completion: str, answer: str) -> float:
    """The synthetic arithmetic task: 1.0 iff the stripped completion is an integer equal to ``answer``.

    The integer is ASCII digits with an optional leading ``-`` and is compared by value (``"019"``
    matches ``"19"``). Anything else after the number (a model that did not stop) scores 0: the task
    asks for the number alone, and rewarding a prefix would teach the model to ramble.
    """
    text = completion.strip()
    if not _INT.fullmatch(text):
        return 0.0
    return float(int(text) == int(answer))


@register_reward("final_number", inline=True)
def final_number(completion: str, answer: str) -> float:
    """1.0 iff the completion's final number equals ``answer``: the number in its last ``\\boxed{...}`` if it
    has one, else the last number in the text (``1,234`` reads as 1234; ``-7`` and ``2.5`` are numbers).

    For a chat model asked a question with a numeric answer, which answers in a sentence ("47 + 8 = 55.")
    rather than with the number alone: the strict ``arithmetic`` reward would score that 0. Inline: a regex."""
    reference = _to_number(answer)
    if reference is None:
        raise ValueError(f"final_number: the reference answer {answer!r} is not a number")
    boxed = last_boxed(completion)
    found = _NUMBER.findall(completion if boxed is None else boxed)
    return float(bool(found) and _to_number(found[-1]) == reference)


def _to_number(text: str) -> float | None:
    try:
        return float(text.strip().replace(",", ""))
    except ValueError:
        return None


@register_reward("exact_match", inline=True)
def exact_match(completion: str, answer: str) -> float:
    """1.0 iff ``final_answer(completion) == final_answer(answer)`` (string equality, case kept)."""
    reference = final_answer(answer)
    if not reference:
        raise ValueError("exact_match: the reference answer is empty")
    return float(final_answer(completion) == reference)


def final_answer(text: str) -> str:
    """The content of the last complete ``\\boxed{...}`` if there is one, else the whole text; with
    every run of whitespace collapsed to one space and the ends stripped."""
    boxed = last_boxed(text)
    return " ".join((text if boxed is None else boxed).split())


def last_boxed(text: str) -> str | None:
    """Content of the ``\\boxed{...}`` (or ``\\fbox{...}``, which some MATH solutions use) whose closing
    brace comes last (the outer one when nested), or None if none is closed. Braces are matched in one pass, so junk input stays linear."""
    stack: list[int | None] = []  # content start of an open \boxed{, None for a plain {
    found = None
    for m in _BRACES.finditer(text):
        if m.group() != "}":
            stack.append(m.end() if m.group() != "{" else None)
        elif stack:
            start = stack.pop()
            if start is not None:
                found = (start, m.start())
    return None if found is None else text[found[0]:found[1]]


@functools.cache
def _load_math_verify() -> ModuleType:
    """Import math-verify once and check that it can parse LaTeX (its ANTLR runtime works)."""
    try:
        mv = importlib.import_module("math_verify")
    except ImportError as exc:
        raise ImportError(f"reward.name=math_verify needs the math-verify package: {_MATH_VERIFY_PIP}") from exc
    # The scorer enforces reward.timeout_s itself, so math-verify's one-time advice to do so is noise.
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_drop_timeout_disabled_notice)
    # parse() swallows its own errors, so a broken ANTLR install would otherwise score everything 0.
    if not mv.parse("$\\frac{1}{2}$", parsing_timeout=None):
        raise ImportError(f"math-verify is installed but cannot parse LaTeX (is the ANTLR runtime "
                          f"missing or of another version?): {_MATH_VERIFY_PIP}")
    return mv


def _drop_timeout_disabled_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Timeout is disabled")


def _setup_math_verify() -> None:
    _load_math_verify()


@register_reward("math_verify", setup=_setup_math_verify)
def math_verify_reward(completion: str, answer: str) -> float:
    """1.0 iff math-verify finds the completion's final answer equal to the reference.

    The final answer is the last complete ``\\boxed{...}`` if there is one (math-verify on its own
    would take every boxed expression as a set), else whatever math-verify extracts from the whole
    completion. A reference without LaTeX delimiters (``0.5``, ``\\frac{1}{2}``, ``x^2+1``) is read as
    if boxed. math-verify's own ``signal.alarm`` timeouts are off (``parsing_timeout=None``,
    ``timeout_seconds=None``): they work only on the main thread; the scorer enforces the time limit.
    """
    mv = _load_math_verify()
    reference = answer.strip()
    if not any(d in reference for d in _LATEX_DELIMITERS):
        reference = f"\\boxed{{{reference}}}"
    gold = mv.parse(reference, parsing_timeout=None)
    if not gold:
        raise ValueError(f"math_verify: cannot parse the reference answer {answer!r}")
    boxed = last_boxed(completion)
    pred = mv.parse(completion if boxed is None else f"\\boxed{{{boxed}}}", parsing_timeout=None)
    return float(mv.verify(gold, pred, timeout_seconds=None))
