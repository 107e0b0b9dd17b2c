"""The built-in rewards on hand-written cases."""

from __future__ import annotations

import importlib.util
import signal
import threading
import time

import pytest

from rlpp.reward.builtin import arithmetic, exact_match, final_answer, last_boxed, math_verify_reward


@pytest.mark.parametrize("completion, answer, expected", [
    ("19", "19", 1.0),
    (" 19\n", "19", 1.0),
    ("-3", "-3", 1.0),
    ("019", "19", 1.0),  # compared by value
    ("0", "0", 1.0),
    ("3", "-3", 0.0),
    ("-3", "3", 0.0),
    ("20", "19", 0.0),
    ("", "19", 0.0),
    ("   ", "19", 0.0),
    ("19 junk", "19", 0.0),  # did not stop after the number
    ("19\n7+1=8", "19", 0.0),
    ("1 9", "19", 0.0),
    ("+19", "19", 0.0),
    ("19.0", "19", 0.0),
    ("--3", "-3", 0.0),
    ("abc", "19", 0.0),
])
def test_arithmetic(completion, answer, expected):
    assert arithmetic(completion, answer) == expected


def test_arithmetic_malformed_reference_raises():
    with pytest.raises(ValueError):
        arithmetic("19", "nineteen")


@pytest.mark.parametrize("completion, answer, expected", [
    ("Paris", "Paris", 1.0),
    ("  Paris \n", "Paris", 1.0),
    ("New   York", "New York", 1.0),
    ("paris", "Paris", 0.0),
    ("The answer is Paris", "Paris", 0.0),  # no \boxed{}: the whole completion is the answer
    ("So the answer is \\boxed{42}.", "42", 1.0),
    ("So the answer is \\boxed{ 42 }.", "42", 1.0),
    ("\\boxed{1}, no wait, \\boxed{2}", "2", 1.0),
    ("\\boxed{1}, no wait, \\boxed{2}", "1", 0.0),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 0.0),  # strings, not values: that is math_verify's job
    ("\\boxed{-3}", "-3", 1.0),
    ("42", "\\boxed{42}", 1.0),  # the reference goes through the same rule
    ("\\boxed{42", "42", 0.0),  # unclosed box: the whole text is compared
    ("", "42", 0.0),
    ("#### 42", "42", 0.0),
])
def test_exact_match(completion, answer, expected):
    assert exact_match(completion, answer) == expected


def test_exact_match_empty_reference_raises():
    with pytest.raises(ValueError, match="empty"):
        exact_match("42", "  ")


@pytest.mark.parametrize("text, expected", [
    ("no box", None),
    ("\\boxed{7}", "7"),
    ("a \\boxed{1} b \\boxed{2} c", "2"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\boxed{1}}", "\\boxed{1}"),  # the box that closes last
    ("\\boxed {x}", "x"),
    ("\\boxed{1} then \\boxed{2", "1"),  # the last one never closes
    ("}} \\boxed{}", ""),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_last_boxed_is_linear_on_junk():
    junk = "\\boxed{" * 100_000
    start = time.process_time()  # this process's CPU time: a loaded machine does not make it fail
    assert last_boxed(junk) is None
    assert final_answer(junk) == junk
    assert time.process_time() - start < 1.0  # quadratic matching would take minutes


needs_math_verify = pytest.mark.skipif(importlib.util.find_spec("math_verify") is None,
                                       reason="math-verify is not installed")


@needs_math_verify
@pytest.mark.parametrize("completion, answer, expected", [
    ("The answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\dfrac{1}{2}}", "$\\frac{1}{2}$", 1.0),
    ("The final answer is $\\frac{1}{2}$.", "0.5", 1.0),
    ("\\boxed{\\frac{1}{3}}", "0.5", 0.0),
    ("\\boxed{-3}", "-3", 1.0),
    ("\\boxed{3}", "-3", 0.0),
    ("\\boxed{3}, no wait, \\boxed{4}", "4", 1.0),  # only the last box counts
    ("\\boxed{3}, no wait, \\boxed{4}", "3", 0.0),
    ("\\boxed{1+x^2}", "x^2+1", 1.0),
    ("\\boxed{72}", "72", 1.0),
    ("", "0.5", 0.0),
    ("junk ### }{", "0.5", 0.0),
])
def test_math_verify(completion, answer, expected):
    assert math_verify_reward(completion, answer) == expected


@needs_math_verify
def test_math_verify_unparseable_reference_raises():
    with pytest.raises(ValueError, match="reference"):
        math_verify_reward("\\boxed{1}", "")


@needs_math_verify
def test_math_verify_off_the_main_thread():
    before = signal.getsignal(signal.SIGALRM)
    results, errors = [], []

    def work():
        try:
            results.append(math_verify_reward("\\boxed{\\frac{1}{2}}", "0.5"))
            results.append(math_verify_reward("\\boxed{2}", "0.5"))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert not errors
    assert results == [1.0, 0.0]
    assert signal.getsignal(signal.SIGALRM) is before


def test_fbox_counts_as_a_box():
    from rlpp.reward.builtin import exact_match, last_boxed

    assert last_boxed(r"so the answer is \fbox{12}.") == "12"
    assert exact_match(r"\fbox{12}", "12") == 1.0


@pytest.mark.parametrize("completion, answer, expected", [
    ("47 + 8 = 55.", "55", 1.0),  # a chat model's sentence: its last number
    ("The answer is \\boxed{55}.", "55", 1.0),
    ("\\boxed{54}, though some say 55", "55", 0.0),  # a boxed answer wins over a later number
    ("So 3 - 10 = -7", "-7", 1.0),
    ("That makes 1,234 apples.", "1234", 1.0),
    ("2.50", "2.5", 1.0),
    ("55 or maybe 56", "55", 0.0),
    ("I cannot say.", "5", 0.0),
])
def test_final_number_reads_the_last_number_or_the_boxed_one(completion, answer, expected):
    from rlpp.reward.builtin import final_number

    assert final_number(completion, answer) == expected


def test_final_number_refuses_a_reference_that_is_not_a_number():
    from rlpp.reward.builtin import final_number

    with pytest.raises(ValueError, match="not a number"):
        final_number("5", "five")
