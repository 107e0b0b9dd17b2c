"""rlpp's priority buffer inside other trainers.

- ``rlpp.integrations.trl``: TRL's ``GRPOTrainer`` draws its prompts from a ``PriorityBuffer`` and hands the
  rewards back (``RlppGRPOTrainer``); imports TRL only when that class is asked for.

Nothing here is imported by the rest of rlpp; a loop of your own needs no integration at all (README,
"Use the buffer in your own loop").
"""
