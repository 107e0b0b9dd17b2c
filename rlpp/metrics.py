"""One metrics sink (JSONL always; TensorBoard when installed; W&B and MLflow when enabled) and named
phase timers."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlparse

if TYPE_CHECKING:
    from rlpp.config.schema import LogConfig, MlflowConfig, WandbConfig

log = logging.getLogger(__name__)

TRACKERS_PIP = "pip install 'rlpp[trackers]'"
"""What installs the experiment trackers' packages (wandb, mlflow-skinny)."""


class TrackerError(RuntimeError):
    """An experiment tracker (``log.wandb``, ``log.mlflow``) cannot start: its package is missing or
    broken, or it refused the run (no W&B login in online mode, an MLflow store it cannot reach). The
    message is one line and starts with the config key."""


def process_age() -> float:
    """Seconds since this process started, as the kernel recorded its start (so interpreter start-up and
    imports count too). On Linux from ``/proc/self/stat`` against the boot clock (psutil's create time
    adds the boot time, which ``/proc/stat`` rounds to whole seconds)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, AttributeError, ValueError, IndexError):
        import psutil  # a dependency of deepspeed and accelerate

        return time.time() - psutil.Process().create_time()


class StartupClock:
    """The run's start-up, from process start to its first step: ``mark(name)`` closes a phase at the
    current process age; ``metrics()`` reads ``startup/<name>_s`` per phase and ``startup/total_s``."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {"process": process_age()}  # interpreter, imports, config
        self.last = self.phases["process"]

    def mark(self, name: str) -> None:
        now = process_age()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now

    def add(self, phases: dict[str, float]) -> None:
        """Sub-phases measured elsewhere (inside ``build_parts``), already counted by an enclosing mark."""
        self.phases.update(phases)

    def metrics(self) -> dict[str, float]:
        out = {f"startup/{k}_s": v for k, v in self.phases.items()}
        out["startup/total_s"] = self.last
        return out

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items() if "." not in k)
        return f"start-up: {self.last:.1f} s from process start to the first step ({parts})"


