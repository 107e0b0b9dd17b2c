"""``rlpp report RUN_DIR``: the ablation report from the run folders' logs, (re)generated at any time.

Writes ``report.md`` (summary table per arm, budget check, findings, figures, per-run table),
``summary.csv`` (one row per arm), ``runs.csv`` (one row per run) and ``plots/*.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from rlpp.ablate import plots
from rlpp.ablate.results import RunResult, load_run
from rlpp.ablate.spec import SPEC_FILE, AblationSpec, SpecError
from rlpp.ablate.stats import mean_ci, paired_ratio, rollouts_to_target

log = logging.getLogger(__name__)


@dataclass
class ArmStats:
    """One arm's numbers over its finished seeds; (mean, 95% CI half-width) pairs where noted."""

    arm: str
    runs: list[RunResult]
    total: int
    final: tuple[float, float] = (math.nan, math.nan)
    best: tuple[float, float] = (math.nan, math.nan)
    initial: float = math.nan  # mean held-out accuracy before training
    gain: tuple[float, float] = (math.nan, math.nan)  # final - initial accuracy, per seed: does the arm learn?
    to_target: list[float | None] = field(default_factory=list)
    zero_var: tuple[float, float] = (math.nan, math.nan)
    abs_adv: tuple[float, float] = (math.nan, math.nan)
    forgotten: float = math.nan
    unlocked: float = math.nan
    seconds: float = math.nan
    rollouts: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # mean, min, max
    dev: tuple[float, float] = (math.nan, math.nan)  # final dev-split accuracy (runs with trainer.eval_dev)

    @property
    def reached(self) -> int:
        return sum(r is not None for r in self.to_target)

    @property
    def to_target_mean(self) -> float:
        """Mean rollouts to the target over the seeds that reached it (NaN if none did)."""
        hits = [r for r in self.to_target if r is not None]
        return float(np.mean(hits)) if hits else math.nan


def load_ablation(out_dir: str | Path) -> tuple[AblationSpec, dict[str, list[RunResult]]]:
    """The saved spec and every (arm, seed) run of an ablation folder, finished or not."""
    out = Path(out_dir)
    if not (out / SPEC_FILE).is_file():
        raise SpecError(f"{out}: no {SPEC_FILE} here; `rlpp ablate` writes it into its output_dir")
    spec = AblationSpec(**yaml.safe_load((out / SPEC_FILE).read_text()))
    spec = dataclasses.replace(spec, output_dir=str(out))  # the folder as given now, wherever it was moved
    return spec, {arm: [load_run(spec.run_dir(arm, s), arm, s) for s in spec.seeds_of(arm)] for arm in spec.arms}


def arm_stats(arm: str, runs: list[RunResult], target: float) -> ArmStats:
    done = [r for r in runs if r.status == "finished"]
    st = ArmStats(arm, done, len(runs))
    if not done:
        return st
    st.final = mean_ci([r.summary["final_accuracy"] for r in done])
    st.best = mean_ci([r.summary["best_accuracy"] for r in done])
    st.initial = float(np.mean([r.summary["initial_accuracy"] for r in done]))
    st.gain = mean_ci([r.summary["final_accuracy"] - r.summary["initial_accuracy"] for r in done])
    st.to_target = [rollouts_to_target(r.evals["rollouts"], r.evals["accuracy"], target) if np.isfinite(target) else None
                    for r in done]
    st.zero_var = mean_ci([r.zero_var_frac() for r in done])
    st.abs_adv = mean_ci([r.mean_abs_adv() for r in done])
    st.forgotten = float(np.mean([r.last("forgotten") for r in done]))
    st.unlocked = float(np.mean([r.last("unlocked") for r in done]))
    st.seconds = float(np.mean([r.seconds for r in done]))
    used = [r.final_rollouts for r in done]
    st.rollouts = (float(np.mean(used)), float(min(used)), float(max(used)))
    if all("final_dev_accuracy" in r.summary for r in done):
        st.dev = mean_ci([r.summary["final_dev_accuracy"] for r in done])
    return st


