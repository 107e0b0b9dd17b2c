"""load_problems: synthetic and file sources, held-out splits, and errors that name the file and the row."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from rlpp.config.schema import DataConfig, SyntheticConfig
from rlpp.data import DataError, load_problems


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"question": f"What is {i} + 1?", "solution": i + 1, "id": i} for i in range(start, start + n)]


def number(prompt: str) -> int:
    """i, from a prompt made by ``rows`` (templated or not)."""
    return int(re.search(r"What is (\d+) \+ 1\?", prompt).group(1))


def write_jsonl(path: Path, records: list, raw_lines: dict[int, str] | None = None) -> Path:
    """One JSON object per line; ``raw_lines`` puts text as-is at those 1-based line numbers."""
    lines = [json.dumps(r) for r in records]
    for number, text in sorted((raw_lines or {}).items()):
        lines.insert(number - 1, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def dataset_cfg(path: Path | str, **kw) -> DataConfig:
    kw.setdefault("prompt_key", "question")
    kw.setdefault("answer_key", "solution")
    kw.setdefault("eval_size", 20)
    return DataConfig(source="dataset", path=str(path), **kw)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """`datasets` caches parquet reads under tmp_path, not the home folder."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


# ---------------------------------------------------------------- sources


def test_synthetic_source_with_template_and_caps():
    cfg = DataConfig(synthetic=SyntheticConfig(num_train=300, num_dev=30, num_eval=60, seed=7),
                     template="Q: {prompt}", eval_size=50, max_problems=100)
    train, dev, held_out = load_problems(cfg)
    assert (len(train), len(dev), len(held_out)) == (100, 30, 50)
    assert all(p.startswith("Q: ") and p.endswith("=") for p in train.prompts)
    assert train.levels is not None and len(train.levels) == 100
    again = load_problems(cfg)
    assert again[0].prompts == train.prompts and again[2].prompts == held_out.prompts


def test_jsonl_custom_keys_template_and_split_off(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", rows(100))
    train, dev, held_out = load_problems(dataset_cfg(path, template="Solve: {prompt}\nAnswer:"))
    # eval 20, dev max(1, 10% of 80) = 8, train the remaining 72
    assert (len(train), len(dev), len(held_out)) == (72, 8, 20)
    assert train.prompts[0].startswith("Solve: What is ") and train.prompts[0].endswith("\nAnswer:")
    assert train.levels is None and train.source == str(path)
    numbers = [[number(p) for p in s.prompts] for s in (train, dev, held_out)]
    assert sorted(sum(numbers, [])) == list(range(100))  # disjoint, nothing lost
    assert all(ns == sorted(ns) for ns in numbers)  # file order kept
    for s in (train, dev, held_out):
        for p, a in zip(s.prompts, s.answers):
            assert a == str(number(p) + 1)  # numeric answers become text
    again = load_problems(dataset_cfg(path, template="Solve: {prompt}\nAnswer:"))
    assert again[2].prompts == held_out.prompts and again[1].prompts == dev.prompts


def test_json_array_eval_path_and_max_problems(tmp_path):
    train_file = tmp_path / "train.json"
    train_file.write_text(json.dumps(rows(50)))
    eval_file = write_jsonl(tmp_path / "test.jsonl", rows(30, start=1000))
    train, dev, held_out = load_problems(dataset_cfg(train_file, eval_path=str(eval_file), max_problems=10))
    assert len(held_out) == 20 and all(number(p) >= 1000 for p in held_out.prompts)  # eval_size caps
    assert held_out.source == str(eval_file)
    assert len(dev) == 5 and len(train) == 10  # dev: 10% of 50; train: first 10 of the remaining 45
    assert not set(dev.prompts) & set(train.prompts)
    kept = [number(p) for p in train.prompts]
    assert kept == sorted(kept)


def test_json_file_holding_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "lines.json", rows(40))
    train, dev, held_out = load_problems(dataset_cfg(path, eval_size=10))
    assert len(train) + len(dev) + len(held_out) == 40


def test_parquet(tmp_path, hf_cache):
    path = write_parquet(tmp_path / "train.parquet", [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(60)])
    train, dev, held_out = load_problems(DataConfig(source="dataset", path=str(path), eval_size=10))
    assert (len(train), len(dev), len(held_out)) == (45, 5, 10)
    assert all(a == "a" + p[1:] for s in (train, dev, held_out) for p, a in zip(s.prompts, s.answers))


