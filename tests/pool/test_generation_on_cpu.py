"""Question generation: prompts, parsing with counted rejections, admission bounds and a full round."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from coact_verl.config import ConsistencyConfig, GenerationConfig
from coact_verl.consistency import AnswerClusterer, compute_group_stats, stats_from_clusters
from coact_verl.pool import (
    GENERATED_SOURCE,
    REJECT_REASONS,
    TASK_INSTRUCTIONS,
    GenerationRound,
    PromptPool,
    admit,
    admit_threshold,
    build_generation_prompt,
    clean_generated_text,
    parse_generated_question,
    run_generation_round,
)
from coact_verl.tasks import prompt_id

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def gsm8k_questions(split: str, limit: int) -> list[str]:
    path = DATA / "gsm8k" / f"{split}.jsonl"
    if not path.is_file():
        pytest.skip(f"reference data not found: {path} (expected the shared data folder next to the repo)")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["question"] for line in itertools.islice(handle, limit)]


@pytest.fixture(scope="module")
def clusterer():
    """Canonical-only clusterer (no worker processes)."""
    with AnswerClusterer(ConsistencyConfig(task="gsm8k", use_math_verify=False)) as c:
        yield c


def group(*finals: str | None) -> list[str]:
    """Responses ending in ``#### x`` (``None``: a response without an answer)."""
    return [f"Step by step.\n#### {f}" if f is not None else "I cannot tell." for f in finals]


# ---------------------------------------------------------------------- prompts


@pytest.mark.parametrize("task", ["gsm8k", "math", "numeric"])
def test_generation_prompt_is_a_three_shot_chat(task):
    seeds = gsm8k_questions("train", 3)
    messages = build_generation_prompt(seeds, task)
    assert len(messages) == 1 and messages[0]["role"] == "user"
    content = messages[0]["content"]
    for i, seed in enumerate(seeds, 1):
        assert f"Example {i}:\n{seed}" in content
    assert "ONE new" in content and "similar difficulty" in content
    assert "all the information" in content and "problem statement only" in content
    assert {"gsm8k": "word problem", "math": "competition", "numeric": "units"}[task] in content


def test_generation_prompt_rejects_bad_input():
    with pytest.raises(ValueError):
        build_generation_prompt([], "gsm8k")
    with pytest.raises(ValueError):
        build_generation_prompt(["What is 2 + 2?"], "chess")


# ---------------------------------------------------------------------- parsing

QUESTION = "A baker makes 24 muffins and sells 3 boxes of 6 muffins each. How many muffins are left?"


@pytest.mark.parametrize(
    "raw",
    [
        QUESTION,
        f"Question: {QUESTION}",
        f"Problem: {QUESTION}",
        f'"{QUESTION}"',
        f"“{QUESTION}”",
        f"**Question:** {QUESTION}",
        f"### New Problem\n\n{QUESTION}",
        f"Sure! Here is a new math word problem:\n\n{QUESTION}",
        f"```\n{QUESTION}\n```",
        f"<think>I should write about muffins.</think>\n\nProblem 1: {QUESTION}",
        f"  \n {QUESTION}  \n",
    ],
)
def test_common_wrappers_are_stripped(raw):
    assert parse_generated_question(raw, "gsm8k", [], 1000) == (QUESTION, "ok")


def test_cleaning_keeps_a_question_that_merely_starts_like_a_label():
    text = "A new store opened. Prices are:\n- apples $2\nHow much do 3 apples cost?"
    assert clean_generated_text(text) == text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("Question:", "empty"),
        ("<think>Let me think about a good problem for a long time", "empty"),
        (QUESTION + " " + "More details follow. " * 60, "too_long"),
        (QUESTION + "\n#### 6", "contains_answer"),
        ("What is $\\frac{1}{2} + \\frac{1}{3}$? The result is \\boxed{5/6}.", "contains_answer"),
        (QUESTION + "\n\nSolution: 24 - 18 = 6.", "contains_answer"),
        (QUESTION + "\nAnswer: 6", "contains_answer"),
        (QUESTION + " The answer is 6.", "contains_answer"),
        ("Write a short story about a friendly dragon.", "no_question"),
        ("Why is the sky blue?", "no_question"),
        ("Tom has 5 apples and 3 pears.", "no_question"),
    ],
)
def test_malformed_generations_are_rejected_with_their_reason(raw, reason):
    assert parse_generated_question(raw, "gsm8k", [], 500) == (None, reason)


def test_number_words_and_math_notation_count_as_quantities():
    assert parse_generated_question("A dozen eggs cost three dollars. What does one egg cost?", "gsm8k", [], 500)[0]
    assert parse_generated_question("Simplify $\\sqrt{x} \\cdot x$.", "math", [], 500)[0]
    assert parse_generated_question("Simplify $\\sqrt{x} \\cdot x$.", "gsm8k", [], 500) == (None, "no_question")