@dataclass
class Paired:
    """An arm against the reference, seed by seed (only seeds both finished)."""

    seeds: list[int]
    to_ref_final: dict  # paired_ratio() of rollouts to each reference seed's own final accuracy
    final_diff: tuple[float, float]  # mean ± CI of (arm − reference) final accuracy over the paired seeds
    budget_acc: dict[float, tuple[float, float]]  # share of budget -> arm − reference accuracy (mean ± CI)


BUDGET_POINTS = (0.25, 0.5, 0.75, 1.0)


def paired(arm_runs: list[RunResult], ref_runs: list[RunResult], budget: int) -> Paired:
    """Per seed s: the reference's seed s sets the level (its own final accuracy) and the rollouts it
    needed to first reach it; the arm's seed s is timed to that same level. An arm seed that never gets
    there is censored (the ratio's CI then has no upper end)."""
    ref = {r.seed: r for r in ref_runs if r.status == "finished"}
    pairs, seeds, diffs = [], [], []
    at_budget: dict[float, list[float]] = {f: [] for f in BUDGET_POINTS}
    for run in arm_runs:
        base = ref.get(run.seed)
        if run.status != "finished" or base is None:
            continue
        level = base.summary["final_accuracy"]
        ref_needs = rollouts_to_target(base.evals["rollouts"], base.evals["accuracy"], level)
        if not ref_needs:  # the reference seed was never above its start: nothing to time
            continue
        seeds.append(run.seed)
        pairs.append((rollouts_to_target(run.evals["rollouts"], run.evals["accuracy"], level), ref_needs))
        diffs.append(run.summary["final_accuracy"] - level)
        for f in BUDGET_POINTS:
            x = f * budget
            at_budget[f].append(float(np.interp(x, run.evals["rollouts"], run.evals["accuracy"])
                                      - np.interp(x, base.evals["rollouts"], base.evals["accuracy"])))
    return Paired(seeds, paired_ratio(pairs), mean_ci(diffs), {f: mean_ci(v) for f, v in at_budget.items()})


def budget_problems(runs: list[RunResult], budget: int) -> list[str]:
    """Finished runs whose final rollouts are not within one step's worth above the budget."""
    out = []
    for r in runs:
        over = r.final_rollouts - budget
        if r.step_cost <= 0 or not 0 <= over < r.step_cost:
            out.append(f"{r.arm}/seed_{r.seed} used {r.final_rollouts} rollouts (budget {budget}, one step "
                       f"costs up to {r.step_cost})")
    return out


def write_report(out_dir: str | Path) -> Path:
    """Write report.md, summary.csv, runs.csv and plots/ into an ablation folder; returns report.md."""
    spec, runs = load_ablation(out_dir)
    out, ref = Path(out_dir), spec.reference
    ref_done = [r for r in runs[ref] if r.status == "finished"]
    target = float(np.mean([r.summary["final_accuracy"] for r in ref_done])) if ref_done else math.nan
    stats = {arm: arm_stats(arm, rs, target) for arm, rs in runs.items()}
    pairs = {arm: paired(rs, runs[ref], spec.budget_rollouts) for arm, rs in runs.items() if arm != ref}
    matched = {arm: paired(runs[arm], runs[other], spec.budget_rollouts) for arm, other in spec.references.items()}
    finished = [r for rs in runs.values() for r in rs if r.status == "finished"]
    budget = budget_problems(finished, spec.budget_rollouts)
    figures = _plots(out / "plots", {a: s.runs for a, s in stats.items()}, target)
    _write_csvs(out, spec, stats, runs, target, pairs, matched)
    md = _markdown(spec, stats, runs, target, budget, figures, out, pairs, matched)
    (out / "report.md").write_text(md)
    return out / "report.md"


