"""Experiment trackers (``log.wandb``, ``log.mlflow``), offline: what ``MetricsSink`` sends them is read
back from the files they wrote (W&B's offline transaction log, MLflow's local file store)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from rlpp.config.loader import load_config
from rlpp.config.schema import ConfigError
from rlpp.metrics import MetricsSink, TrackerError, check_trackers, mlflow_params, read_metrics

wandb = pytest.importorskip("wandb")
pytest.importorskip("mlflow")

TRACKERS_ON = ["log.wandb.enabled=true", "log.wandb.mode=offline", "log.wandb.project=rlpp-test",
               "log.wandb.tags=[tiny,test]", "log.mlflow.enabled=true", "log.mlflow.experiment=rlpp-test"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, no API key, nothing written outside tmp_path; stores default to the run folder."""
    for var in ("WANDB_DIR", "WANDB_MODE", "WANDB_API_KEY", "WANDB_RUN_GROUP", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    # The sink sets MLFLOW_ALLOW_FILE_STORE itself; recording the variable first has monkeypatch remove
    # it again afterwards.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")


# ---------------------------------------------------------------------------------- reading back
def wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file: W&B's transaction log is a LevelDB-style log (7-byte
    header ':W&B', 0xBEE1, version 0; 32 KiB blocks of CRC-checked chunks). wandb no longer ships a
    Python reader for it, so the format is read here and each record parsed with wandb's own proto."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B transaction log (version 0)"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos: pos + 7])
        if kind == 0 and length == 0:  # zero padding up to the block's end
            pos += left
            continue
        chunk = data[pos + 7: pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad checksum at byte {pos}"
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def read_wandb_run(folder: Path) -> dict:
    """The one offline W&B run under ``folder/wandb``: its run record, config, history rows and exit."""
    runs = list((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    out = {"config": {}, "history": [], "exit_code": None}
    for r in wandb_records(runs[0]):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            out["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def read_mlflow_run(store: Path, experiment: str):
    """(run, {metric: [(step, value), ...]}) of the one run of ``experiment`` in a local file store."""
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # as the sink sets it (the `offline` fixture undoes it)
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {store}"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, runs
    run = runs[0]
    history = {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
               for k in run.data.metrics}
    return run, history


# ---------------------------------------------------------------------------------- the sink
LOGGED = [  # (step, metrics) as the trainer logs them: evaluation at 0, then step metrics + evaluation
    (0, {"eval/accuracy": 0.25, "rollouts": 0}),
    (1, {"rollout/pass_rate": 0.5, "buffer/heap": 190, "train/loss": float("nan"), "note": "a string", "rollouts": 64}),
    (2, {"rollout/pass_rate": 0.625, "buffer/heap": 180, "train/loss": 0.125, "rollouts": 128}),
    (2, {"eval/accuracy": 0.375, "rollouts": 128}),
]


def test_sink_sends_the_same_metrics_and_the_config_to_both_trackers(tmp_path, offline):
    run_dir = tmp_path / "run"
    cfg = load_config(None, [*TRACKERS_ON, f"trainer.output_dir={run_dir}", "trainer.steps=2"])
    with MetricsSink(run_dir, tensorboard=False, wandb=cfg.log.wandb, mlflow=cfg.log.mlflow, params=cfg) as sink:
        for step, metrics in LOGGED:
            sink.log(step, metrics)
    assert len(read_metrics(run_dir / "metrics.jsonl")) == len(LOGGED)
    expected = {  # finite numbers only: the NaN loss of step 1 and the string are not sent
        "eval/accuracy": [(0, 0.25), (2, 0.375)],
        "rollout/pass_rate": [(1, 0.5), (2, 0.625)],
        "buffer/heap": [(1, 190.0), (2, 180.0)],
        "train/loss": [(2, 0.125)],
        "rollouts": [(0, 0.0), (1, 64.0), (2, 128.0), (2, 128.0)],
    }

    run, history = read_mlflow_run(run_dir / "mlruns", "rlpp-test")  # the default store: RUN_DIR/mlruns
    assert run.info.status == "FINISHED" and run.info.run_name == str(run_dir)
    assert history == expected
    params = run.data.params
    assert params["trainer.steps"] == "2" and params["buffer.sampler"] == cfg.buffer.sampler
    assert params["trainer.output_dir"] == str(run_dir) and params["log.wandb.tags"] == '["tiny", "test"]'
    assert params["learner.lr"] == json.dumps(cfg.learner.lr) and params["log.mlflow.enabled"] == "true"
    assert len(params) == len(mlflow_params(dataclasses.asdict(cfg))) > 100  # > one batch

    wb = read_wandb_run(run_dir)  # the default dir: the run folder
    assert wb["run"].project == "rlpp-test" and wb["run"].display_name == str(run_dir)
    assert list(wb["run"].tags) == ["tiny", "test"]
    assert wb["config"]["trainer"]["steps"] == 2 and wb["config"]["buffer"]["sampler"] == cfg.buffer.sampler
    assert wb["config"]["log"]["wandb"]["mode"] == "offline"
    rows = {row["_step"]: {k: v for k, v in row.items() if not k.startswith("_")} for row in wb["history"]}
    assert rows == {0: {"eval/accuracy": 0.25, "rollouts": 0.0},
                    1: {"rollout/pass_rate": 0.5, "buffer/heap": 190.0, "rollouts": 64.0},
                    2: {"rollout/pass_rate": 0.625, "buffer/heap": 180.0, "train/loss": 0.125, "rollouts": 128.0,
                        "eval/accuracy": 0.375}}  # two calls at one step make one row
    assert wb["exit_code"] == 0


def test_an_error_marks_the_tracker_runs_failed(tmp_path, offline):
    cfg = load_config(None, [*TRACKERS_ON, f"log.mlflow.tracking_uri={tmp_path / 'store'}", f"log.wandb.dir={tmp_path / 'wb'}",
                             "log.mlflow.run_name=crashed", "log.wandb.name=crashed"])
    with pytest.raises(KeyError):
        with MetricsSink(tmp_path / "run", tensorboard=False, wandb=cfg.log.wandb, mlflow=cfg.log.mlflow, params=cfg) as sink:
            sink.log(1, {"rollout/pass_rate": 0.5, "odd:name//x": 1.0})
            raise KeyError("boom")
    run, history = read_mlflow_run(tmp_path / "store", "rlpp-test")  # a plain folder is a file store
    assert run.info.status == "FAILED" and run.info.run_name == "crashed"
    assert history == {"rollout/pass_rate": [(1, 0.5)], "odd:name/x": [(1, 1.0)]}  # '//' is refused by MLflow
    wb = read_wandb_run(tmp_path / "wb")
    assert wb["run"].display_name == "crashed" and wb["exit_code"] == 1
    assert [row["odd:name//x"] for row in wb["history"]] == [1.0]  # W&B takes any name
    assert not (tmp_path / "run" / "mlruns").exists() and not (tmp_path / "run" / "wandb").exists()


@pytest.mark.parametrize("module, key, dist", [("wandb", "log.wandb", "wandb"), ("mlflow", "log.mlflow", "mlflow-skinny")])
def test_a_missing_package_fails_at_once_naming_the_key_and_the_install(tmp_path, monkeypatch, module, key, dist):
    monkeypatch.setitem(sys.modules, module, None)  # import of it now fails as if it were not installed
    cfg = load_config(None, [f"{key}.enabled=true"])
    message = rf"^{key}\.enabled=true needs the {module} package, which is not installed: pip install 'rlpp\[trackers\]' \(or pip install {dist}\)$"
    with pytest.raises(TrackerError, match=message):
        check_trackers(cfg.log)
    with pytest.raises(TrackerError, match=message):
        MetricsSink(tmp_path / "run", wandb=cfg.log.wandb, mlflow=cfg.log.mlflow, params=cfg)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    check_trackers(load_config(None, []).log)  # trackers off by default: nothing imported, nothing needed


def test_online_wandb_without_a_login_is_one_clear_error(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: never reaches the network
    cfg = load_config(None, ["log.wandb.enabled=true", "log.wandb.mode=online"])
    with pytest.raises(TrackerError, match=r"^log\.wandb: W&B could not start the run \(online mode needs a W&B login"):
        MetricsSink(tmp_path / "run", wandb=cfg.log.wandb, params=cfg)


def test_mlflow_params_are_dotted_json_and_cut_to_the_limit():
    params = mlflow_params({"a": {"b": True, "c": [1, 2], "d": {}}, "s": "x" * 10, "n": None, "f": 3e-05}, max_len=4)
    assert params == {"a.b": "true", "a.c": "[1, ", "a.d": "{}", "s": "xxxx", "n": "null", "f": "3e-0"}


@pytest.mark.parametrize("override, message", [
    ("log.wandb.mode=off", "log.wandb.mode must be one of ['online', 'offline', 'disabled']"),
    ("log.wandb.tags=['" + "t" * 65 + "']", "log.wandb.tags must be strings of 1 to 64 characters"),
    ("log.wandb.project=", None), ("log.mlflow.experiment=", None),
])
def test_tracker_keys_are_validated(override, message):
    if message is None:  # an empty name is refused only where the tracker is on
        load_config(None, [override])
        group = override.split(".")[1]
        with pytest.raises(ConfigError, match=rf"log\.{group}\.\w+ must name"):
            load_config(None, [override, f"log.{group}.enabled=true"])
    else:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [override])


@pytest.mark.slow
def test_rlpp_train_with_both_trackers(tmp_path, small_run, offline):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlpp.cli", "train", "configs/tiny.yaml", *small_run, *TRACKERS_ON,
           f"trainer.output_dir={out}", "trainer.steps=4", "trainer.eval_every=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_metrics(out / "metrics.jsonl")
    per_key: dict[str, list] = {}
    for r in records:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                per_key.setdefault(k, []).append((r["step"], float(v)))
    assert {s for s, _ in per_key["eval/accuracy"]} == {0, 2, 4} and len(per_key["rollout/pass_rate"]) == 4

    run, history = read_mlflow_run(out / "mlruns", "rlpp-test")
    assert run.info.status == "FINISHED" and run.data.params["trainer.steps"] == "4"
    assert history == {k: sorted(v) for k, v in per_key.items()}  # every finite number of the JSONL, same names

    wb = read_wandb_run(out)
    assert wb["exit_code"] == 0 and wb["config"]["trainer"]["steps"] == 4
    got = sorted((row["_step"], k, v) for row in wb["history"] for k, v in row.items() if not k.startswith("_"))
    last = {}  # W&B keeps one value per key and step (a key logged twice at one step: the later one)
    for k, values in per_key.items():
        for s, v in values:
            last[s, k] = v
    assert got == sorted((s, k, v) for (s, k), v in last.items())

    from rlpp.plot import FIGURES, plot_run  # the same real run feeds the run's figures

    assert [p.name for p in plot_run(out)] == list(FIGURES)
