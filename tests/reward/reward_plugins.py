"""Rewards loaded by ``module:function`` in the tests (importable as ``reward_plugins``: pytest puts this
folder on sys.path, and the scorer's worker processes get the same sys.path)."""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

NOT_CALLABLE = 3


def half(completion: str, answer: str) -> float:
    return 0.5


def scripted(completion: str, answer: str) -> object:
    """Behaves as the completion says:

    * ``hang`` (sleeps 30 s), ``loop`` (a CPU-bound loop that never ends), ``sleep:<seconds>`` (then 1.0);
    * ``alloc``: asks for 10x the process's address-space limit at once (raises if there is none);
    * ``segv``: reads address 0 (a real segfault); ``exit``: ``os._exit(3)``;
    * ``raise``; ``nan``, ``inf``, ``text``, ``none``: returns a bad value;
    * ``pid``: the process id; ``limit``: the address-space limit in MiB (-1: none);
    * ``orphan``: starts a child process that sleeps 60 s, writes its pid to the file named by
      ``answer``, then hangs;
    * ``hold_inbox``: starts a process in a session of its own (out of reach of the scorer's kill) that
      holds the worker's command pipe open and sleeps 60 s, writes its pid to the file named by
      ``answer``, returns 1.0 -- as the worker's exiting threads do for a moment after it is killed;
    * anything else: 1.0 iff it equals the answer.
    """
    if completion == "hold_inbox":
        inbox = int(sys.argv[1])  # the worker runs as ``python -c BOOTSTRAP <inbox fd> <outbox fd>``
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(inbox,),
                                 start_new_session=True)
        with open(answer, "w") as f:
            f.write(str(child.pid))
        return 1.0
    if completion == "hang":
        time.sleep(30)
    if completion == "loop":
        while True:
            pass
    if completion.startswith("sleep:"):
        time.sleep(float(completion[len("sleep:"):]))
        return 1.0
    if completion == "alloc":
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            raise RuntimeError("no address-space limit: not allocating")
        return float(len(bytearray(10 * limit)))
    if completion == "segv":
        ctypes.string_at(0)
    if completion == "exit":
        os._exit(3)
    if completion == "raise":
        raise RuntimeError("scripted failure")
    if completion == "pid":
        return float(os.getpid())
    if completion == "limit":
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        return -1.0 if limit == resource.RLIM_INFINITY else limit / 2**20
    if completion == "orphan":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(answer, "w") as f:
            f.write(str(child.pid))
        time.sleep(30)
    special = {"nan": float("nan"), "inf": float("inf"), "text": "1.0", "none": None}
    if completion in special:
        return special[completion]
    return float(completion == answer)
