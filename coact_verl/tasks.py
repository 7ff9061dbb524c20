"""The task table: each answer format's instruction and question-writing wording, and prompt ids.

A task names an answer format (``gsm8k``: ``#### n``; ``math``: ``\\boxed{}``; ``numeric``: numbers with
units). Everything that shows a question to the policy (prepared datasets, prompt-pool rows, question
generation, the tiny model's warm-up) takes its wording from :data:`TASK_TABLE`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
MATH_INSTRUCTION = "Let's think step by step and put the final answer within \\boxed{}."


@dataclass(frozen=True)
class Task:
    """One answer format.

    Attributes:
        name: ``gsm8k``, ``math`` or ``numeric``.
        instruction: appended to a question (after one space) in the policy's prompt.
        answer_format: how a final answer is written, for people reading logs and docs.
        kind: what a new question of this task is, in a question-generation prompt.
        guidance: what a new question must satisfy, in a question-generation prompt.
    """

    name: str
    instruction: str
    answer_format: str
    kind: str
    guidance: str


TASK_TABLE: dict[str, Task] = {
    "gsm8k": Task(
        "gsm8k",
        GSM8K_INSTRUCTION,
        "#### n",
        "grade-school math word problem",
        "It should take a few steps of everyday arithmetic and have a single numerical answer.",
    ),
    "math": Task(
        "math",
        MATH_INSTRUCTION,
        "\\boxed{answer}",
        "competition mathematics problem",
        "It should have a single exact final answer, such as a number, a fraction or a short expression.",
    ),
    "numeric": Task(
        "numeric",
        MATH_INSTRUCTION,
        "\\boxed{number with units}",
        "quantitative science problem with physical units",
        "It should state every quantity with its units and ask for one numerical result in named units.",
    ),
}
#: Task names, in table order.
TASKS: tuple[str, ...] = tuple(TASK_TABLE)
#: Instruction of each task (``TASK_TABLE[name].instruction``).
TASK_INSTRUCTIONS: dict[str, str] = {name: task.instruction for name, task in TASK_TABLE.items()}


def task(name: str) -> Task:
    """The table entry of ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return TASK_TABLE[name]
    except KeyError:
        raise ValueError(f"task must be one of {TASKS}, got {name!r}") from None


def prompt_text(question: str, task_name: str) -> str:
    """The user turn the policy sees: the question, one space, the task's instruction."""
    return f"{question} {task(task_name).instruction}"


def prompt_id(data_source: str, question: str) -> str:
    """Stable id of a prompt: 16 hex chars of sha256 over source and question (no ``_``, safe in verl keys)."""
    return hashlib.sha256(f"{data_source}\n{question}".encode()).hexdigest()[:16]


def build_generation_prompt(seed_questions: Sequence[str], task_name: str) -> list[dict[str, str]]:
    """Few-shot chat prompt (one user message) asking for ONE new problem like the seed questions."""
    entry = task(task_name)
    if not seed_questions:
        raise ValueError("a generation prompt needs at least one seed question")
    examples = "\n\n".join(f"Example {i}:\n{q.strip()}" for i, q in enumerate(seed_questions, 1))
    many = len(seed_questions) > 1
    intro = f"Here are {len(seed_questions)} example problems" if many else "Here is an example problem"
    content = (
        f"{intro}:\n\n{examples}\n\n"
        f"Write ONE new {entry.kind} of similar difficulty to the example{'s' if many else ''}. {entry.guidance} "
        "Include all the information needed to solve it. "
        "Reply with the problem statement only: no title, no hints, no solution and no answer."
    )
    return [{"role": "user", "content": content}]