def test_too_few_problems_to_split(tmp_path):
    path = write_jsonl(tmp_path / "small.jsonl", rows(15))
    with pytest.raises(DataError, match=r"small\.jsonl.*15 problems.*data\.eval_size=20"):
        load_problems(dataset_cfg(path))


def test_template_with_another_field_is_named(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", rows(50))
    with pytest.raises(DataError, match=r"data\.template.*'question'"):
        load_problems(dataset_cfg(path, template="{prompt} {question}"))
    with pytest.raises(DataError, match=r"data\.template.*\{\{"):
        load_problems(dataset_cfg(path, template="\\boxed{} {prompt}"))


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize("records, raw, line, expect", [
    (rows(5), {3: '{"question": "x", "solution": '}, 3, "invalid JSON"),
    (rows(5), {4: "[1, 2]"}, 4, "expected a JSON object, got an array"),
    (rows(2) + [{"question": "q"}] + rows(2), {}, 3, r"missing answer field 'solution'.*keys: 'question'"),
    (rows(3) + [{"prompt": "q", "solution": 1}], {}, 4, r"missing prompt field 'question'.*keys: 'prompt', 'solution'"),
    (rows(1) + [{"question": None, "solution": 1}], {}, 2, "prompt field 'question' is null"),
    (rows(4) + [{"question": "q", "solution": "  "}], {}, 5, "answer field 'solution' is empty"),
    (rows(1) + [{"question": "q", "solution": [1, 2]}], {}, 2, "is an array; expected text or a number"),
    (rows(1) + [{"question": "q", "solution": True}], {}, 2, "is a boolean"),
    (rows(1) + [{"question": 17, "solution": "1"}], {}, 2, r"is a number \(17\); expected text"),
    (rows(1) + [{"question": "q", "solution": {"x": 1}}], {}, 2, "is an object"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, records, raw, line, expect):
    path = write_jsonl(tmp_path / "bad.jsonl", records, raw)
    with pytest.raises(DataError, match=expect) as err:
        load_problems(dataset_cfg(path, eval_size=1))
    message = str(err.value)
    assert str(path) in message and f"line {line}:" in message


def test_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('\n{"question": "a", "solution": 1}\n\n{"question": "b"}\n')
    with pytest.raises(DataError, match="line 4: missing answer"):
        load_problems(dataset_cfg(path, eval_size=1))


def test_every_row_is_checked_and_the_first_few_listed(tmp_path):
    records = rows(30)
    for i in (2, 5, 9, 14, 20, 25, 29):
        records[i] = {"question": "q"}
    path = write_jsonl(tmp_path / "many.jsonl", records)
    with pytest.raises(DataError) as err:
        load_problems(dataset_cfg(path, eval_size=1))
    message = str(err.value)
    assert "7 of 30 rows are malformed" in message and "and 2 more" in message
    assert all(f"line {i + 1}:" in message for i in (2, 5, 9, 14, 20))
    assert "line 26:" not in message


def test_json_file_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"question": "a", "solution": 1},\n {"question": "b" "solution": 2}\n]')
    with pytest.raises(DataError, match=r"broken\.json: invalid JSON at line 3"):
        load_problems(dataset_cfg(broken, eval_size=1))
    shaped = tmp_path / "object.json"
    shaped.write_text(json.dumps({"data": rows(3)}))
    with pytest.raises(DataError, match=r"object\.json: expected a JSON array"):
        load_problems(dataset_cfg(shaped, eval_size=1))
    row = tmp_path / "row.json"
    row.write_text(json.dumps(rows(3) + [{"question": "", "solution": 1}]))
    with pytest.raises(DataError, match=r"row\.json: 1 of 4 rows .*\n  row 4: prompt field 'question' is empty"):
        load_problems(dataset_cfg(row, eval_size=1))


def test_parquet_errors(tmp_path, hf_cache):
    nulls = write_parquet(tmp_path / "nulls.parquet",
                          [{"prompt": "p", "answer": "a"}] * 6 + [{"prompt": "p", "answer": None}])
    with pytest.raises(DataError, match=r"(?s)nulls\.parquet: 1 of 7 rows .*row 7: answer field 'answer' is null"):
        load_problems(DataConfig(source="dataset", path=str(nulls), eval_size=1))
    columns = write_parquet(tmp_path / "columns.parquet", [{"problem": "p", "answer": "a"}] * 3)
    with pytest.raises(DataError, match=r"columns\.parquet: row 1.*missing prompt field 'prompt'.*'problem', 'answer'"):
        load_problems(DataConfig(source="dataset", path=str(columns), eval_size=1))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    with pytest.raises(DataError, match=r"garbage\.parquet: could not read as parquet"):
        load_problems(DataConfig(source="dataset", path=str(garbage), eval_size=1))


def test_empty_missing_and_unsupported_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no rows"):
        load_problems(dataset_cfg(empty))
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match=r"empty\.json: no rows"):
        load_problems(dataset_cfg(tmp_path / "empty.json"))
    with pytest.raises(DataError, match=r"nowhere\.jsonl: no such file \(data\.path\)"):
        load_problems(dataset_cfg(tmp_path / "nowhere.jsonl"))
    good = write_jsonl(tmp_path / "train.jsonl", rows(50))
    with pytest.raises(DataError, match=r"gone\.parquet: no such file \(data\.eval_path\)"):
        load_problems(dataset_cfg(good, eval_path=str(tmp_path / "gone.parquet")))
    csv = tmp_path / "train.csv"
    csv.write_text("question,solution\na,1\n")
    with pytest.raises(DataError, match=r"train\.csv: unsupported file type '\.csv'.*\.jsonl, \.json, \.parquet"):
        load_problems(dataset_cfg(csv))


