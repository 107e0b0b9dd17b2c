"""The cluster launchers, without Ray or a network: YAML shape, shell syntax, and what submit.sh hands
to `ray job submit` (through a fake ray CLI that records its argv)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
SUBMIT = LAUNCH / "submit.sh"

FAKE_RAY = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_RAY_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["job", "status"]:
    print(os.environ.get("FAKE_RAY_STATUS", "SUCCEEDED").replace("ID", sys.argv[-1]))
if sys.argv[1:3] == ["job", "submit"]:
    sys.exit(int(os.environ.get("FAKE_RAY_SUBMIT_RC", "0")))
"""


@pytest.fixture
def fake_ray(tmp_path):
    script = tmp_path / "ray"
    script.write_text(FAKE_RAY)
    script.chmod(0o755)
    return script


def run_submit(*args, ray=None, cwd=REPO, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base["PYTHON"] = sys.executable
    if ray is not None:
        base["RAY_BIN"] = str(ray)
        base["FAKE_RAY_LOG"] = str(ray.parent / "calls.jsonl")
    base.update(env)
    return subprocess.run(["bash", str(SUBMIT), *args], cwd=cwd, env=base, capture_output=True, text=True, timeout=60)


def calls(ray) -> list[list[str]]:
    log = ray.parent / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# ------------------------------------------------------------------ files
def test_cluster_yaml_has_the_launcher_keys():
    cfg = yaml.safe_load((LAUNCH / "cluster.yaml").read_text())
    assert {"cluster_name", "head_node_type", "available_node_types"} <= cfg.keys()
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert {"learner_gpu", "rollout_gpu"} <= types.keys()
    assert any(re.search(r"pip install .*-e '\.\[vllm,math\]'", c) for c in cfg["setup_commands"])


def test_rayjob_yaml_is_a_rayjob_running_rlpp_train_on_a_repo_config():
    job = yaml.safe_load((LAUNCH / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    words = shlex.split(spec["entrypoint"])
    assert words[:4] == ["python", "-m", "rlpp.cli", "train"]
    assert (REPO / words[4]).is_file()
    assert spec["shutdownAfterJobFinishes"] is True
    assert "working_dir" in yaml.safe_load(spec["runtimeEnvYAML"])
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert len(groups) == 2
    for g in groups:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1


def test_rayjob_entrypoint_is_a_valid_rlpp_config():
    from rlpp.config.loader import load_config

    words = shlex.split(yaml.safe_load((LAUNCH / "rayjob.yaml").read_text())["spec"]["entrypoint"])
    cfg = load_config(str(REPO / words[4]), words[5:])
    assert cfg.trainer.output_dir.startswith("/mnt/runs/")


def test_every_yaml_in_launch_parses():
    found = sorted(LAUNCH.glob("*.yaml"))
    assert found
    for path in found:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_every_config_path_the_launchers_name_exists():
    named = set()
    for path in [*LAUNCH.iterdir(), REPO / "docs" / "cluster.md"]:
        if path.is_file():
            named |= set(re.findall(r"configs/[\w./-]+?\.yaml", path.read_text()))
    assert "configs/qwen2.5-math-1.5b.yaml" in named
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, missing


@pytest.mark.parametrize("script", ["submit.sh", "slurm.sh"])
def test_shell_scripts_parse_and_are_executable(script):
    path = LAUNCH / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "set -euo pipefail" in path.read_text()


# ------------------------------------------------------------------ submit.sh: usage
def test_help_prints_usage():
    r = run_submit("--help")
    assert r.returncode == 0
    assert "Usage: launch/submit.sh [--address URL] [--no-wait] [--submission-id ID] [--pip SPEC]... CONFIG" in r.stdout
    assert "RAY_AUTH_MODE" in r.stdout


def test_missing_config_file_is_a_usage_error_naming_it(fake_ray):
    r = run_submit("configs/no-such.yaml", ray=fake_ray)
    assert r.returncode == 2
    assert "configs/no-such.yaml" in r.stderr
    assert calls(fake_ray) == []


@pytest.mark.parametrize("args, said", [(["--frobnicate", "configs/tiny.yaml"], "--frobnicate"),
                                        ([], "missing CONFIG"),
                                        (["--address"], "--address"),
                                        (["configs/tiny.yaml", "not-a-key-value"], "not-a-key-value")])
def test_usage_errors_exit_2(fake_ray, args, said):
    r = run_submit(*args, ray=fake_ray)
    assert r.returncode == 2
    assert said in r.stderr
    assert calls(fake_ray) == []


def test_config_outside_the_uploaded_repository_is_refused(fake_ray, tmp_path):
    outside = tmp_path / "mine.yaml"
    outside.write_text("seed: 0\n")
    r = run_submit(str(outside), ray=fake_ray)
    assert r.returncode == 2
    assert "outside the repository" in r.stderr


# ------------------------------------------------------------------ submit.sh: what ray job submit gets
def test_submit_passes_the_entrypoint_and_runtime_env(fake_ray):
    r = run_submit("configs/tiny.yaml", "a=1", "b=x y", ray=fake_ray)
    assert r.returncode == 0, r.stderr
    submit, status = calls(fake_ray)
    assert submit[:2] == ["job", "submit"]
    assert option(submit, "--address") == "http://127.0.0.1:8265"
    assert "--no-wait" not in submit
    entrypoint = submit[submit.index("--") + 1:]
    assert entrypoint == ["python", "-m", "rlpp.cli", "train", "configs/tiny.yaml", "a=1", "b=x y"]
    # ray job submit joins these words with shlex.join: quoting survives to the cluster's shell
    assert shlex.join(entrypoint) == "python -m rlpp.cli train configs/tiny.yaml a=1 'b=x y'"
    env = json.loads(option(submit, "--runtime-env-json"))
    assert Path(env["working_dir"]) == REPO
    assert {"runs", ".venv", ".git", "__pycache__", "benchmarks/results"} <= set(env["excludes"])
    assert env["env_vars"] == {"PYTHONUNBUFFERED": "1"}
    assert "pip" not in env
    sid = option(submit, "--submission-id")
    assert re.fullmatch(r"rlpp-\d{8}-\d{6}-\d+", sid)
    assert status == ["job", "status", "--address", "http://127.0.0.1:8265", sid]
    assert sid in r.stdout and f"job logs -f --address http://127.0.0.1:8265 {sid}" in r.stdout


def test_submit_from_elsewhere_names_the_config_relative_to_the_repo(fake_ray, tmp_path):
    r = run_submit(str(REPO / "configs" / "qwen2.5-math-1.5b.yaml"), "trainer.output_dir=/mnt/x",
                   ray=fake_ray, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    submit = calls(fake_ray)[0]
    assert submit[submit.index("--") + 1:][4:] == ["configs/qwen2.5-math-1.5b.yaml", "trainer.output_dir=/mnt/x"]
    assert Path(json.loads(option(submit, "--runtime-env-json"))["working_dir"]) == REPO
    assert "trainer.output_dir" not in r.stderr  # no warning when an absolute run folder is given


def test_options_address_env_pip_id_and_no_wait(fake_ray):
    r = run_submit("--no-wait", "--submission-id", "run-7", "--pip", "rlpp[vllm] @ git+https://x/rlpp",
                   "--pip", "math-verify", "configs/tiny.yaml", ray=fake_ray, RAY_ADDRESS="http://head:8265")
    assert r.returncode == 0, r.stderr
    (submit,) = calls(fake_ray)  # --no-wait: no status query
    assert "--no-wait" in submit[:submit.index("--")]
    assert option(submit, "--submission-id") == "run-7"
    assert option(submit, "--address") == "http://head:8265"
    assert json.loads(option(submit, "--runtime-env-json"))["pip"] == ["rlpp[vllm] @ git+https://x/rlpp", "math-verify"]
    r = run_submit("--address", "http://other:8265", "configs/tiny.yaml", ray=fake_ray, RAY_ADDRESS="http://head:8265")
    assert option(calls(fake_ray)[1], "--address") == "http://other:8265"


# ------------------------------------------------------------------ submit.sh: exit status from the job's
@pytest.mark.parametrize("status, rc", [
    ("SUCCEEDED", 0),
    ("FAILED", 1),
    ("STOPPED", 1),
    # Ray 2.60's own wording; the id contains a status word, which must not count
    ("------------------\nJob 'ID' succeeded\n------------------", 0),
    ("Job 'ID' failed\nStatus message: the run succeeded in nothing", 1),
    ("Job 'ID' was stopped", 1),
    ("Status for job 'ID': RUNNING\nStatus message: Job is currently running.", 1),
])
def test_exit_status_follows_the_job_status(fake_ray, status, rc):
    r = run_submit("--submission-id", "x-failed-succeeded", "configs/tiny.yaml", ray=fake_ray, FAKE_RAY_STATUS=status)
    assert r.returncode == rc, r.stdout + r.stderr


def test_a_failed_submission_exits_non_zero(fake_ray):
    r = run_submit("configs/tiny.yaml", ray=fake_ray, FAKE_RAY_SUBMIT_RC="1", FAKE_RAY_STATUS="FAILED")
    assert r.returncode != 0
