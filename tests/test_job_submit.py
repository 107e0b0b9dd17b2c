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


@pytest.mark.slow
def test_submit_sh_runs_the_tiny_config_as_a_ray_job_on_a_ray_start_head(small_run, tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dash, agent_http, agent_grpc, metrics, rt_env, client = _free_ports(7)
    # The job's entrypoint runs `python` from the head's PATH: this venv's, as an image's would be.
    # Token auth on, with a token of this cluster's own: on a fresh machine ~/.ray/auth_token need not exist.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
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
        submit = subprocess.run(
            ["bash", str(ROOT / "launch" / "submit.sh"), "--address", f"http://127.0.0.1:{dash}",
             "configs/tiny.yaml", *small_run, "trainer.steps=6", "trainer.eval_every=3",
             "rollout.torch_threads=1", "learner.torch_threads=1", f"trainer.output_dir={out}"],
            env={**env, "RAY_BIN": str(BIN / "ray")}, capture_output=True, text=True, timeout=1200, cwd=ROOT)
        assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-4000:]
        assert "succeeded" in (submit.stdout + submit.stderr).lower()
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