class PhaseTimer:
    """Accumulates wall time per named phase: ``with timer("generate"): ...``; ``metrics()`` reads them."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.started = time.perf_counter()

    def seconds(self, name: str) -> float:
        """Time spent in phase ``name`` so far (0 if never entered)."""
        return self.totals.get(name, 0.0)

    def total(self) -> float:
        """Wall time since the timer was made (phases may nest, so not their sum)."""
        return time.perf_counter() - self.started

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        return {f"time/{k}": v for k, v in self.totals.items()}


class MetricsSink:
    """Appends one JSON object per ``log`` call to ``metrics.jsonl`` and mirrors its finite numbers, under
    the same names and at the same step, to TensorBoard and to the enabled experiment trackers.

    ``wandb`` / ``mlflow``: the ``log.wandb`` / ``log.mlflow`` groups (``None`` or ``enabled=false``:
    off). ``params``: the run's resolved config (a ``Config`` or a nested dict), logged as the W&B run's
    config and as MLflow params with dotted keys. A tracker that cannot start raises ``TrackerError``
    before anything is opened; ``check_trackers`` runs the package part of that check alone.

    Every construction starts new tracker runs: a resumed training run (``trainer.resume``) continues
    ``metrics.jsonl`` but opens a new W&B / MLflow run, and ``truncate_after`` cannot take back what a
    tracker already received."""

    def __init__(self, folder: str | Path, tensorboard: bool = True, *, wandb: WandbConfig | None = None,
                 mlflow: MlflowConfig | None = None, params: Any = None):
        self.folder = Path(folder)
        wandb = wandb if wandb is not None and wandb.enabled else None
        mlflow = mlflow if mlflow is not None and mlflow.enabled else None
        _import_tracker_packages(wandb is not None, mlflow is not None)  # fail before anything is opened
        self.folder.mkdir(parents=True, exist_ok=True)
        config = _as_dict(params)
        self._trackers: list[_Tracker] = []
        try:
            if wandb is not None:
                self._trackers.append(_WandbTracker(wandb, self.folder, config))
            if mlflow is not None:
                self._trackers.append(_MlflowTracker(mlflow, self.folder, config))
        except BaseException:
            for t in self._trackers:
                t.close(failed=True)
            raise
        self._file = open(self.folder / "metrics.jsonl", "a", buffering=1)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.folder / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed; metrics go to metrics.jsonl only")

    def log(self, step: int, metrics: dict) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._trackers and scalars:
            scalars = {k: float(v) for k, v in scalars.items()}
            for t in self._trackers:
                t.log(step, scalars)

    def truncate_after(self, step: int) -> None:
        """Drop JSONL records logged after ``step`` (a resumed run logs those steps again)."""
        self._file.close()
        path = self.folder / "metrics.jsonl"
        kept = [r for r in read_metrics(path) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(path, "a", buffering=1)

    def close(self, failed: bool | None = None) -> None:
        """Close the files and finish the tracker runs, as failed when ``failed`` (default: when an
        exception is being handled, e.g. ``close`` called from a ``finally`` the error passes through)."""
        if failed is None:
            failed = sys.exc_info()[0] is not None
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        trackers, self._trackers = self._trackers, []
        for t in trackers:
            t.close(failed)

    def __enter__(self) -> "MetricsSink":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close(failed=exc_type is not None)


def check_trackers(cfg: LogConfig) -> None:
    """Import the packages of the trackers ``cfg`` (the ``log`` group) enables: ``TrackerError`` naming
    the key and the pip command when one is missing or broken. Cheap (no run is started); call it before
    slow set-up so a missing package fails the run at once."""
    _import_tracker_packages(cfg.wandb.enabled, cfg.mlflow.enabled)


def _import_tracker_packages(wandb: bool, mlflow: bool) -> None:
    if wandb:
        _import("wandb", "log.wandb", "wandb")
    if mlflow:
        _import("mlflow", "log.mlflow", "mlflow-skinny")


def _import(module: str, key: str, dist: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise TrackerError(f"{key}.enabled=true needs the {module} package, which is not installed: "
                               f"{TRACKERS_PIP} (or pip install {dist})") from None
        raise TrackerError(f"{key}.enabled=true: importing {module} failed: {_one_line(e)}") from e
    except Exception as e:  # a broken install (e.g. an incompatible protobuf)
        raise TrackerError(f"{key}.enabled=true: importing {module} failed: {_one_line(e)}") from e


class _Tracker:
    name = ""
    _failures = 0

    def log(self, step: int, scalars: dict[str, float]) -> None:
        try:
            self._log(step, scalars)
        except Exception as e:  # a tracker hiccup must not stop training; metrics.jsonl has everything
            self._failures += 1
            if self._failures <= 3:
                log.warning("%s: logging step %d failed%s: %s", self.name, step,
                            " (further failures are counted, not shown)" if self._failures == 3 else "", _one_line(e))

    def close(self, failed: bool) -> None:
        try:
            self._close(failed)
        except Exception as e:
            log.warning("%s: finishing the run failed: %s", self.name, _one_line(e))
        if self._failures:
            log.warning("%s: %d log calls failed; metrics.jsonl holds every step", self.name, self._failures)

    def _log(self, step: int, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def _close(self, failed: bool) -> None:
        raise NotImplementedError


class _WandbTracker(_Tracker):
    """A W&B run; ``run.log(scalars, step=step)``: calls at one step (training, then evaluation) merge
    into one history row."""

    name = "log.wandb"

    def __init__(self, cfg: WandbConfig, folder: Path, config: dict):
        import wandb

        where = Path(cfg.dir or os.environ.get("WANDB_DIR") or folder)
        where.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=cfg.project, entity=cfg.entity or None, name=cfg.name or str(folder),
                                  tags=list(cfg.tags), mode=cfg.mode, dir=str(where), config=config)
        except Exception as e:
            hint = " (online mode needs a W&B login: `wandb login` or WANDB_API_KEY; or set log.wandb.mode=offline)" \
                if cfg.mode == "online" else ""
            raise TrackerError(f"log.wandb: W&B could not start the run{hint}: {_one_line(e)}") from e

    def _log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def _close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class _MlflowTracker(_Tracker):
    """An MLflow run through ``MlflowClient`` (no global active run): params once, then one
    ``log_batch`` per ``log`` call."""

    name = "log.mlflow"

    def __init__(self, cfg: MlflowConfig, folder: Path, config: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or (folder / "mlruns").resolve().as_uri()
        if urlparse(self.uri).scheme in ("", "file"):
            # MLflow 3 refuses its file store unless this documented opt-out is set; this key asked for one.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._names: dict[str, str] = {}
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            experiment_id = self._experiment(cfg.experiment)
            run = self.client.create_run(experiment_id, run_name=cfg.run_name or str(folder),
                                         tags={"rlpp.output_dir": str(folder)})
            self.run_id = run.info.run_id
            limit, per_batch = _mlflow_limits()
            params = [Param(self._name(k), v) for k, v in mlflow_params(config, limit).items()]
            for i in range(0, len(params), per_batch):
                self.client.log_batch(self.run_id, params=params[i: i + per_batch])
        except Exception as e:
            raise TrackerError(f"log.mlflow: MLflow could not start the run at {self.uri}: {_one_line(e)}") from e

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # created meanwhile by a concurrent run (ablation arms in parallel)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _name(self, key: str) -> str:
        """``key`` as MLflow accepts it: characters it refuses become ``_`` (rlpp's own names pass as they are)."""
        name = self._names.get(key)
        if name is None:
            name = re.sub(r"[^/\w.\- ]", "_", key) if os.name == "nt" else re.sub(r"[^/\w.\- :]", "_", key)
            name = "/".join(p for p in name.split("/") if p not in ("", ".", "..")) or "_"
            if name != key:
                log.warning("log.mlflow: metric %r is logged as %r (characters MLflow refuses)", key, name)
            self._names[key] = name
        return name

    def _log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(self._name(k), v, now, step) for k, v in scalars.items()]
        per_batch = 1000
        for i in range(0, len(metrics), per_batch):
            self.client.log_batch(self.run_id, metrics=metrics[i: i + per_batch])

    def _close(self, failed: bool) -> None:
        status = "FINISHED"
        if failed:
            status = "KILLED" if isinstance(sys.exc_info()[1], KeyboardInterrupt) else "FAILED"
        self.client.set_terminated(self.run_id, status=status)


def mlflow_params(config: dict, max_len: int = 6000) -> dict[str, str]:
    """A nested config as MLflow params: dotted keys; strings as they are, other values as JSON (``true``,
    ``3e-05``, ``["a", "b"]``, as config.yaml spells them), cut to ``max_len`` characters."""
    out: dict[str, str] = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                text = v if isinstance(v, str) else json.dumps(v, default=str)
                out[f"{prefix}{k}"] = text[:max_len]

    walk(config, "")
    return out


def _mlflow_limits() -> tuple[int, int]:
    """(longest param value, params per ``log_batch``) of the installed MLflow."""
    try:
        from mlflow.utils import validation as v

        return int(getattr(v, "MAX_PARAM_VAL_LENGTH", 500)), int(getattr(v, "MAX_PARAMS_TAGS_PER_BATCH", 100))
    except ImportError:
        return 500, 100


def _as_dict(params: Any) -> dict:
    if params is None:
        return {}
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    return dict(params)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text if len(text) <= 500 else text[:497] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _plain(v):
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible rather than dropping the key
    return v


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (for tests, reports and the ablation tooling)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
