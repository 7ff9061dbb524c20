"""A constructed task family with self-consistent errors (the label-efficiency testbed's problems).

Five kinds of one- or two-step word problems over small integers, each with one correct rule:

========== ===================================================================== =============== ==========
kind       question (template)                                                   correct         trap rule
========== ===================================================================== =============== ==========
add        Ava has 7 pens and gets 3 more. How many pens does Ava have now?      a + b           –
sub        Ava has 7 pens and gives away 3. How many pens are left?              a − b           –
two_step   Ava has 7 pens, gets 3 more and then gives away 4. How many ... left? a + b − c       –
compare    Ava has 7 pens, which is 3 more than Ben. How many pens does Ben ...  a − b           a + b
inverse    Ava gave away 3 pens and now has 7. How many pens did Ava have ...    a + b           a − b
========== ===================================================================== =============== ==========

``compare`` and ``inverse`` are the *trap* kinds: the classic keyword misreadings ("more" means add,
"gave away" means subtract). The warm-up corpus writes a share ``warmup_error_rate`` of their solutions
with the trap rule, so the warmed-up model is confidently wrong on them (most of its samples agree on the
wrong answer), while it mostly gets the other kinds right; ``two_step`` is the hard-but-honest kind (its
arithmetic is noisier, so agreement is lower, yet the majority is usually right). Majority voting then
entrenches the trap errors, gold labels fix them, and a router that finds them matters.

Knobs (:class:`TestbedConfig`): ``trap_share`` (share of problems, in training and validation, drawn from
the trap kinds) and ``warmup_error_rate`` (share of trap-kind warm-up solutions written with the trap rule).
Solutions are GSM8K-format: the work without spaces, then ``#### answer`` (e.g. ``7+3=10\\n#### 10``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from coact_verl.tasks import prompt_text

NAMES = ("Ava", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon")
ITEMS = ("apples", "pens", "books", "coins", "cards", "shells", "stamps", "marbles")
DATA_SOURCE_PREFIX = "testbed/"  # a row's data_source is this plus its kind: verl reports accuracy per kind


@dataclass(frozen=True)
class TestbedConfig:
    """The testbed's knobs.

    Attributes:
        trap_share: share of problems drawn from the trap kinds (split evenly between them), in [0, 1].
        warmup_error_rate: share of the trap kinds' warm-up solutions written with the trap rule, in [0, 1].
        max_operand: operands are drawn from 1..max_operand.
    """

    __test__ = False  # not a pytest test class despite its name

    trap_share: float = 0.3
    warmup_error_rate: float = 0.8
    max_operand: int = 9

    def __post_init__(self) -> None:
        if not 0.0 <= self.trap_share <= 1.0 or not 0.0 <= self.warmup_error_rate <= 1.0:
            raise ValueError("trap_share and warmup_error_rate must lie in [0, 1]")
        if self.max_operand < 2:
            raise ValueError("max_operand must be >= 2")


@dataclass(frozen=True)
class TestbedProblem:
    """One problem: its ``kind``, the ``question`` (no instruction), the correct ``solution`` and ``answer``."""

    __test__ = False

    kind: str
    question: str
    solution: str
    answer: str

    @property
    def prompt(self) -> str:
        return prompt_text(self.question, "gsm8k")

    @property
    def data_source(self) -> str:
        return DATA_SOURCE_PREFIX + self.kind


Operands = tuple[int, ...]
Rule = Callable[[Operands], tuple[str, int]]  # operands -> (work without spaces, answer)


def _plus(x: Operands) -> tuple[str, int]:
    return f"{x[0]}+{x[1]}={x[0] + x[1]}", x[0] + x[1]


def _minus(x: Operands) -> tuple[str, int]:
    return f"{x[0]}-{x[1]}={x[0] - x[1]}", x[0] - x[1]


def _plus_minus(x: Operands) -> tuple[str, int]:
    total = x[0] + x[1]
    return f"{x[0]}+{x[1]}={total}\n{total}-{x[2]}={total - x[2]}", total - x[2]


@dataclass(frozen=True)
class Kind:
    """A problem kind: its template, operand count, correct rule and (for trap kinds) the trap rule."""

    name: str
    template: str
    operands: int
    rule: Rule
    trap_rule: Rule | None = None


KINDS: tuple[Kind, ...] = (
    Kind("add", "{n} has {a} {item} and gets {b} more. How many {item} does {n} have now?", 2, _plus),
    Kind("sub", "{n} has {a} {item} and gives away {b}. How many {item} are left?", 2, _minus),
    Kind(
        "two_step",
        "{n} has {a} {item}, gets {b} more and then gives away {c}. How many {item} are left?",
        3,
        _plus_minus,
    ),
    Kind("compare", "{n} has {a} {item}, which is {b} more than {m}. How many {item} does {m} have?", 2, _minus, _plus),
    Kind(
        "inverse", "{n} gave away {b} {item} and now has {a}. How many {item} did {n} have at first?", 2, _plus, _minus
    ),
)
KIND_NAMES = tuple(k.name for k in KINDS)
TRAP_KINDS = tuple(k.name for k in KINDS if k.trap_rule is not None)
_BY_NAME = {k.name: k for k in KINDS}


def kind_weights(cfg: TestbedConfig) -> dict[str, float]:
    """Sampling probability of each kind: ``trap_share`` split over the trap kinds, the rest over the others."""
    normal = [k for k in KIND_NAMES if k not in TRAP_KINDS]
    return {
        k: (cfg.trap_share / len(TRAP_KINDS) if k in TRAP_KINDS else (1 - cfg.trap_share) / len(normal))
        for k in KIND_NAMES
    }


def make_problem(kind: str, rng: random.Random, cfg: TestbedConfig, trap: bool = False) -> TestbedProblem:
    """One problem of ``kind``; ``trap=True`` writes the solution with the kind's trap rule (warm-up only)."""
    spec = _BY_NAME[kind]
    top = cfg.max_operand
    a, b = rng.randint(2, top), rng.randint(1, top)
    a, b = max(a, b), min(a, b)  # every rule (trap ones included) stays non-negative
    if a == b:
        a += 1
    c = rng.randint(1, a + b)
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    question = spec.template.format(n=name, m=other, item=item, a=a, b=b, c=c)
    operands = (a, b, c)[: spec.operands]
    work, answer = spec.rule(operands)
    if trap and spec.trap_rule is not None:
        work, _ = spec.trap_rule(operands)
        answer = int(work.rsplit("=", 1)[1])
    return TestbedProblem(kind, question, f"{work}\n#### {answer}", str(answer))


def sample_problems(
    count: int, cfg: TestbedConfig, seed: int, exclude: frozenset[str] = frozenset()
) -> list[TestbedProblem]:
    """``count`` problems with correct solutions, kinds drawn by :func:`kind_weights`, questions not in
    ``exclude`` and not repeated; deterministic in ``seed``."""
    rng = random.Random(seed)
    weights = kind_weights(cfg)
    kinds, probs = list(weights), list(weights.values())
    seen = set(exclude)
    problems: list[TestbedProblem] = []
    for _ in range(count * 50):
        if len(problems) == count:
            break
        problem = make_problem(rng.choices(kinds, probs)[0], rng, cfg)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    if len(problems) < count:
        raise ValueError(f"only {len(problems)} distinct problems for {count} requested; raise max_operand")
    return problems


def warmup_problems(count: int, cfg: TestbedConfig, seed: int) -> list[TestbedProblem]:
    """The warm-up corpus: every kind equally often; trap kinds solved with the trap rule at ``warmup_error_rate``."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = KIND_NAMES[i % len(KIND_NAMES)]
        trap = kind in TRAP_KINDS and rng.random() < cfg.warmup_error_rate
        out.append(make_problem(kind, rng, cfg, trap=trap))
    rng.shuffle(out)
    return out