def test_hub_name_that_cannot_be_loaded_is_named(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # `datasets` reads the variables when first imported; set its flags too in case it already was
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"hub dataset 'rlpp-test/no-such-dataset' \(split 'train'\).*data\.path") as err:
        load_problems(DataConfig(source="dataset", path="rlpp-test/no-such-dataset"))
    assert time.monotonic() - start < 5
    assert err.value.__cause__ is not None


def test_math_style_parquet_answers_from_the_last_boxed(tmp_path, hf_cache):
    """MATH-lighteval's schema (problem, level, type, solution) with no answer column: the reference
    answer is the last \\boxed{} of the solution, nested braces kept; a row without one is named."""
    from rlpp.data.loader import load_problems

    records = [{"problem": f"What is {i}/2?", "level": "Level 1", "type": "Algebra",
                "solution": f"First \\boxed{{0}} is wrong. So it is $\\boxed{{\\frac{{{i}}}{{2}}}}$."} for i in range(40)]
    path = write_parquet(tmp_path / "math.parquet", records)
    train, dev, held_out = load_problems(dataset_cfg(path, prompt_key="problem", answer_key="solution",
                                                     answer_from="boxed", eval_size=5))
    assert set(train.answers) <= {f"\\frac{{{i}}}{{2}}" for i in range(40)} and len(train) + len(dev) + len(held_out) == 40
    bad = write_parquet(tmp_path / "bad.parquet", records[:3] + [{**records[3], "solution": "no box here"}])
    with pytest.raises(DataError, match=r"bad.parquet: 1 of 4 rows are malformed:\n  row 4: answer field 'solution' "
                                        r"has no complete \\boxed\{...\} \(data.answer_from=boxed\)"):
        load_problems(dataset_cfg(bad, prompt_key="problem", answer_key="solution", answer_from="boxed", eval_size=1))
    # Without answer_from the missing column is named, as before.
    with pytest.raises(DataError, match="missing answer field 'answer'"):
        load_problems(dataset_cfg(path, prompt_key="problem", answer_key="answer", eval_size=5))


def test_the_gpu_config_reads_math_columns():
    from rlpp.config.loader import load_config

    cfg = load_config("configs/qwen2.5-math-1.5b.yaml", [])
    assert (cfg.data.prompt_key, cfg.data.answer_key, cfg.data.answer_from) == ("problem", "solution", "boxed")


def test_group_key_labels_each_problem(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": f"q{i}", "solution": "1", **({"subject": ["A", "B"][i % 2]}
                                                                                     if i < 38 else {})} for i in range(40)])
    train, dev, held_out = load_problems(dataset_cfg(path, group_key="subject", eval_size=10))
    assert set(train.groups) | set(held_out.groups) == {"A", "B", "(none)"}
    assert len(held_out.groups) == len(held_out)
    plain, _, _ = load_problems(dataset_cfg(path, eval_size=10))
    assert plain.groups is None