def test_copies_of_a_seed_are_rejected():
    seeds = gsm8k_questions("train", 3)
    copies = [
        seeds[1],
        "  " + "  ".join(seeds[1].lower().split()),  # reworded whitespace and case
        seeds[2].replace("$", "").replace(".", " ."),  # punctuation
        "Problem: " + seeds[0].replace("48", "52"),  # one number changed
    ]
    for copy in copies:
        assert parse_generated_question(copy, "gsm8k", seeds, 1000) == (None, "copy_of_seed"), copy
    fresh = gsm8k_questions("test", 1)[0]
    assert parse_generated_question(fresh, "gsm8k", seeds, 1000) == (fresh, "ok")


# ---------------------------------------------------------------------- admission


def stats_of(majority: int, minority: int = 0, missing: int = 0):
    answers = ["7"] * majority + ["9"] * minority + [None] * missing
    clusters = [0] * majority + [1] * minority + [-1] * missing
    if minority > majority:
        clusters = [1] * majority + [0] * minority + [-1] * missing
    return stats_from_clusters(answers, clusters)


@pytest.mark.parametrize(
    ("majority", "minority", "missing", "expected"),
    [
        (8, 0, 0, (False, "unanimous")),
        (7, 1, 0, (True, "admitted")),
        (6, 2, 0, (True, "admitted")),
        (5, 3, 0, (True, "admitted")),
        (4, 4, 0, (False, "low_agreement")),
        (4, 2, 2, (False, "low_agreement")),
        (5, 0, 3, (True, "admitted")),  # one answer cluster, but 3 responses without an answer
        (0, 0, 8, (False, "no_answer")),
    ],
)
def test_admission_at_five_eighths(majority, minority, missing, expected):
    assert admit(stats_of(majority, minority, missing), 5 / 8) == expected


@pytest.mark.parametrize(
    ("majority", "minority", "expected"),
    [(8, 0, (False, "unanimous")), (7, 1, (True, "admitted")), (6, 2, (False, "low_agreement"))],
)
def test_admission_at_seven_eighths(majority, minority, expected):
    assert admit(stats_of(majority, minority), 7 / 8) == expected


def test_task_thresholds_and_real_responses(clusterer):
    config = GenerationConfig()
    assert admit_threshold(config, "gsm8k") == admit_threshold(config, "math") == 0.625
    assert admit_threshold(config, "numeric") == 0.875
    five = compute_group_stats(group("12", "12.0", "12", "$12", "12", "3", "4", None), "gsm8k", clusterer)
    assert five.agreement == 5 / 8
    assert admit(five, admit_threshold(config, "gsm8k")) == (True, "admitted")
    assert admit(five, admit_threshold(config, "numeric")) == (False, "low_agreement")
    four = compute_group_stats(group("12", "12", "12", "12", "3", "3", "4", None), "gsm8k", clusterer)
    assert admit(four, 0.625) == (False, "low_agreement")


def test_config_rejects_bad_thresholds():
    with pytest.raises(ValueError):
        GenerationConfig(admit_threshold=0.0)
    with pytest.raises(ValueError):
        GenerationConfig(near_duplicate_threshold=1.5)
    with pytest.raises(ValueError):
        GenerationConfig(num_shots=0)


# ---------------------------------------------------------------------- a full round


def seeded_pool(count: int = 40) -> PromptPool:
    pool = PromptPool(seed=1)
    for i, q in enumerate(gsm8k_questions("train", count)):
        pool.add(q, "gsm8k", data_source="openai/gsm8k")
        if i < 12:
            pool.add_oracle_label(prompt_id("openai/gsm8k", q), str(i), step=0, majority_correct=True)
    return pool


def seeds_in(messages) -> list[str]:
    return re.findall(r"Example \d+:\n(.*?)(?:\n\n|$)", messages[0]["content"], flags=re.DOTALL)


class ScriptedWriter:
    """Writes the i-th scripted text for the i-th prompt; ``SEED`` copies the prompt's first example."""

    SEED = object()

    def __init__(self, script):
        self.script = script
        self.prompts = []

    async def __call__(self, prompts):
        self.prompts.extend(prompts)
        out = []
        for messages, item in zip(prompts, self.script, strict=False):
            out.append("Question: " + seeds_in(messages)[0].upper() if item is self.SEED else item)
        return out


class ScriptedAnswerer:
    """Answers each question with a fixed group of 8 responses looked up by question text."""

    def __init__(self, groups: dict[str, list[str]]):
        self.groups = groups
        self.calls = []

    async def __call__(self, questions):
        self.calls.append(list(questions))
        return [self.groups[q] for q in questions]


