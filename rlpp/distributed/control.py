"""Reaching a running job: a small named actor per run that holds requests (``rlpp scale``) until the
trainer applies them between steps.

The trainer creates ``RunControl`` under a name derived from its run folder and writes
``<run>/control.json`` (cluster address, namespace, actor name). ``rlpp scale RUN --rollout-actors N``
reads that file (or takes ``--address``), joins the cluster as a second driver and files the request;
with ``--wait`` it returns once the trainer has applied it. With token authentication (Ray's default)
the client needs the cluster's token: on the job's machine ``~/.ray/auth_token``; elsewhere set
``RAY_AUTH_MODE=token`` and the token (``RAY_AUTH_TOKEN`` or that file).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

NAMESPACE = "rlpp"
CONTROL_FILE = "control.json"


def actor_name(run_dir: str | Path) -> str:
    return "rlpp-control:" + os.path.abspath(run_dir)


class RunControl:
    """Pending requests and what the trainer last applied (plain class; made an actor at wiring time)."""

    def __init__(self, rollout_actors: int):
        self.wanted: int | None = None
        self.applied = {"rollout_actors": rollout_actors, "step": 0, "error": ""}

    def request_rollout_actors(self, n: int) -> dict:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"--rollout-actors must be an int >= 1, got {n!r}")
        self.wanted = n
        return dict(self.applied)

    def take(self) -> int | None:
        """The trainer's poll at a step boundary: the pending actor count, if any (cleared)."""
        n, self.wanted = self.wanted, None
        return n

    def report(self, rollout_actors: int, step: int, error: str = "") -> None:
        self.applied = {"rollout_actors": rollout_actors, "step": step, "error": error}

    def status(self) -> dict:
        return {**self.applied, "pending": self.wanted}


def start_control(run_dir: Path, rollout_actors: int):
    """Create the run's control actor and write ``control.json``; a stale actor of an earlier run of
    the same folder on the same cluster is replaced."""
    import ray

    name = actor_name(run_dir)
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    except ValueError:
        pass
    actor = ray.remote(RunControl).options(name=name, namespace=NAMESPACE, num_cpus=0).remote(rollout_actors)
    ray.get(actor.status.remote())
    # Ray turns token auth on for a local cluster by setting RAY_AUTH_MODE in this process; a client
    # joining by explicit address must opt in the same way, so the mode is recorded for `rlpp scale`.
    info = {"address": ray.get_runtime_context().gcs_address, "namespace": NAMESPACE, "actor": name,
            "auth_mode": os.environ.get("RAY_AUTH_MODE", ""), "pid": os.getpid()}
    (run_dir / CONTROL_FILE).write_text(json.dumps(info, indent=1))
    return actor


class ScaleError(RuntimeError):
    pass


def is_loopback(address: str) -> bool:
    """Whether a Ray address (``host:port``, ``[v6]:port``, optionally ``ray://``) names this machine's
    loopback interface."""
    import ipaddress

    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def request_scale(run: str, rollout_actors: int, address: str = "", wait_s: float = 0.0) -> dict:
    """File a scale request with the running job of ``run`` (a run folder, or with ``address`` the
    folder path the job was given); with ``wait_s`` wait until it was applied. Returns its status."""
    info_path = Path(run) / CONTROL_FILE
    name = actor_name(run)
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
            address, name = address or info["address"], info["actor"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ScaleError(f"{info_path}: not a control file written by rlpp train ({e!r}); pass --address "
                             "to reach the job without it") from None
        if info.get("auth_mode") and "RAY_AUTH_MODE" not in os.environ:
            os.environ["RAY_AUTH_MODE"] = info["auth_mode"]
    elif not address:
        raise ScaleError(f"{info_path} not found: is {run} the output_dir of a running job? On another "
                         "machine, pass --address with the cluster's address and RUN as the job's output_dir")
    if is_loopback(address):  # a private instance listens on loopback only: stay there to reach it
        from rlpp.distributed.local import keep_local_ray_on_loopback

        keep_local_ray_on_loopback()
    import ray  # only now: Ray reads RAY_AUTH_MODE once, when imported

    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
    try:
        try:
            control = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            raise ScaleError(f"no running job for {run} on {address} (actor {name!r} not found); it may have finished") from None
        ray.get(control.request_rollout_actors.remote(rollout_actors))
        deadline = time.monotonic() + wait_s
        status = ray.get(control.status.remote())
        while wait_s and (status["pending"] is not None or status["rollout_actors"] != rollout_actors):
            if status["error"] and status["pending"] is None:
                raise ScaleError(f"the job refused the request: {status['error']}")
            if time.monotonic() > deadline:
                raise ScaleError(f"not applied within {wait_s:g} s (the job applies requests between steps): {status}")
            time.sleep(0.2)
            status = ray.get(control.status.remote())
        return status
    finally:
        ray.shutdown()