def _plots(folder: Path, arms: dict[str, list[RunResult]], target: float) -> list[Path]:
    if not any(arms.values()):
        return []
    folder.mkdir(parents=True, exist_ok=True)
    made = [plots.accuracy_curves(arms, target, folder / "accuracy.png"),
            plots.step_curves(arms, "zero_var", "zero-variance share of generated rollouts",
                              "Zero-variance groups vs step", folder / "zero_variance.png"),
            plots.step_curves(arms, "abs_adv", "mean |advantage| per generated rollout",
                              "Mean |advantage| vs step", folder / "mean_abs_adv.png"),
            plots.pool_sizes(arms, folder / "pools.png")]
    for arm, rs in arms.items():
        run = next((r for r in sorted(rs, key=lambda r: r.seed)), None)
        levels = _levels(run) if run is not None else None
        if levels is not None:
            path = plots.pass_rate_heatmap(run, levels, folder / f"heatmap_{arm}.png")
            made += [path] if path else []
    return made


def _levels(run: RunResult) -> np.ndarray | None:
    """Difficulty level of each training problem of a synthetic-task run (None for other data)."""
    if run.config.get("data", {}).get("source") != "synthetic":
        return None
    from rlpp.config.loader import load_config
    from rlpp.config.schema import ConfigError
    from rlpp.data.loader import load_problems

    try:
        cfg = load_config(run.folder / "config.yaml")
    except ConfigError as e:  # saved by another version of rlpp: the report goes on without the heat map
        log.warning("no pass-rate heat map for %s: %s", run.folder, e)
        return None
    return load_problems(cfg.data)[0].levels


# ---------------------------------------------------------------------- formatting
def _pct(v: tuple[float, float] | float) -> str:
    m, h = v if isinstance(v, tuple) else (v, math.nan)
    if not np.isfinite(m):
        return "–"
    return f"{100 * m:.1f} ± {100 * h:.1f}" if np.isfinite(h) else f"{100 * m:.1f}"


def _num(v: tuple[float, float] | float, digits: int = 3) -> str:
    m, h = v if isinstance(v, tuple) else (v, math.nan)
    if not np.isfinite(m):
        return "–"
    return f"{m:.{digits}f} ± {h:.{digits}f}" if np.isfinite(h) else f"{m:.{digits}f}"


def _rel(path: Path, out: Path) -> str:
    try:
        return f"`{path.relative_to(out)}`"
    except ValueError:
        return f"`{path}`"


def _ratio(a: float, b: float) -> float:
    return a / b if np.isfinite(a) and np.isfinite(b) and b != 0 else math.nan


def _x(r: float) -> str:
    return f"{r:.2f}×" if np.isfinite(r) else "–"


def _to_target(st: ArmStats) -> str:
    if not st.runs:
        return "–"
    if not st.reached:
        return f"not reached (0/{len(st.runs)})"
    return f"{st.to_target_mean:,.0f} ({st.reached}/{len(st.runs)})"


def draws_per_problem(stats: dict[str, ArmStats]) -> float:
    """D of the ablation's runs (budget / (G x pool)); NaN when the runs predate the summary's pool size."""
    ds = [r.draws_per_problem() for st in stats.values() for r in st.runs]
    ds = [d for d in ds if np.isfinite(d)]
    return float(np.median(ds)) if ds else math.nan