async def test_round_admits_exactly_the_almost_solved_questions(clusterer):
    pool = seeded_pool()
    size_before = len(pool)
    fresh = gsm8k_questions("test", 8)
    script = [
        fresh[0],  # 6/8: admitted
        f"Problem: {fresh[1]}",  # 5/8: admitted
        fresh[2],  # unanimous
        fresh[3],  # 4/8: low agreement
        fresh[4],  # no answers
        fresh[5],  # 7/8: admitted
        fresh[0].lower(),  # duplicate of a question written earlier in the round
        ScriptedWriter.SEED,  # copy of its own seed
        "",  # empty
        fresh[6] + "\n#### 42",  # contains the answer
        "Write me a haiku about autumn leaves.",  # no question
        "x" * 50 + "? 1" + "y" * 1000,  # too long
        pool.get(prompt_id("openai/gsm8k", gsm8k_questions("train", 30)[25])).question,  # duplicate of a pool prompt
    ]
    groups = {
        fresh[0]: group("5", "5", "5", "5", "5", "5", "6", "7"),
        fresh[1]: group("8", "8", "8", "8", "8", "1", "2", None),
        fresh[2]: group(*["3"] * 8),
        fresh[3]: group("4", "4", "4", "4", "1", "1", "2", "2"),
        fresh[4]: group(*[None] * 8),
        fresh[5]: group("1,000", "1000", "1000", "1000", "1000", "1000", "1000", "999"),
    }
    writer, answerer = ScriptedWriter(script), ScriptedAnswerer(groups)
    config = GenerationConfig(num_questions=len(script), num_shots=3)

    result = await run_generation_round(pool, config, "gsm8k", 7, writer, answerer, clusterer)

    assert isinstance(result, GenerationRound)
    seed_questions = {e.question for e in pool.seeds()}
    assert len(writer.prompts) == len(script)
    for messages in writer.prompts:
        shown = seeds_in(messages)
        assert len(shown) == 3 and set(shown) <= seed_questions
    assert answerer.calls == [fresh[:6]]
    assert (result.generated, result.parsed, result.admitted) == (13, 6, 3)
    assert dict(result.rejected) == {
        "unanimous": 1,
        "low_agreement": 1,
        "no_answer": 1,
        "duplicate": 2,
        "copy_of_seed": 1,
        "empty": 1,
        "contains_answer": 1,
        "no_question": 1,
        "too_long": 1,
    }
    assert result.admitted_ids == [prompt_id(GENERATED_SOURCE, q) for q in (fresh[0], fresh[1], fresh[5])]
    entries = [pool.get(pid) for pid in result.admitted_ids]
    labels = [(e.label, e.label_source, e.step_added) for e in entries]
    assert labels == [("5", "self", 7), ("8", "self", 7), ("1000", "self", 7)]  # as extracted
    assert len(pool) == size_before + 3 and pool.counts()["generated"] == 3
    rows = pool.take_for_training(10)
    assert [r["extra_info"]["question"] for r in rows] == [fresh[0], fresh[1], fresh[5]]
    assert all(r["extra_info"]["provenance"] == "generated" for r in rows)

    metrics = result.metrics()
    assert metrics["coact/gen/generated"] == 13 and metrics["coact/gen/admitted"] == 3
    assert metrics["coact/gen/parsed"] == 6
    assert metrics["coact/gen/admission_rate"] == pytest.approx(3 / 13)
    assert {f"coact/gen/rejected_{r}" for r in REJECT_REASONS} <= set(metrics)
    assert metrics["coact/gen/rejected_duplicate"] == 2 and metrics["coact/gen/rejected_too_long"] == 1
    assert metrics["coact/gen/agreement_mean"] == pytest.approx((6 + 5 + 8 + 4 + 0 + 7) / 8 / 6)


async def test_a_second_round_rejects_what_the_first_admitted(clusterer):
    pool = seeded_pool()
    fresh = gsm8k_questions("test", 1)[0]
    answerer = ScriptedAnswerer({fresh: group("5", "5", "5", "5", "5", "5", "6", "7")})
    config = GenerationConfig(num_questions=1)
    first = await run_generation_round(pool, config, "gsm8k", 1, ScriptedWriter([fresh]), answerer, clusterer)
    again = await run_generation_round(pool, config, "gsm8k", 2, ScriptedWriter([fresh]), answerer, clusterer)
    assert first.admitted == 1 and again.admitted == 0 and again.rejected == {"duplicate": 1}
    assert len(answerer.calls) == 1


