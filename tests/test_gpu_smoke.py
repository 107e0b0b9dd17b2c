"""benchmarks/gpu_smoke.py on a machine that has only what it says it needs: torch, transformers, omegaconf
and DeepSpeed, each with its own required dependencies. Every other package (Ray, vLLM, datasets, and
the optional ones torch and transformers would pick up) is made unimportable in the script's processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_smoke.py"

BARE = '''
import os, pkgutil, sys

ALLOWED = set(os.environ["GPU_SMOKE_ALLOWED"].split(","))
# A None entry makes `import x` raise ModuleNotFoundError and importlib.util.find_spec("x") answer None,
# as on a machine without x: what every optional import (transformers', DeepSpeed's) checks.
for module in pkgutil.iter_modules():
    name = module.name
    if name not in ALLOWED and name not in sys.stdlib_module_names and not name.startswith("_sysconfigdata"):
        sys.modules.setdefault(name, None)
'''


def distributions_of(roots: list[str]) -> set[str]:
    """The installed distributions ``roots`` need, transitively (required dependencies, no extras)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = set(), list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # a platform's dependency (CUDA wheels) not installed here
            continue
        seen.add(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def modules_of(distributions: set[str]) -> set[str]:
    from importlib import metadata

    from packaging.utils import canonicalize_name

    return {top for top, dists in metadata.packages_distributions().items()
            if any(canonicalize_name(d) in distributions for d in dists)}


def run_smoke(tmp_path, allowed: set[str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """The script in a fresh interpreter where only ``allowed`` (plus the standard library and rlpp)
    imports, in every process it starts (sitecustomize)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BARE)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "GPU_SMOKE_ALLOWED": ",".join(sorted(allowed | {"rlpp"})),
           "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)


def test_help_needs_nothing_and_a_missing_package_is_named_with_its_install_line(tmp_path):
    help_ = run_smoke(tmp_path, set(), "--help", timeout=120)
    assert help_.returncode == 0 and "--install" in help_.stdout, help_.stderr
    # torch and transformers only: what the lent GPU machine has.
    bare = modules_of(distributions_of(["torch", "transformers"]))
    assert not {"omegaconf", "deepspeed"} & bare
    got = run_smoke(tmp_path, bare, "--device", "cpu", "--out", str(tmp_path / "s.json"), timeout=300)
    assert got.returncode == 2, got.stdout + got.stderr
    assert ("the stages need what is missing here:\n  omegaconf: not installed\n  deepspeed: not installed\n"
            "install from the package index with:\n"
            "  pip install 'omegaconf>=2.3' && DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed==0.19.8\n"
            "or run: python benchmarks/gpu_smoke.py --install") in got.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ok"] is False and set(summary["missing"]) == {"omegaconf", "deepspeed"}


def test_install_runs_pip_for_what_is_missing_from_the_index_or_a_wheel_folder(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, check, env: calls.append((command, env)))
    smoke.install(["torch", "omegaconf", "deepspeed"], None)  # torch is the machine's: never installed here
    smoke.install(["deepspeed"], "/wheels")
    pip = [sys.executable, "-m", "pip", "install"]
    assert [c for c, _ in calls] == [
        [*pip, "omegaconf>=2.3"],
        [*pip, "--no-build-isolation", "deepspeed==0.19.8"],
        [*pip, "--no-index", "--find-links", "/wheels", "--no-build-isolation", "deepspeed==0.19.8"]]
    assert calls[1][1]["DS_BUILD_OPS"] == calls[2][1]["DS_BUILD_OPS"] == "0"  # no compiled DeepSpeed op


@pytest.mark.slow
def test_cpu_mode_runs_with_only_the_packages_it_names(tmp_path):
    """Model, learner (DeepSpeed over gloo), the IPC stage's CPU stand-in and the HF engine, with nothing
    importable beyond torch, transformers, omegaconf, DeepSpeed and their required dependencies."""
    allowed = modules_of(distributions_of(["torch", "transformers", "omegaconf", "deepspeed"]))
    assert not {"ray", "vllm", "datasets"} & allowed
    got = run_smoke(tmp_path, allowed, "--device", "cpu", "--steps", "2", "--out", str(tmp_path / "s.json"))
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    assert "gpu_smoke: OK (model ok, learner ok, ipc skipped: needs CUDA, engine ok)" in got.stdout
    assert "[learner] offload round trip: skipped on CPU (offload_states is a no-op without CUDA)" in got.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ok"] and summary["stages"]["ipc"]["match"]
