"""The prompt pool and capability-aware question generation.

Typical use::

    from coact_verl.pool import PromptPool, run_generation_round

    pool = PromptPool.from_config(config.generation)
    pool.add(question, "gsm8k")                                    # a dataset prompt
    pool.add_oracle_label(pid, answer, step, majority_correct=True)  # it becomes a few-shot seed
    result = await run_generation_round(pool, config.generation, "gsm8k", step, write, answer, clusterer)
    rows = pool.take_for_training(8)                                # admitted questions as verl rows
    pool.save("checkpoints/pool.json")                              # atomic
"""

from coact_verl.pool.dedup import DedupIndex, Duplicate, is_near_duplicate, normalize_text, shingles, similarity
from coact_verl.pool.generation import (
    ADMIT_REASONS,
    PARSE_REASONS,
    REJECT_REASONS,
    GenerationRound,
    admit,
    admit_threshold,
    clean_generated_text,
    parse_generated_question,
    run_generation_round,
)
from coact_verl.pool.late_labels import LateLabelTracker
from coact_verl.pool.pool import (
    GENERATED_SOURCE,
    PROVENANCES,
    PoolEntry,
    PromptPool,
    to_verl_row,
)
from coact_verl.tasks import TASK_INSTRUCTIONS, build_generation_prompt

__all__ = [
    "ADMIT_REASONS",
    "GENERATED_SOURCE",
    "PARSE_REASONS",
    "PROVENANCES",
    "REJECT_REASONS",
    "TASK_INSTRUCTIONS",
    "DedupIndex",
    "Duplicate",
    "GenerationRound",
    "LateLabelTracker",
    "PoolEntry",
    "PromptPool",
    "admit",
    "admit_threshold",
    "build_generation_prompt",
    "clean_generated_text",
    "is_near_duplicate",
    "normalize_text",
    "parse_generated_question",
    "run_generation_round",
    "shingles",
    "similarity",
    "to_verl_row",
]