async def test_numeric_rounds_use_the_stricter_threshold(clusterer):
    pool = seeded_pool()
    fresh = "A cart of mass 2 kg moves at 3 m/s. What is its kinetic energy in joules?"
    answerer = ScriptedAnswerer({fresh: group("9", "9", "9", "9", "9", "9", "1", "2")})  # 6/8
    config = GenerationConfig(num_questions=1)
    result = await run_generation_round(pool, config, "numeric", 1, ScriptedWriter([fresh]), answerer, clusterer)
    assert result.admitted == 0 and result.rejected == {"low_agreement": 1}
    looser = GenerationConfig(num_questions=1, admit_threshold_numeric=0.75)
    result = await run_generation_round(pool, looser, "numeric", 1, ScriptedWriter([fresh]), answerer, clusterer)
    assert result.admitted == 1


async def test_no_seeds_means_no_round(clusterer):
    pool = PromptPool()
    pool.add("Ava has 3 pens and buys 4 more. How many pens does she have?", "gsm8k")

    async def must_not_be_called(_):
        raise AssertionError("called without seeds")

    result = await run_generation_round(
        pool, GenerationConfig(), "gsm8k", 0, must_not_be_called, must_not_be_called, clusterer
    )
    assert (result.generated, result.admitted, result.seeds_available) == (0, 0, 0)
    assert result.metrics()["coact/gen/admission_rate"] == 0.0


async def test_callables_must_return_one_item_per_input(clusterer):
    pool = seeded_pool()

    async def too_few(prompts):
        return prompts[:-1]

    with pytest.raises(ValueError, match="write_questions"):
        await run_generation_round(pool, GenerationConfig(num_questions=2), "gsm8k", 0, too_few, too_few, clusterer)

    fresh = gsm8k_questions("test", 1)[0]
    with pytest.raises(ValueError, match="answer_questions"):
        await run_generation_round(
            pool, GenerationConfig(num_questions=1), "gsm8k", 0, ScriptedWriter([fresh]), too_few, clusterer
        )
    silent = ScriptedAnswerer({fresh: []})  # no responses at all
    result = await run_generation_round(
        pool, GenerationConfig(num_questions=1), "gsm8k", 0, ScriptedWriter([fresh]), silent, clusterer
    )
    assert result.rejected == {"no_answer": 1} and result.agreements == []


# ---------------------------------------------------------------------- prompt length limit


async def test_questions_too_long_for_the_rollout_are_rejected_not_raised(clusterer):
    """A question under ``max_question_chars`` whose prompt still exceeds the rollout's prompt limit is counted
    as ``prompt_too_long`` and never reaches the rollout (which refuses it, as verl's server does)."""
    pool = seeded_pool()
    fresh = gsm8k_questions("test", 2)
    long_question = fresh[1] + " Every figure in this problem is given in whole units." * 12
    assert len(long_question) < GenerationConfig().max_question_chars
    limit = 100

    def prompt_tokens(question: str) -> int:  # a stand-in tokenizer: words of the answer prompt
        return len(f"{question} {TASK_INSTRUCTIONS['gsm8k']}".split())

    assert prompt_tokens(fresh[0]) <= limit < prompt_tokens(long_question)

    class Rollout(ScriptedAnswerer):
        async def __call__(self, questions):
            for question in questions:
                if prompt_tokens(question) > limit:
                    raise ValueError(f"prompt of {prompt_tokens(question)} tokens exceeds {limit}")
            return await super().__call__(questions)

    answerer = Rollout({fresh[0]: group("5", "5", "5", "5", "5", "5", "6", "7")})
    config = GenerationConfig(num_questions=2)
    writer = ScriptedWriter([fresh[0], long_question])
    with pytest.raises(ValueError, match="exceeds"):  # what happens without a limit
        await run_generation_round(pool, config, "gsm8k", 1, writer, answerer, clusterer)

    result = await run_generation_round(
        seeded_pool(),
        config,
        "gsm8k",
        1,
        ScriptedWriter([fresh[0], long_question]),
        answerer,
        clusterer,
        prompt_tokens=prompt_tokens,
        max_prompt_tokens=limit,
    )
    assert (result.generated, result.parsed, result.admitted) == (2, 1, 1)
    assert dict(result.rejected) == {"prompt_too_long": 1}
    assert answerer.calls[-1] == [fresh[0]]
    metrics = result.metrics()
    assert metrics["coact/gen/rejected_prompt_too_long"] == 1 and metrics["coact/gen/rejected_too_long"] == 0

    with pytest.raises(ValueError, match="max_prompt_tokens"):
        await run_generation_round(pool, config, "gsm8k", 1, writer, answerer, clusterer, max_prompt_tokens=100)
