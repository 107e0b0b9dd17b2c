"""``rlpp ablate``: every (arm, seed) of a spec as its own ``rlpp train`` subprocess (its own Ray
instance), ``parallel`` at a time, then the report.

A run whose ``summary.json`` exists is finished and skipped on a later call, provided its saved config
is the one this spec asks for. A failed run is logged with its log file and the others go on; the exit
code is then non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rlpp.ablate.spec import SPEC_FILE, AblationSpec, SpecError, load_spec, resolve_configs

log = logging.getLogger(__name__)
RUN_LOG = "run.log"
RUN_INFO = "run.json"


@dataclass
class Job:
    arm: str
    seed: int
    folder: Path
    command: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    gpus: list[str] | None = None  # CUDA_VISIBLE_DEVICES of the run, when runs share one machine's GPUs

    @property
    def name(self) -> str:
        return f"{self.arm}/seed_{self.seed}"


def main_ablate(spec_path: str, overrides: list[str]) -> int:
    """The ``rlpp ablate`` command: 0 when every run finished, 1 when some failed, 2 for a bad spec."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)  # a cancelled job stops its runs as Ctrl-C does
    try:
        return run_ablation(load_spec(spec_path, overrides))
    except SpecError as e:
        print(f"rlpp: ablation error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlpp: ablation interrupted; finished runs are kept: run the same command again to go on",
              file=sys.stderr)
        return 130


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_ablation(spec: AblationSpec) -> int:
    """Run every missing (arm, seed), write the report; 0 when every run finished, else 1."""
    runs = resolve_configs(spec)  # every arm's training config validated before anything runs
    out = Path(spec.output_dir)
    pending: list[Job] = []
    for (arm, seed), (cfg, overrides) in runs.items():
        folder = spec.run_dir(arm, seed)
        if (folder / "summary.json").is_file():
            _check_same_config(folder, cfg)
            log.info("skip %s/seed_%d: finished (%s exists)", arm, seed, folder / "summary.json")
            continue
        pending.append(Job(arm, seed, folder, train_command(spec.base, overrides)))
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(spec.to_yaml())
    log.info("ablation %s: %d arms, %d runs, budget %d rollouts per run; %d to run, %d finished",
             out, len(spec.arms), len(runs), spec.budget_rollouts, len(pending), len(runs) - len(pending))
    slots = gpu_slots([cfg for cfg, _ in runs.values()], spec.parallel)
    failed = _run_all(pending, spec.parallel, slots)
    from rlpp.ablate.report import write_report

    report = write_report(out)
    log.info("report: %s", report)
    for job in failed:
        log.error("FAILED %s: see %s", job.name, job.folder / RUN_LOG)
    return 1 if failed else 0


def gpus_needed(cfg, machine_has_gpus: bool) -> int:
    """Whole GPUs one run's actors take on a machine with or without GPUs (colocated rollout actors share
    the learner's)."""
    import math

    lc, rc = cfg.learner, cfg.rollout
    learner = lc.num_actors * lc.gpus_per_actor
    rollout = 0 if rc.colocate else rc.num_actors * rc.actor_gpus(machine_has_gpus)
    return math.ceil(learner + rollout - 1e-9)


def visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them (all of them when it is unset)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA: no GPUs to share out
        return []


def gpu_slots(configs, parallel: int, gpus: list[str] | None = None) -> list[list[str]] | None:
    """Disjoint GPU sets for runs that start their own local Ray (no RAY_ADDRESS), one per concurrent
    run, so that ``parallel`` runs never place actors on the same GPUs; None when nothing needs them
    (CPU runs, one run at a time, or runs inside a Ray job, where Ray itself shares the cluster out).
    Raises ``SpecError`` when the machine cannot hold ``parallel`` runs at once."""
    if parallel == 1 or os.environ.get("RAY_ADDRESS") or any(c.ray.address for c in configs):
        return None
    gpus = visible_gpus() if gpus is None else gpus
    need = max((gpus_needed(c, bool(gpus)) for c in configs), default=0)
    if need == 0:
        return None
    if need * parallel > len(gpus):
        raise SpecError(f"parallel={parallel} runs of {need} GPU(s) each need {need * parallel} GPUs; this machine "
                        f"has {len(gpus)} ({','.join(gpus) or 'none'}). Lower parallel, or run the ablation "
                        "inside a Ray job (launch/submit.sh) so the runs share a cluster")
    return [gpus[k * need:(k + 1) * need] for k in range(parallel)]


