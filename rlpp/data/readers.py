"""Reading (prompt, answer) pairs from a local file or a Hugging Face hub dataset, with errors that say where.

Every row is checked before anything is returned; a ``DataError`` names the file (or hub dataset) and
lists the first few bad rows by number (the 1-based line for JSON Lines, the 1-based row otherwise),
with how many more there were. No row is skipped, except blank lines of a JSON Lines file.

JSON and JSON Lines are parsed here with the standard library (``datasets``' own JSON loader reports a
bad line without its number); parquet files and hub datasets go through ``datasets.load_dataset``,
imported only then.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from pathlib import Path
from typing import Any, Iterator

from rlpp.reward.builtin import last_boxed

__all__ = ["DataError", "FILE_FORMATS", "is_local_path", "read_pairs"]

logger = logging.getLogger(__name__)

FILE_FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
"""Supported local file extensions and their readers."""
# A path ending in one of these (or any FILE_FORMATS one) is taken for a file, never a hub name.
_OTHER_FILE_SUFFIXES = {".csv", ".tsv", ".txt", ".arrow", ".gz", ".bz2", ".xz", ".zst", ".zip", ".tar",
                        ".ndjson", ".pq", ".xlsx", ".pkl", ".pickle", ".npy", ".feather"}
_SHOWN = 5  # bad rows listed in one error message

# One row as read: (row number, the row's fields) or (row number, why it could not be read).
Row = tuple[int, "dict[str, Any] | str"]


class DataError(ValueError):
    """Problems that cannot be read as intended; the message names the file or dataset, and the rows."""


def is_local_path(path: str) -> bool:
    """Whether ``path`` names a local file or folder rather than a hub dataset like ``owner/name``."""
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    return (p.exists() or suffix in FILE_FORMATS or suffix in _OTHER_FILE_SUFFIXES
            or path.startswith(("/", "./", "../", "~", "\\")))


def read_pairs(path: str, split: str, prompt_key: str, answer_key: str, *, config_key: str = "data.path",
               answer_from: str = "field", group_key: str = "") -> tuple[list[str], list[str], str, list[str] | None]:
    """(prompts, answers, source, groups) from a local ``.jsonl``/``.json``/``.parquet`` file or a hub dataset.

    ``split`` selects the hub split and is ignored for a single local file. Numbers are accepted as
    answers and turned into text with ``str()``; prompts must be text. ``config_key`` is the setting
    that named ``path``, for messages. ``answer_from="boxed"`` takes the answer out of the last
    ``\\boxed{}`` of the answer field (``data.answer_from``); a row without one is malformed.
    ``group_key`` (``data.group_key``) reads one more field as each problem's group label, as text
    (``(none)`` where a row lacks it); groups is None without it.
    """
    if is_local_path(path):
        file = Path(path).expanduser()
        if file.is_dir():
            source = f"local dataset folder {str(file)!r} (split {split!r})"
            rows, row_word = _hub_rows(str(file), split, source, config_key, prompt_key, answer_key, group_key), "row"
        else:
            source = str(file)
            rows, row_word = _file_rows(file, config_key, prompt_key, answer_key, group_key)
    else:
        source = f"hub dataset {path!r} (split {split!r})"
        rows, row_word = _hub_rows(path, split, source, config_key, prompt_key, answer_key, group_key), "row"
    groups: list[str] | None = [] if group_key else None
    prompts, answers = _check_rows(rows, source, row_word, prompt_key, answer_key, answer_from, group_key, groups)
    logger.info("read %d problems from %s", len(prompts), source)
    return prompts, answers, source, groups


def _file_rows(file: Path, config_key: str, prompt_key: str, answer_key: str,
               group_key: str = "") -> tuple[Iterator[Row], str]:
    fmt = FILE_FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise DataError(f"{file}: unsupported file type {file.suffix!r} ({config_key}); "
                        f"use one of {', '.join(FILE_FORMATS)}")
    if not file.is_file():
        raise DataError(f"{file}: no such file ({config_key})")
    if fmt == "jsonl":
        return _jsonl_rows(file.read_bytes()), "line"
    if fmt == "json":
        return _json_rows(file)
    return _parquet_rows(file, prompt_key, answer_key, group_key), "row"


def _jsonl_rows(data: bytes) -> Iterator[Row]:
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            yield number, f"not UTF-8 text ({e.reason} at byte {e.start})"
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, f"invalid JSON ({e.msg} at column {e.colno})"
            continue
        yield number, record if isinstance(record, dict) else f"expected a JSON object, got {_kind(record)}"


def _json_rows(file: Path) -> tuple[Iterator[Row], str]:
    data = file.read_bytes()
    try:
        records = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON values: read it as JSON Lines, as `datasets` does
            return _jsonl_rows(data), "line"
        raise DataError(f"{file}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(records, list):
        raise DataError(f"{file}: expected a JSON array of row objects (or one object per line), "
                        f"got {_kind(records)}")
    rows = ((number, r if isinstance(r, dict) else f"expected a JSON object, got {_kind(r)}")
            for number, r in enumerate(records, start=1))
    return rows, "row"


def _parquet_rows(file: Path, prompt_key: str, answer_key: str, group_key: str = "") -> Iterator[Row]:
    import datasets

    try:
        table = datasets.load_dataset("parquet", data_files=str(file), split="train")
    except Exception as e:  # re-raised with the file named; the cause stays chained
        raise DataError(f"{file}: could not read as parquet: {type(e).__name__}: {e}") from e
    return _table_rows(table, str(file), prompt_key, answer_key, group_key)


def _hub_rows(name: str, split: str, source: str, config_key: str, prompt_key: str,
              answer_key: str, group_key: str = "") -> Iterator[Row]:
    import datasets

    try:
        table = datasets.load_dataset(name, split=split)
    except Exception as e:  # re-raised with the dataset named; the cause stays chained
        raise DataError(f"{source}: could not load it with datasets.load_dataset ({config_key}={name!r}): "
                        f"{type(e).__name__}: {e}. Offline? Point {config_key} at a local "
                        f"{'/'.join(FILE_FORMATS)} file instead") from e
    return _table_rows(table, source, prompt_key, answer_key, group_key)


def _table_rows(table: Any, source: str, prompt_key: str, answer_key: str, group_key: str = "") -> Iterator[Row]:
    """Rows of a ``datasets.Dataset``, reading only the columns needed (all rows share columns)."""
    columns = list(table.column_names)
    for key, what, setting in _fields(prompt_key, answer_key):
        if key not in columns and len(table):
            raise DataError(f"{source}: row 1 (and every other): missing {what} field {key!r} ({setting}); "
                            f"the rows have columns: {', '.join(map(repr, columns))}")
    groups = table[group_key] if group_key and group_key in columns else [None] * len(table)
    for number, (prompt, answer, group) in enumerate(zip(table[prompt_key], table[answer_key], groups), start=1):
        yield number, {prompt_key: prompt, answer_key: answer, **({group_key: group} if group is not None else {})}


def _fields(prompt_key: str, answer_key: str) -> tuple[tuple[str, str, str], ...]:
    return (prompt_key, "prompt", "data.prompt_key"), (answer_key, "answer", "data.answer_key")


def _check_rows(rows: Iterator[Row], source: str, row_word: str, prompt_key: str, answer_key: str,
                answer_from: str = "field", group_key: str = "",
                groups: list[str] | None = None) -> tuple[list[str], list[str]]:
    prompts: list[str] = []
    answers: list[str] = []
    bad: list[str] = []
    count = 0
    for number, record in rows:
        count += 1
        if isinstance(record, str):
            bad.append(f"{row_word} {number}: {record}")
            continue
        issues, texts, missing = [], [], []
        for key, what, setting in _fields(prompt_key, answer_key):
            if key not in record:
                missing.append(f"{what} field {key!r} ({setting})")
                continue
            text, why = _as_text(record[key], numbers_ok=what == "answer")
            if not why and what == "answer" and answer_from == "boxed":
                boxed = (last_boxed(text) or "").strip()
                text, why = (boxed, "") if boxed else ("", "has no complete \\boxed{...} (data.answer_from=boxed)")
            if why:
                issues.append(f"{what} field {key!r} {why}")
            texts.append(text)
        if missing:
            keys = ", ".join(repr(k) for k in record) or "none"
            issues.append(f"missing {' and '.join(missing)}; the row has keys: {keys}")
        if issues:
            bad.append(f"{row_word} {number}: " + "; ".join(issues))
        else:
            prompts.append(texts[0])
            answers.append(texts[1])
            if groups is not None:
                label = record.get(group_key)
                groups.append("(none)" if label is None or str(label).strip() == "" else str(label).strip())
    if bad:
        more = f"\n  ... and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        listed = "\n  ".join(bad[:_SHOWN])
        raise DataError(f"{source}: {len(bad)} of {count} rows are malformed:\n  {listed}{more}")
    if count == 0:
        raise DataError(f"{source}: no rows")
    return prompts, answers


def _as_text(value: Any, *, numbers_ok: bool) -> tuple[str, str]:
    """(text, "") for a usable value, else ("", why not)."""
    if value is None:
        return "", "is null"
    if isinstance(value, str):
        return (value, "") if value.strip() else ("", "is empty")
    if isinstance(value, bool):
        return "", f"is a boolean ({value}); expected {'text or a number' if numbers_ok else 'text'}"
    if isinstance(value, numbers.Number):
        if not numbers_ok:
            return "", f"is a number ({value!r}); expected text"
        if isinstance(value, numbers.Real) and not math.isfinite(value):
            return "", f"is {value!r}; expected a finite number"
        return str(value), ""
    return "", f"is {_kind(value)}; expected {'text or a number' if numbers_ok else 'text'}"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")
