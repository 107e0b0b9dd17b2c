"""Training progress on stderr: a bar on a terminal, a plain line every few seconds anywhere else.

A bar redraws itself with carriage returns, which a Ray job's log view, ``kubectl logs`` or a file keep
as one endless line; there the same facts go out as one line every ``interval_s`` seconds (and at the
first and last step): step, held-out accuracy, pass rate, rollouts per second and the time left.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, total: int, start: int = 0, enabled: bool = True, *, stream: TextIO | None = None,
                 interval_s: float = 10.0, desc: str = "rlpp train"):
        self.total, self.start, self.desc, self.interval_s = total, start, desc, interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.mode = "off" if not enabled else ("bar" if _is_terminal(self.stream) else "lines")
        self._t0 = time.monotonic()
        self._last_line = float("-inf")
        self._rollouts0: int | None = None
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True, file=self.stream)

    def update(self, step: int, *, accuracy: float, pass_rate: float, rollouts: int) -> None:
        """Step ``step`` is done; ``accuracy`` is the latest held-out accuracy, ``rollouts`` the total so far."""
        if self.mode == "bar":
            self._bar.update(1)
            self._bar.set_postfix(acc=f"{accuracy:.3f}", pass_rate=f"{pass_rate:.2f}")
            return
        if self.mode == "off":
            return
        now = time.monotonic()
        if self._rollouts0 is None:
            self._rollouts0 = 0 if self.start == 0 else rollouts  # rate over this process's own steps
        if now - self._last_line < self.interval_s and step not in (self.start + 1, self.total):
            return
        self._last_line = now
        elapsed = now - self._t0
        done = step - self.start
        rate = (rollouts - self._rollouts0) / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total - step) if done else 0.0
        print(f"{self.desc}: step {step}/{self.total} | held-out acc {accuracy:.3f} | pass rate {pass_rate:.2f} | "
              f"{rate:.1f} rollouts/s | ETA {_duration(eta)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