def _markdown(spec, stats, runs, target, budget, figures, out: Path, pairs: dict[str, Paired],
              matched: dict[str, Paired] | None = None) -> str:
    ref, refst = spec.reference, stats[spec.reference]
    lines = [f"# Ablation report: {out.name}", ""]
    d = draws_per_problem(stats)
    if np.isfinite(d):
        pools = sorted({r.summary["num_problems"] for st in stats.values() for r in st.runs if "num_problems" in r.summary})
        groups = sorted({r.summary["group_size"] for st in stats.values() for r in st.runs if "group_size" in r.summary})
        lines += [f"**Draws per problem D = budget / (G × pool) = {spec.budget_rollouts:,} / ({'/'.join(map(str, groups))} "
                  f"× {'/'.join(f'{p:,}' for p in pools)}) = {d:.1f}**: how often a sampler that learns from a problem's "
                  "own history can come back to it.", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [f"Base training config `{spec.base}`; equal budget of **{spec.budget_rollouts:,} rollouts** per run "
              f"(every generated sample counts, discarded groups included); seeds {spec.seeds}"
              + "".join(f", {a}: {v}" for a, v in spec.arm_seeds.items()) + ".", ""]
    if spec.overrides:
        lines += ["Common overrides: " + ", ".join(f"`{k}={v}`" for k, v in spec.overrides.items()), ""]
    lines += ["| arm | overrides |", "| --- | --- |"]
    lines += [f"| {a} | {', '.join(f'`{k}={v}`' for k, v in o.items()) or '(base)'} |" for a, o in spec.arms.items()]
    lines += ["", f"Reference arm: **{ref}**" + ("" if ref == "uniform" else
              " (no `uniform` arm, so the first arm is the reference)") + ".", ""]

    lines += ["## Summary", "",
              "Accuracies in %, mean ± 95% CI half-width over seeds (Student t; no CI from one seed).", "",
              f"| arm | seeds | final acc | gain (pts) | best acc | rollouts to {ref} final ({_pct(target)}%) | × {ref} "
              f"| zero-var share | × {ref} | mean \\|adv\\| | × {ref} | forgotten | unlocked | wall (s) | rollouts used |",
              "| --- |" + " ---: |" * 14]
    for arm, st in stats.items():
        used = "–" if not st.runs else (f"{st.rollouts[0]:,.0f}" if st.rollouts[1] == st.rollouts[2]
                                        else f"{st.rollouts[0]:,.0f} ({st.rollouts[1]:,.0f}–{st.rollouts[2]:,.0f})")
        lines.append(
            f"| {arm} | {len(st.runs)}/{st.total} | {_pct(st.final)} | {_pts(st.gain)} | {_pct(st.best)} | {_to_target(st)} "
            f"| {_x(_ratio(st.to_target_mean, refst.to_target_mean))} | {_num(st.zero_var)} "
            f"| {_x(_ratio(st.zero_var[0], refst.zero_var[0]))} | {_num(st.abs_adv)} "
            f"| {_x(_ratio(st.abs_adv[0], refst.abs_adv[0]))} | {_num(st.forgotten, 1)} | {_num(st.unlocked, 1)} "
            f"| {_num(st.seconds, 0)} | {used} |")
    if any(np.isfinite(st.dev[0]) for st in stats.values()):
        lines += ["", "Dev-split accuracy at the end (`trainer.eval_dev`; what hyper-parameters are chosen on): "
                  + ", ".join(f"{arm} {_pct(st.dev)}%" for arm, st in stats.items() if np.isfinite(st.dev[0])) + "."]
    lines += ["", "Gain: final minus initial held-out accuracy of each seed, in points (mean ± 95% CI over seeds): "
              "whether an arm learns at all. Rollouts to the reference's final mean accuracy: per seed, the first evaluation at or above it, "
              "linearly interpolated in rollouts from the evaluation before; the mean is over the seeds that "
              "reached it (count in brackets). Zero-var share and mean |adv| are per *generated* rollout over the "
              "whole run: groups a sampler discarded before training count as zero-variance with advantage 0. "
              "Forgotten / unlocked: the buffer's counters at the last step (bookkeeping only for samplers that "
              "do not park). Wall time: the whole `rlpp train` process (start-up and evaluations included).", ""]
    lines += _paired_section(spec, stats, pairs)
    if matched:
        lines += _matched_section(spec, matched)
    lines += _diagnostics_section(stats)
    n_done = sum(len(st.runs) for st in stats.values())
    if budget:
        lines += ["**Budget check: VIOLATED** — these runs did not end within one step's worth above the budget:", ""]
        lines += [f"- {b}" for b in budget] + [""]
    elif n_done:
        used = [r.final_rollouts for st in stats.values() for r in st.runs]
        lines += [f"**Budget check: equal.** All {n_done} finished runs ended within one step's worth above the "
                  f"budget of {spec.budget_rollouts:,} rollouts ({min(used):,}–{max(used):,} used).", ""]

    lines += ["## Findings", "", _findings(spec, stats, target, pairs), ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in figures] + [""]
        if not any(p.stem.startswith("heatmap_") for p in figures):
            lines += ["(No pass-rate heat maps: they need the synthetic task's difficulty levels.)", ""]
        else:
            lines += ["Heat maps: the lowest seed of each arm; rows are training problems sorted by difficulty level "
                      "(used only here, never by a sampler), then by final p̂.", ""]

    lines += ["## Runs", "", "| arm | seed | status | initial acc | final acc | rollouts | steps | wall (s) | log |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for arm, rs in runs.items():
        for r in rs:
            s = r.summary
            lines.append(f"| {arm} | {r.seed} | {r.status} | {_pct(s.get('initial_accuracy', math.nan))} "
                         f"| {_pct(s.get('final_accuracy', math.nan))} | {s.get('rollouts', '–')} | {s.get('steps', '–')} "
                         f"| {_num(r.seconds, 0)} | {_rel(r.log_path, out) if r.status != 'missing' else '(not run)'} |")
    return "\n".join(lines) + "\n"


def ratio_text(pr: dict) -> str:
    """A paired ratio as 'mean× [lo–hi]', with '≥' and an open upper end when censored."""
    if not np.isfinite(pr["mean"]):
        return "–" if not pr["censored"] else f"not reached ({pr['censored']}/{pr['n']})"
    ge = "≥ " if pr["censored"] else ""
    hi = "∞" if pr["hi"] == math.inf else _x(pr["hi"])
    ci = f" [{_x(pr['lo'])}–{hi}]" if np.isfinite(pr["lo"]) else ""
    return f"{ge}{_x(pr['mean'])}{ci}"


def _paired_section(spec, stats: dict[str, ArmStats], pairs: dict[str, Paired]) -> list[str]:
    ref = spec.reference
    lines = ["## Paired by seed, and what each arm paid", "",
             f"Each seed of an arm against the same seed of {ref}: that {ref} seed's final held-out accuracy is the "
             f"level, and the ratio is the rollouts the arm needed to first reach it over the rollouts {ref} needed "
             f"(both interpolated between evaluations). Geometric mean over seeds, 95% Student-t CI on the log "
             f"ratios; a seed that never reached the level within the budget is censored (shown as –): the "
             f"estimate is then a lower bound (≥) and the CI has no upper end. Accuracy differences are arm − "
             f"{ref}, paired by seed, in points at the given share of the budget.", "",
             f"| arm | paired seeds | rollouts to {ref}'s final, × {ref} | per seed | final acc − {ref} "
             + "".join(f"| acc − {ref} @{int(100 * f)}% " for f in BUDGET_POINTS if f < 1)
             + "| generated tokens | trained tokens | trained / generated | wall (s) |",
             "| --- |" + " ---: |" * (9 + sum(f < 1 for f in BUDGET_POINTS))]
    for arm, st in stats.items():
        tok = mean_ci([r.total("tokens") for r in st.runs])
        trained = mean_ci([r.total("trained_tokens") for r in st.runs])
        share = mean_ci([r.total("trained_tokens") / r.total("tokens") for r in st.runs if r.total("tokens") > 0])
        cost = f"| {_num(tok, 0)} | {_num(trained, 0)} | {_num(share, 2)} | {_num(st.seconds, 0)} |"
        if arm == ref:
            lines.append(f"| {arm} | {len(st.runs)} | 1.00× | – | – " + "| – " * sum(f < 1 for f in BUDGET_POINTS) + cost)
            continue
        p = pairs[arm]
        per_seed = ", ".join("–" if r is None else f"{r:.2f}" for r in p.to_ref_final["ratios"])
        lines.append(f"| {arm} | {len(p.seeds)} | {ratio_text(p.to_ref_final)} | {per_seed or '–'} "
                     f"| {_pts(p.final_diff)} " + "".join(f"| {_pts(p.budget_acc[f])} " for f in BUDGET_POINTS if f < 1)
                     + cost)
    return lines + [""]


def _matched_section(spec, matched: dict[str, Paired]) -> list[str]:
    lines = ["### Against a second reference", "",
             "Each arm below also against the arm named beside it (`references` in the ablation file), seed by seed "
             "as above: e.g. uniform run at the arm's own batch size and learning rate, so that a gain is not a "
             "batch-size or learning-rate effect.", "",
             "| arm | reference | paired seeds | rollouts to the reference's final, × reference | final acc − reference |",
             "| --- | --- | ---: | ---: | ---: |"]
    for arm, p in matched.items():
        lines.append(f"| {arm} | {spec.references[arm]} | {len(p.seeds)} | {ratio_text(p.to_ref_final)} | {_pts(p.final_diff)} |")
    return lines + [""]


DIAGNOSTICS = (("prediction_spearman", "ρ(predicted, realized)", 2, 1.0),
               ("zero_variance_auroc", "AUROC zero-var", 2, 1.0),
               ("coverage", "drawn ≥ 1×", 1, 100.0),
               ("coverage_half_d", "drawn ≥ D/2×", 1, 100.0),
               ("longest_gap", "longest gap (steps)", 0, 1.0),
               ("forgetting_rate", "solved → failed", 2, 1.0),
               ("skipped_share", "skipped share", 2, 1.0))
PASS_AT = (1, 2, 4, 8, 16)


def _diagnostics_section(stats: dict[str, ArmStats]) -> list[str]:
    """Per arm, mean ± 95% CI over seeds of the buffer's end-of-run diagnostics and the final pass@k."""
    have = [k for k in DIAGNOSTICS if any(np.isfinite(r.diagnostic(k[0])) for st in stats.values() for r in st.runs)]
    ks = [k for k in PASS_AT if any(np.isfinite(r.diagnostic(f"pass@{k}")) for st in stats.values() for r in st.runs)]
    if not have and not ks:
        return []
    lines = ["## Diagnostics", "",
             "What each sampler predicted and how it spread its draws (`summary.json`'s `diagnostics`, mean ± 95% CI "
             "over seeds). ρ: Spearman correlation of the pass rate the sampler predicted when it drew a problem with "
             "the pass rate its group showed (a problem it cannot predict counts at the run's pass rate so far); "
             "AUROC: how well the predicted chance of a zero-variance group (p^G + (1 − p)^G) separates the groups "
             "that were zero-variance from those that were not (0.5 is chance); drawn ≥ 1× / ≥ D/2×: share of the "
             "pool; longest gap: the most steps between two visits of one problem; solved → failed: share of "
             "revisits of a problem solved by its whole last group that failed at least once (forgetting); skipped "
             "share: draws passed over before generation. pass@k: held-out, at the end (`eval.final_k`), in %.", "",
             "| arm | " + " | ".join(k[1] for k in have) + "".join(f" | pass@{k}" for k in ks) + " |",
             "| --- |" + " ---: |" * (len(have) + len(ks))]
    for arm, st in stats.items():
        cells = [_num(mean_ci([r.diagnostic(key) * scale for r in st.runs]), digits) for key, _, digits, scale in have]
        cells += [_pct(mean_ci([r.diagnostic(f"pass@{k}") for r in st.runs])) for k in ks]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines + [""]


def _pts(v: tuple[float, float]) -> str:
    m, h = v
    if not np.isfinite(m):
        return "–"
    return f"{100 * m:+.1f} ± {100 * h:.1f}" if np.isfinite(h) else f"{100 * m:+.1f}"


def _findings(spec: AblationSpec, stats: dict[str, ArmStats], target: float, pairs: dict[str, Paired]) -> str:
    ref, refst = spec.reference, stats[spec.reference]
    if not refst.runs:
        return f"No finished run of the reference arm `{ref}`: nothing to compare against."
    t = spec.targets
    parts = [f"Reference `{ref}`: held-out accuracy {_pct(refst.initial)}% before training, {_pct(refst.final)}% "
             f"at the end over {len(refst.runs)} seed(s); "
             f"its mean, {_pct(target)}%, is the level the rollout counts below refer to. Targets for an arm against "
             f"{ref}: rollouts to that level ≤ {t['rollouts']}×, zero-variance share ≤ {t['zero_var']}×, "
             f"mean |advantage| ≥ {t['abs_adv']}×. All numbers are measured; CIs are 95% over seeds."]
    for arm, st in stats.items():
        if arm == ref:
            continue
        if not st.runs:
            parts.append(f"**{arm}**: no finished runs.")
            continue
        r_ro = _ratio(st.to_target_mean, refst.to_target_mean)
        if not target > refst.initial:
            ro = (f"rollouts to {_pct(target)}% not assessed: {ref} ended at or below its initial accuracy "
                  f"({_pct(refst.initial)}%), so that level says nothing about learning speed")
        elif st.reached == 0:
            ro = f"did not reach {_pct(target)}% in any of its {len(st.runs)} seeds within the budget (target not met)"
        else:
            full = st.reached == len(st.runs) and refst.reached == len(refst.runs)
            verdict = _verdict(r_ro <= t["rollouts"], r_ro) if full else "target not assessed: not every seed reached it"
            ci = ""
            if full and st.reached >= 2:
                m, h = mean_ci([r / refst.to_target_mean for r in st.to_target])
                ci = f", 95% CI {_x(m - h)}–{_x(m + h)} over its seeds with {ref}'s mean held fixed"
            ro = (f"reached {_pct(target)}% after {st.to_target_mean:,.0f} rollouts ({st.reached}/{len(st.runs)} seeds) "
                  f"vs {refst.to_target_mean:,.0f} for {ref} ({refst.reached}/{len(refst.runs)}): {_x(r_ro)}{ci} ({verdict})")
        r_zv, r_adv = _ratio(st.zero_var[0], refst.zero_var[0]), _ratio(st.abs_adv[0], refst.abs_adv[0])
        diff = 100 * (st.final[0] - refst.final[0])
        overlap = _overlap(st.final, refst.final)
        pr = pairs[arm].to_ref_final
        if pr["n"]:
            met = np.isfinite(pr["mean"]) and pr["mean"] <= t["rollouts"] and pr["hi"] < 1.0
            ro += (f"; paired by seed ({pr['n']} seeds, each against the same seed of {ref}): {ratio_text(pr)} "
                   f"({'target met' if met else 'target not met'}: ≤ {t['rollouts']}× with the CI's upper end below 1)")
        parts.append(
            f"**{arm}**: {ro}; zero-variance share {st.zero_var[0]:.3f} vs {refst.zero_var[0]:.3f}: {_x(r_zv)} "
            f"({_verdict(r_zv <= t['zero_var'], r_zv)}); mean |advantage| {st.abs_adv[0]:.3f} vs {refst.abs_adv[0]:.3f}: "
            f"{_x(r_adv)} ({_verdict(r_adv >= t['abs_adv'], r_adv)}); final held-out accuracy {_pct(st.final)}% vs "
            f"{_pct(refst.final)}% ({diff:+.1f} points{overlap}).")
    return "\n\n".join(parts)


def _verdict(ok: bool, ratio: float) -> str:
    return "n/a" if not np.isfinite(ratio) else ("target met" if ok else "target not met")


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> str:
    if not (np.isfinite(a[1]) and np.isfinite(b[1])):
        return ""
    return "; the 95% CIs overlap" if abs(a[0] - b[0]) <= a[1] + b[1] else "; the 95% CIs do not overlap"


def _write_csvs(out: Path, spec, stats: dict[str, ArmStats], runs, target: float, pairs: dict[str, Paired],
                matched: dict[str, Paired] | None = None) -> None:
    refst = stats[spec.reference]
    keys = [k[0] for k in DIAGNOSTICS] + [f"pass@{k}" for k in PASS_AT]
    with open(out / "diagnostics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seeds", "draws_per_problem", *(c for k in keys for c in (k, f"{k}_ci95"))])
        for arm, st in stats.items():
            d = mean_ci([r.draws_per_problem() for r in st.runs])[0]
            w.writerow([arm, len(st.runs), d, *(c for k in keys for c in mean_ci([r.diagnostic(k) for r in st.runs]))])
    if matched:
        with open(out / "matched.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["arm", "reference", "paired_seeds", "ratio", "ratio_ci95_lo", "ratio_ci95_hi", "censored_seeds",
                        "final_acc_diff", "final_acc_diff_ci95"])
            for arm, p in matched.items():
                pr = p.to_ref_final
                w.writerow([arm, spec.references[arm], " ".join(map(str, p.seeds)), pr["mean"], pr["lo"], pr["hi"],
                            pr["censored"], *p.final_diff])
    with open(out / "paired.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "paired_seeds", "ratio_to_ref_final", "ratio_ci95_lo", "ratio_ci95_hi", "censored_seeds",
                    "per_seed_ratios", "final_acc_diff", "final_acc_diff_ci95",
                    *(f"acc_diff_at_{int(100 * x)}pct" for x in BUDGET_POINTS), "generated_tokens", "trained_tokens"])
        for arm, st in stats.items():
            p = pairs.get(arm)
            toks = [float(np.mean([r.total(k) for r in st.runs])) if st.runs else math.nan
                    for k in ("tokens", "trained_tokens")]
            if p is None:
                w.writerow([arm, len(st.runs), 1.0, 1.0, 1.0, 0, "", 0.0, 0.0, *([0.0] * len(BUDGET_POINTS)), *toks])
                continue
            pr = p.to_ref_final
            w.writerow([arm, " ".join(map(str, p.seeds)), pr["mean"], pr["lo"], pr["hi"], pr["censored"],
                        " ".join("nan" if r is None else f"{r:.4f}" for r in pr["ratios"]), *p.final_diff,
                        *(p.budget_acc[x][0] for x in BUDGET_POINTS), *toks])
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seeds_finished", "seeds_total", "final_accuracy", "final_accuracy_ci95", "best_accuracy",
                    "best_accuracy_ci95", "target_accuracy", "rollouts_to_target", "seeds_reached_target",
                    "rollouts_to_target_ratio", "zero_var_frac", "zero_var_frac_ci95", "zero_var_ratio",
                    "mean_abs_adv", "mean_abs_adv_ci95", "mean_abs_adv_ratio", "forgotten", "unlocked", "seconds",
                    "rollouts_mean", "rollouts_min", "rollouts_max", "gain", "gain_ci95"])
        for arm, st in stats.items():
            w.writerow([arm, len(st.runs), st.total, *st.final, *st.best, target, st.to_target_mean, st.reached,
                        _ratio(st.to_target_mean, refst.to_target_mean), *st.zero_var,
                        _ratio(st.zero_var[0], refst.zero_var[0]), *st.abs_adv, _ratio(st.abs_adv[0], refst.abs_adv[0]),
                        st.forgotten, st.unlocked, st.seconds, *st.rollouts, *st.gain])
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "status", "initial_accuracy", "final_accuracy", "best_accuracy", "best_step", "steps",
                    "rollouts", "max_step_rollouts", "budget_ok", "rollouts_to_target", "zero_var_frac",
                    "mean_abs_adv", "forgotten", "unlocked", "seconds", "log"])
        for arm, rs in runs.items():
            for r in rs:
                if r.status != "finished":
                    w.writerow([arm, r.seed, r.status] + [""] * 14 + [r.log_path])
                    continue
                s, reach = r.summary, rollouts_to_target(r.evals["rollouts"], r.evals["accuracy"], target)
                w.writerow([arm, r.seed, r.status, s["initial_accuracy"], s["final_accuracy"], s["best_accuracy"],
                            s.get("best_step"), s.get("steps"), r.final_rollouts, r.step_cost,
                            not budget_problems([r], spec.budget_rollouts), "" if reach is None else reach,
                            r.zero_var_frac(), r.mean_abs_adv(), r.last("forgotten"), r.last("unlocked"),
                            r.seconds, r.log_path])


def main_report(run_dir: str) -> int:
    """The ``rlpp report`` command."""
    try:
        path = write_report(run_dir)
    except SpecError as e:
        print(f"rlpp: report error: {e}", file=sys.stderr)
        return 2
    print(f"rlpp report: wrote {path}")
    return 0
