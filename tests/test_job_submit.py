"""The launcher for real: ``ray start --head`` on loopback, the tiny config submitted with
``launch/submit.sh`` (``ray job submit``), the job waited for, its logged metrics read back.

Only this cluster's processes are stopped at the end (``ray stop`` would also take down any other Ray
instance on the machine, such as the test session's own)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from net_helpers import listening, off_loopback

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _stop_cluster(temp_dir: str) -> None:
    """Stop every process whose command line names this cluster's temp dir, and their children."""
    procs = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in (p.info["cmdline"] or [])):
                # with their children: Ray's agents retitle themselves and no longer name the dir
                for q in [p, *p.children(recursive=True)]:
                    procs[q.pid] = q
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    procs = list(procs.values())
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        p.kill()


def _sockets_while_training(temp_dir: str, out: Path, proc: subprocess.Popen) -> list:
    deadline = time.monotonic() + 900
    while not ((out / "metrics.jsonl").is_file() and "rollout/pass_rate" in (out / "metrics.jsonl").read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            return []  # the assertions on the job's result say why
        time.sleep(0.5)
    pids = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in (p.info["cmdline"] or [])):
                pids |= {p.pid, *(c.pid for c in p.children(recursive=True))}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return listening(pids)


@pytest.mark.slow
def test_submit_sh_runs_the_tiny_config_as_a_ray_job_on_a_ray_start_head(small_run, tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dash, agent_http, agent_grpc, metrics, rt_env, client = _free_ports(7)
    # The job's entrypoint runs `python` from the head's PATH: this venv's, as an image's would be.
    # Token auth on, with a token of this cluster's own: on a fresh machine ~/.ray/auth_token need not exist.
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray's single-machine mode, the only way its servers stay on
    # loopback (rlpp.distributed.local); --node-ip-address=127.0.0.1 alone is resolved to the machine's address.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    head = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rt_env}",
            f"--ray-client-server-port={client}", "--num-cpus=3", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    out = tmp_path / "job_run"
    try:
        started = subprocess.run(head, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        proc = subprocess.Popen(
            ["bash", str(ROOT / "launch" / "submit.sh"), "--address", f"http://127.0.0.1:{dash}",
             "configs/tiny.yaml", *small_run, "trainer.steps=6", "trainer.eval_every=3",
             "rollout.torch_threads=1", "learner.torch_threads=1", f"trainer.output_dir={out}"],
            env={**env, "RAY_BIN": str(BIN / "ray")}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        # Mid-job, the cluster's processes (GCS, raylet, agents, the job's driver and actors) listen on loopback only.
        sockets = _sockets_while_training(temp_dir, out, proc)
        stdout, stderr = proc.communicate(timeout=1200)
        assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
        assert "succeeded" in (stdout + stderr).lower()
        assert len(sockets) >= 5 and off_loopback(sockets) == []
        # The job joined this cluster (it did not start a private one) and logged every step.
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        steps = sorted({r["step"] for r in records if "rollout/pass_rate" in r})
        assert steps == list(range(1, 7))
        evals = [r for r in records if "eval/accuracy" in r]
        assert [r["step"] for r in evals] == [0, 3, 6] and all(0 <= r["eval/accuracy"] <= 1 for r in evals)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["steps"] == 6 and summary["rollouts"] == 6 * 8 * 8
        logs = list(Path(temp_dir).glob("session_*/logs/job-driver-*.log"))
        assert logs and any("Connecting to existing Ray cluster" in p.read_text() for p in logs)
    finally:
        _stop_cluster(temp_dir)
        time.sleep(1)
        shutil.rmtree(temp_dir, ignore_errors=True)
