"""GSM8K-format arithmetic word problems generated locally (the demo's and the tests' prompts)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from coact_verl.tasks import prompt_text

_NAMES = ("Ava", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana")
_ITEMS = ("apples", "pens", "books", "coins", "cards", "shells")


@dataclass(frozen=True)
class Problem:
    """One problem: ``question`` (no instruction), ``solution`` (ends in ``#### answer``), ``answer``."""

    question: str
    solution: str
    answer: str

    @property
    def prompt(self) -> str:
        """The user turn: the question and the ``gsm8k`` instruction."""
        return prompt_text(self.question, "gsm8k")


def arithmetic_problems(count: int, seed: int = 0, max_operand: int = 9) -> list[Problem]:
    """``count`` one- or two-step problems with small non-negative integer answers, deterministic in ``seed``."""
    rng = random.Random(seed)
    problems = []
    for _ in range(count):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
        if rng.random() < 0.5:
            question = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have?"
            answer = a + b
            work = f"{a} + {b} = {answer}"
        else:
            a, b = max(a, b), min(a, b)
            question = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
            answer = a - b
            work = f"{a} - {b} = {answer}"
        problems.append(Problem(question=question, solution=f"{work}\n#### {answer}", answer=str(answer)))
    return problems
