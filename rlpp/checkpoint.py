"""Checkpoint folders: layout, atomic completion, discovery for ``trainer.resume``, retention.

A checkpoint is ``<output_dir>/checkpoints/step_NNNNNN/`` holding the policy in Hugging Face format
(``save_pretrained``) with its tokenizer, DeepSpeed's optimizer/scheduler state (``deepspeed/``), the
buffer's full state (``buffer.pt``) and the trainer's counters and evaluation history
(``trainer.json``). With ``model.lora`` the policy is the merged model and ``adapter/`` holds the adapters
in peft's format (``rlpp.learner.lora``). It is written under a ``.tmp`` name and renamed when complete, so a folder with
the final name is always whole; a crash mid-write leaves only a ``.tmp`` folder, never picked up.
"""

from __future__ import annotations

import json
import os
import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = 1
STATE_FILE = "trainer.json"
_NAME = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (missing, incomplete, or of another format)."""


def root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def staging(output_dir: str | Path, step: int) -> Path:
    """An empty folder to write step ``step``'s checkpoint into; ``commit`` makes it visible."""
    tmp = root(output_dir) / f"step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, state: dict, keep_last: int) -> Path:
    """Write the trainer state last, rename into place, then delete checkpoints beyond ``keep_last``."""
    (tmp / STATE_FILE).write_text(json.dumps({"format": FORMAT, **state}))
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep_last:
        for old in complete(tmp.parent)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


MODEL_DIR = "model"
"""``RUN_DIR/model``: the run's final policy (HF weights, config and tokenizer), what ``rlpp eval RUN_DIR`` reads."""
TRAINING_ONLY = ("deepspeed", "buffer.pt", STATE_FILE)
"""What a checkpoint holds beyond the model itself (optimizer, buffer and run state): left out of ``model/``."""


def export_model(checkpoint_dir: Path, output_dir: str | Path) -> Path:
    """Publish a checkpoint's model as ``OUTPUT_DIR/model``, replacing an earlier one: its files hard-linked
    where the file system allows (no second copy of the weights), copied otherwise; written beside and
    renamed, so a reader never sees a half-written folder."""
    final = Path(output_dir) / MODEL_DIR
    tmp = final.with_name(MODEL_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in Path(checkpoint_dir).iterdir():
        if f.name in TRAINING_ONLY or not f.is_file():
            continue
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def complete(folder: Path) -> list[Path]:
    """Complete checkpoints under ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def resolve(resume: str, output_dir: str | Path) -> Path | None:
    """The checkpoint ``trainer.resume`` names: ``auto`` → latest complete one (None if none), a path →
    that checkpoint (it must be complete), empty → None."""
    if not resume:
        return None
    if resume == "auto":
        found = complete(root(output_dir))
        if not found:
            log.info("trainer.resume=auto: no complete checkpoint under %s, starting fresh", root(output_dir))
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"trainer.resume={resume!r}: not a complete checkpoint (no {STATE_FILE})")
    return path


def read_state(folder: Path) -> dict:
    """The trainer state of a checkpoint, refusing one written in another format."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / STATE_FILE}: unreadable: {e}") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: checkpoint format {state.get('format')!r}, this rlpp reads format "
                              f"{FORMAT}; resume it with the rlpp version that wrote it")
    return state
