"""``rlpp report`` from fake run folders (no training): the table's numbers, the budget check, the
findings, the CSVs and every figure."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from ablate_helpers import png_size, spec_text, write_run

from rlpp.ablate.report import write_report
from rlpp.ablate.spec import SPEC_FILE, load_spec, resolve_configs
from rlpp.cli import main

UNIFORM = {0: [0.30, 0.34, 0.42, 0.40], 1: [0.30, 0.36, 0.40, 0.42]}  # final mean 0.41; reached at 60 and 80
PRIORITIZED = {0: [0.30, 0.45, 0.45, 0.46], 1: [0.30, 0.41, 0.44, 0.44]}  # reached at 23.47 and 32


def make_ablation(tmp_path, arms, budget=96):
    """Spec + ablation.yaml for ``arms`` (name -> sampler); returns (spec, runs: (arm, seed) -> overrides)."""
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(tmp_path / "out", arms, budget=budget))
    spec = load_spec(path)
    Path(spec.output_dir).mkdir(parents=True)
    (Path(spec.output_dir) / SPEC_FILE).write_text(spec.to_yaml())
    return spec, {k: v[1] for k, v in resolve_configs(spec).items()}


def read_csv(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {row["arm"] + ("" if "seed" not in row else f"/{row['seed']}"): row for row in csv.DictReader(f)}


def test_report_numbers_findings_csvs_and_figures(tmp_path):
    spec, runs = make_ablation(tmp_path, {"prioritized": "prioritized", "uniform": "uniform",
                                          "dapo_filter": "dapo_filter", "per": "per"})
    for s in (0, 1):
        write_run(spec.run_dir("uniform", s), runs["uniform", s], UNIFORM[s], zero_var=0.5, abs_adv=0.4, seconds=10)
        write_run(spec.run_dir("prioritized", s), runs["prioritized", s], PRIORITIZED[s], zero_var=0.25, abs_adv=0.6)
        # dapo_filter: 32 rollouts a step, 16 of them (every kept group has signal) reach the batch
        write_run(spec.run_dir("dapo_filter", s), runs["dapo_filter", s], [0.3, 0.35, 0.38, 0.4], eval_every=1,
                  generated=[32, 32, 32], zero_var=0.0, abs_adv=0.8)
    failed = spec.run_dir("per", 0)
    failed.mkdir(parents=True)
    (failed / "run.log").write_text("Traceback: boom\n")

    report = write_report(spec.output_dir).read_text()
    out = Path(spec.output_dir)

    arms = read_csv(out / "summary.csv")
    assert float(arms["uniform"]["final_accuracy"]) == pytest.approx(0.41)
    assert float(arms["uniform"]["gain"]) == pytest.approx(0.11)  # (0.40 - 0.30 + 0.42 - 0.30) / 2, seed by seed
    assert float(arms["prioritized"]["gain"]) == pytest.approx(0.15)
    assert float(arms["uniform"]["rollouts_to_target"]) == pytest.approx(70.0)
    assert float(arms["prioritized"]["rollouts_to_target"]) == pytest.approx((32 * 0.11 / 0.15 + 32) / 2)
    assert float(arms["prioritized"]["rollouts_to_target_ratio"]) == pytest.approx((32 * 0.11 / 0.15 + 32) / 2 / 70)
    assert float(arms["prioritized"]["zero_var_ratio"]) == pytest.approx(0.5)
    assert float(arms["prioritized"]["mean_abs_adv_ratio"]) == pytest.approx(1.5)
    # dapo_filter pays for the groups it discarded: half of what it generated carried no signal
    assert float(arms["dapo_filter"]["zero_var_frac"]) == pytest.approx(0.5)
    assert float(arms["dapo_filter"]["mean_abs_adv"]) == pytest.approx(0.4)

    # Paired by seed: uniform seed 0 ends at 0.40 (first reached at 56 rollouts), seed 1 at 0.42 (at 96);
    # prioritized seed 0 reaches 0.40 at 21.33, seed 1 reaches 0.42 at 42.67.
    pair = read_csv(out / "paired.csv")
    r0, r1 = (32 * 0.10 / 0.15) / 56, (32 + 32 / 3) / 96
    assert [float(x) for x in pair["prioritized"]["per_seed_ratios"].split()] == pytest.approx([r0, r1], abs=1e-4)
    assert float(pair["prioritized"]["ratio_to_ref_final"]) == pytest.approx((r0 * r1) ** 0.5)
    assert float(pair["prioritized"]["final_acc_diff"]) == pytest.approx(((0.46 - 0.40) + (0.44 - 0.42)) / 2)
    # dapo_filter seed 1 never reaches uniform seed 1's 0.42: censored, no upper end
    assert pair["dapo_filter"]["censored_seeds"] == "1" and pair["dapo_filter"]["ratio_ci95_hi"] == "inf"
    assert "Paired by seed" in report and "≥ 1.71×" in report
    assert arms["dapo_filter"]["seeds_reached_target"] == "0"
    assert arms["per"]["seeds_finished"] == "0" and arms["per"]["seeds_total"] == "2"
    assert float(arms["uniform"]["forgotten"]) == 1 and float(arms["uniform"]["seconds"]) == 10

    per_run = read_csv(out / "runs.csv")
    assert len(per_run) == 8
    assert per_run["per/0"]["status"] == "failed" and per_run["per/0"]["log"].endswith("run.log")
    assert per_run["per/1"]["status"] == "missing"
    assert per_run["uniform/0"]["rollouts"] == "96" and per_run["uniform/0"]["budget_ok"] == "True"
    assert float(per_run["uniform/1"]["rollouts_to_target"]) == pytest.approx(80.0)
    assert per_run["dapo_filter/0"]["rollouts_to_target"] == ""  # not reached

    assert "Budget check: equal." in report and "96–96 used" in report
    assert "Reference arm: **uniform**" in report
    assert "not reached (0/2)" in report
    from rlpp.ablate.stats import mean_ci

    m, h = mean_ci([float(per_run[f"prioritized/{s}"]["rollouts_to_target"]) / 70 for s in (0, 1)])
    assert h > 0  # the two seeds differ, so the ratio's CI has width
    assert ("**prioritized**: reached 41.0% after 28 rollouts (2/2 seeds) vs 70 for uniform (2/2): 0.40×, "
            f"95% CI {m - h:.2f}×–{m + h:.2f}× over its seeds with uniform's mean held fixed (target met)") in report
    assert "zero-variance share 0.250 vs 0.500: 0.50× (target not met)" in report
    assert "mean |advantage| 0.600 vs 0.400: 1.50× (target met)" in report
    assert "**dapo_filter**: did not reach 41.0% in any of its 2 seeds" in report
    assert "**per**: no finished runs." in report
    assert "| per | 0 | failed |" in report and "`per/seed_0/run.log`" in report and "(not run)" in report

    names = {p.name for p in (out / "plots").glob("*.png")}
    assert names == {"accuracy.png", "zero_variance.png", "mean_abs_adv.png", "pools.png",
                     "heatmap_prioritized.png", "heatmap_uniform.png", "heatmap_dapo_filter.png"}
    for name in names:
        assert f"(plots/{name})" in report
        assert png_size(out / "plots" / name) == (800, 500)
        assert (out / "plots" / name).stat().st_size > 5000


def test_budget_violation_and_first_arm_reference(tmp_path):
    spec, runs = make_ablation(tmp_path, {"prioritized": "prioritized", "per": "per"}, budget=96)
    for s in (0, 1):
        write_run(spec.run_dir("prioritized", s), runs["prioritized", s], PRIORITIZED[s])
    write_run(spec.run_dir("per", 0), runs["per", 0], [0.3, 0.35, 0.4, 0.45, 0.5])  # 8 steps: 128 rollouts
    write_run(spec.run_dir("per", 1), runs["per", 1], [0.3, 0.35])  # 2 steps: 32 rollouts, short of the budget
    report = write_report(spec.output_dir).read_text()
    assert "Reference arm: **prioritized** (no `uniform` arm, so the first arm is the reference)" in report
    assert "Budget check: VIOLATED" in report
    assert "per/seed_0 used 128 rollouts (budget 96" in report and "per/seed_1 used 32 rollouts" in report
    assert "prioritized/seed_0 used" not in report


def test_report_cli_regenerates(tmp_path, capsys):
    spec, runs = make_ablation(tmp_path, {"uniform": "uniform"})
    write_run(spec.run_dir("uniform", 0), runs["uniform", 0], UNIFORM[0])
    out = Path(spec.output_dir)
    assert main(["report", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    (out / "report.md").unlink()
    (out / "plots" / "accuracy.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "plots" / "accuracy.png").is_file()
    assert "| uniform | 1/2 |" in (out / "report.md").read_text()  # seed 1 never ran


def test_rollouts_to_target_not_assessed_when_the_reference_did_not_improve(tmp_path):
    spec, runs = make_ablation(tmp_path, {"uniform": "uniform", "prioritized": "prioritized"})
    for s in (0, 1):
        write_run(spec.run_dir("uniform", s), runs["uniform", s], [0.30, 0.28, 0.27, 0.26])
        write_run(spec.run_dir("prioritized", s), runs["prioritized", s], [0.30, 0.35, 0.36, 0.37])
    report = write_report(spec.output_dir).read_text()
    assert "held-out accuracy 30.0% before training, 26.0 ± 0.0% at the end" in report
    assert "rollouts to 26.0% not assessed: uniform ended at or below its initial accuracy (30.0%)" in report
    assert "target met" not in report.split("**prioritized**")[1].split(";")[0]


def test_report_prints_d_the_diagnostics_and_a_second_reference_per_arm(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform", "mopps": "mopps", "uniform_b2": "uniform"},
                              budget=96, extra="references: {mopps: uniform_b2}\n"))
    spec = load_spec(path)
    Path(spec.output_dir).mkdir(parents=True)
    (Path(spec.output_dir) / SPEC_FILE).write_text(spec.to_yaml())
    runs = {k: v[1] for k, v in resolve_configs(spec).items()}
    for s in (0, 1):
        diag = {"num_problems": 60, "group_size": 4, "final_pass@1": 0.4 + 0.1 * s, "final_pass@4": 0.7,
                "diagnostics": {"prediction_spearman": 0.5 + 0.1 * s, "zero_variance_auroc": 0.7, "coverage": 0.9,
                                "coverage_half_d": 0.5, "longest_gap": 10 + s, "forgetting_rate": 0.2}}
        write_run(spec.run_dir("uniform", s), runs["uniform", s], UNIFORM[s], summary_extra=diag)
        write_run(spec.run_dir("uniform_b2", s), runs["uniform_b2", s], [0.30, 0.32, 0.33, 0.35], summary_extra=diag)
        write_run(spec.run_dir("mopps", s), runs["mopps", s], PRIORITIZED[s], summary_extra=diag, skipped=4)
    report = write_report(spec.output_dir).read_text()
    out = Path(spec.output_dir)
    # D = 96 rollouts over (G = 4) x (60 problems)
    assert "D = budget / (G × pool) = 96 / (4 × 60) = 0.4" in report
    assert "## Diagnostics" in report and "| mopps | 0.55 ± 0.64 |" in report
    diag = read_csv(out / "diagnostics.csv")
    assert float(diag["mopps"]["prediction_spearman"]) == pytest.approx(0.55)
    assert float(diag["mopps"]["skipped_share"]) == pytest.approx(0.5)  # 4 skipped per 4 served each step
    assert float(diag["uniform"]["pass@1"]) == pytest.approx(0.45)
    assert float(diag["uniform"]["draws_per_problem"]) == pytest.approx(0.4)
    matched = read_csv(out / "matched.csv")
    assert matched["mopps"]["reference"] == "uniform_b2"
    assert float(matched["mopps"]["final_acc_diff"]) == pytest.approx((0.46 - 0.35 + 0.44 - 0.35) / 2)
    assert "### Against a second reference" in report


def test_a_reference_that_is_not_an_arm_is_refused(tmp_path):
    from rlpp.ablate.spec import SpecError

    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform"}, extra="references: {uniform: nope}\n"))
    with pytest.raises(SpecError, match="references.uniform: 'nope' is not an arm"):
        load_spec(path)
