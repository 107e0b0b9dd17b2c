"""Ablations at equal rollout budgets: ``rlpp ablate SPEC`` runs every (arm, seed) as its own
``rlpp train`` process, ``rlpp report RUN_DIR`` turns their logs into a report with plots.

- ``spec``: the ablation YAML, its overrides and validation (every arm's training config up front).
- ``runner``: the runs as subprocesses, ``parallel`` at a time, finished ones skipped on resume.
- ``results``: run folders read back (evaluations, per-step series, signal per generated rollout).
- ``stats``: Student-t CIs, rollouts to a target accuracy, moving averages (numpy only).
- ``report`` / ``plots``: report.md, summary.csv, runs.csv and the PNG figures.
"""