def train_command(base: str, overrides: list[str]) -> list[str]:
    """The command line of one run (a fresh interpreter: its own Ray instance, its own failures)."""
    return [sys.executable, "-m", "rlpp.cli", "train", base, *overrides]


def _check_same_config(folder: Path, cfg) -> None:
    from rlpp.config.loader import load_config
    from rlpp.config.schema import ConfigError

    try:
        same = _where_free(load_config(folder / "config.yaml")) == _where_free(cfg)
    except ConfigError:
        same = False
    if not same:
        raise SpecError(f"{folder} finished with a different training config than this spec asks for; "
                        "delete that folder or choose another output_dir")


def _where_free(cfg):
    """The config without its output folder: a finished run copied into this ablation (e.g. the chosen
    run of a learning-rate sweep) is the same run."""
    from dataclasses import replace

    return replace(cfg, trainer=replace(cfg.trainer, output_dir="."))


def _run_all(jobs: list[Job], parallel: int, slots: list[list[str]] | None = None) -> list[Job]:
    queue, running, failed, total = list(jobs), [], [], len(jobs)
    free = list(slots) if slots else []
    try:
        while queue or running:
            while queue and len(running) < parallel:
                job = queue.pop(0)
                job.gpus = free.pop(0) if slots else None
                _start(job, done=total - len(queue) - 1, total=total)
                running.append(job)
            time.sleep(0.2)
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                if job.gpus is not None:
                    free.append(job.gpus)
                if not _finish(job):
                    failed.append(job)
    finally:
        for job in running:  # interrupted: stop the runs this call started, letting them shut Ray down
            job.proc.send_signal(signal.SIGINT)
        for job in running:
            try:
                job.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                job.proc.kill()
    return failed


def _start(job: Job, done: int, total: int) -> None:
    if job.folder.exists():  # left by an unfinished run: metrics would be appended to
        log.info("removing the unfinished run in %s", job.folder)
        shutil.rmtree(job.folder)
    job.folder.mkdir(parents=True)
    with open(job.folder / RUN_LOG, "w") as f:
        f.write("$ " + " ".join(job.command) + "\n")
        f.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if job.gpus is not None:  # its private Ray sees only these GPUs
            env["CUDA_VISIBLE_DEVICES"] = ",".join(job.gpus)
        job.proc = subprocess.Popen(job.command, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env,
                                    start_new_session=True, preexec_fn=_default_sigint)
    job.started = time.time()
    log.info("[%d/%d] start %s (log: %s)%s", done + 1, total, job.name, job.folder / RUN_LOG,
             f" on GPUs {','.join(job.gpus)}" if job.gpus else "")


def _default_sigint() -> None:
    """In the run's process before it starts: its own session, so a Ctrl-C reaches it once, from
    ``_run_all``; and SIGINT handled even where it was ignored (a job started in the background), so
    the run can shut its Ray instance down."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(job: Job) -> bool:
    seconds = time.time() - job.started
    code = job.proc.returncode
    ok = code == 0 and (job.folder / "summary.json").is_file()
    (job.folder / RUN_INFO).write_text(json.dumps({"command": job.command, "returncode": code,
                                                   "seconds": round(seconds, 1), "started": job.started}, indent=1))
    if ok:
        s = json.loads((job.folder / "summary.json").read_text())
        log.info("done %s in %.0f s: held-out accuracy %.3f -> %.3f, %d rollouts", job.name, seconds,
                 s["initial_accuracy"], s["final_accuracy"], s["rollouts"])
    else:
        log.error("FAILED %s (exit code %s) after %.0f s; log: %s", job.name, code, seconds, job.folder / RUN_LOG)
    return ok
