"""Capability-aware question generation: seeds -> new questions -> n answers -> admit the almost-solved.

One round (:func:`run_generation_round`):

1. for each new question, sample ``num_shots`` oracle-verified seed questions from the pool and build a
   few-shot chat prompt (:func:`build_generation_prompt`);
2. the policy writes one question per prompt (the ``write_questions`` callable);
3. :func:`parse_generated_question` cleans each text and rejects malformed ones; a question whose prompt
   has more tokens than the rollout takes (``max_prompt_tokens``) is rejected as ``prompt_too_long``;
   duplicates of pool prompts and of questions written earlier in the round are rejected as ``duplicate``;
4. the policy answers each remaining question n times (the ``answer_questions`` callable);
5. :func:`admit` keeps a question when τ_gen ≤ agreement < 1: the model can *almost* solve it. Its majority
   answer becomes its self-label and it joins the pool as ``generated`` (queued for training).

Everything model-facing is a callable, so a round runs without a model in tests.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from coact_verl import metric_keys as keys
from coact_verl.config import GenerationConfig
from coact_verl.consistency import AnswerClusterer, GroupStats, ascore_groups
from coact_verl.pool.dedup import DedupIndex, is_near_duplicate
from coact_verl.pool.pool import GENERATED_SOURCE, PromptPool
from coact_verl.tasks import build_generation_prompt, prompt_id

Messages = list[dict[str, str]]
PARSE_REASONS = ("empty", "too_long", "contains_answer", "no_question", "copy_of_seed")
ADMIT_REASONS = ("no_answer", "unanimous", "low_agreement")
REJECT_REASONS = (*PARSE_REASONS, "prompt_too_long", "duplicate", *ADMIT_REASONS)
ADMITTED = "admitted"
OK = "ok"

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$", re.IGNORECASE)
_LEAD_MARKUP = re.compile(r"^(?:#{1,6}\s+|>\s*|[-*]\s+)")
_INTRO_LINE = re.compile(r"^(?:sure|okay|ok|certainly|absolutely|of course|here)\b[^\n]{0,150}[:!]\s*\n", re.IGNORECASE)
_LABEL = re.compile(
    r"^(?:(?:new|generated)\s+)?(?:math\s+)?(?:word\s+)?(?:question|problem)(?:\s*\d+)?"
    r"(?:\s*[:.)]|\s+[-–—]|[ \t]*\n)\s*",
    re.IGNORECASE,
)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»"}
_ANSWER_MARKERS = re.compile(
    r"####|\\boxed|^\s*(?:final\s+)?(?:answer|solution|explanation)\s*[:：]|\bthe\s+(?:final\s+)?answer\s+is\b",
    re.IGNORECASE | re.MULTILINE,
)
_ASKS = re.compile(
    r"\?|\b(?:find|compute|calculate|determine|evaluate|simplify|solve|express|estimate|convert|what|how|which)\b",
    re.IGNORECASE,
)
_NUMBER_WORDS = (
    r"zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|"
    r"billion|half|halves|twice|thrice|double|triple|dozens?|quarters?|thirds?"
)
_QUANTITY = re.compile(rf"\d|\b(?:{_NUMBER_WORDS})\b", re.IGNORECASE)
_MATH_NOTATION = re.compile(r"[$\\^=]")


def admit_threshold(config: GenerationConfig, task: str) -> float:
    """τ_gen of a task: ``admit_threshold_numeric`` for ``numeric``, else ``admit_threshold``."""
    return config.admit_threshold_numeric if task == "numeric" else config.admit_threshold


def clean_generated_text(text: str) -> str:
    """Strip reasoning blocks, code fences, an intro line, markdown, a ``Question:``-style label and quotes."""
    text = _THINK.sub("", text or "")
    if re.search(r"<think>", text, re.IGNORECASE):  # reasoning that never finished holds no question
        return ""
    text = text.replace("**", "").replace("__", "").strip()
    text = _FENCE.sub("", text).strip()
    for _ in range(3):  # intro lines, markup and labels may nest, e.g. "Sure!\n### Problem 1: ..."
        before = text
        text = _INTRO_LINE.sub("", text, count=1).strip()
        text = _LEAD_MARKUP.sub("", text).strip()
        text = _LABEL.sub("", text).strip()
        if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
            text = text[1:-1].strip()
        if text == before:
            break
    return text


def parse_generated_question(
    text: str, task: str, seeds: Sequence[str], max_chars: int, near_threshold: float = 0.8
) -> tuple[str | None, str]:
    """Clean one generated text and check it; returns ``(question, "ok")`` or ``(None, reason)``.

    The first failing check names the reason:

    * ``empty``: nothing left after cleaning (:func:`clean_generated_text`);
    * ``too_long``: more than ``max_chars`` characters after cleaning;
    * ``contains_answer``: ``####``, ``\\boxed``, an ``Answer:``/``Solution:``/``Explanation:`` line or
      "the answer is";
    * ``no_question``: it does not ask for anything (no ``?`` and none of find/compute/calculate/determine/
      evaluate/simplify/solve/express/estimate/convert/what/how/which), or it holds no quantity (no digit and
      no number word such as "twelve", "half", "dozen"; for ``math`` also no ``$``, ``\\``, ``^`` or ``=``);
    * ``copy_of_seed``: an exact or near duplicate (character 5-gram Jaccard ≥ ``near_threshold``) of a seed.
    """
    question = clean_generated_text(text)
    if not question:
        return None, "empty"
    if len(question) > max_chars:
        return None, "too_long"
    if _ANSWER_MARKERS.search(question):
        return None, "contains_answer"
    has_quantity = _QUANTITY.search(question) or (task == "math" and _MATH_NOTATION.search(question))
    if not _ASKS.search(question) or not has_quantity:
        return None, "no_question"
    if any(is_near_duplicate(question, seed, near_threshold) for seed in seeds):
        return None, "copy_of_seed"
    return question, OK


def admit(stats: GroupStats, threshold: float) -> tuple[bool, str]:
    """Admission of a generated question from its n answers: ``threshold ≤ agreement < 1``.

    Returns ``(True, "admitted")`` or ``(False, reason)`` with reason ``no_answer`` (no response has an
    answer), ``unanimous`` (every response is in the majority cluster) or ``low_agreement``.
    """
    if stats.majority_answer is None or not stats.cluster_sizes:
        return False, "no_answer"
    if stats.cluster_sizes[0] >= stats.n:
        return False, "unanimous"
    if stats.agreement < threshold - 1e-9:
        return False, "low_agreement"
    return True, ADMITTED


@dataclass
class GenerationRound:
    """Counters of one generation round.

    Attributes:
        step: training step of the round.
        task: answer format of the round's questions.
        seeds_available: oracle-verified seeds in the pool when the round started.
        generated: texts the policy wrote.
        parsed: texts that passed parsing and the duplicate checks (and were answered).
        admitted: questions added to the pool.
        rejected: rejections by reason (see ``REJECT_REASONS``).
        admitted_ids: prompt ids of the admitted questions, in order.
        agreements: agreement of every answered question, shape ``(parsed,)``.
    """

    step: int
    task: str
    seeds_available: int = 0
    generated: int = 0
    parsed: int = 0
    admitted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    admitted_ids: list[str] = field(default_factory=list)
    agreements: list[float] = field(default_factory=list)

    @property
    def admission_rate(self) -> float:
        """Admitted / generated (0 when nothing was generated)."""
        return self.admitted / self.generated if self.generated else 0.0

    def metrics(self) -> dict[str, float]:
        """``coact/gen/...`` metrics; every rejection reason is listed (zeros included) so that curves stay aligned."""
        out = {
            keys.GEN_GENERATED: float(self.generated),
            keys.GEN_PARSED: float(self.parsed),
            keys.GEN_ADMITTED: float(self.admitted),
            keys.GEN_ADMISSION_RATE: self.admission_rate,
            keys.GEN_SEEDS_AVAILABLE: float(self.seeds_available),
        }
        out.update({keys.GEN_REJECTED.format(reason=r): float(self.rejected.get(r, 0)) for r in REJECT_REASONS})
        if self.agreements:
            out[keys.GEN_AGREEMENT_MEAN] = sum(self.agreements) / len(self.agreements)
        return out


WriteQuestions = Callable[[list[Messages]], Awaitable[list[str]]]
AnswerQuestions = Callable[[list[str]], Awaitable[list[list[str]]]]
PromptTokens = Callable[[str], int]


async def run_generation_round(
    pool: PromptPool,
    config: GenerationConfig,
    task: str,
    step: int,
    write_questions: WriteQuestions,
    answer_questions: AnswerQuestions,
    clusterer: AnswerClusterer,
    num_questions: int | None = None,
    prompt_tokens: PromptTokens | None = None,
    max_prompt_tokens: int | None = None,
) -> GenerationRound:
    """One generation round; admitted questions are added to ``pool`` (provenance ``generated``, queued).

    Args:
        pool: source of seeds and destination of admitted questions.
        config: ``num_questions``, ``num_shots``, thresholds and ``max_question_chars``.
        task: answer format of the new questions (and of the seeds' prompts).
        step: training step, recorded as the entries' ``step_added``.
        write_questions: chat prompts, shape ``(Q,)`` -> one generated text per prompt, shape ``(Q,)``.
        answer_questions: questions, shape ``(P,)`` -> n responses each, shape ``(P, n)``; the responses
            must end in the task's answer format (e.g. prompt with :data:`~coact_verl.tasks.TASK_INSTRUCTIONS`).
        clusterer: groups the answers (see :func:`coact_verl.consistency.score_groups`).
        num_questions: overrides ``config.num_questions``.
        prompt_tokens: question -> token count of the prompt it is answered and trained with (question and
            answer instruction, chat template applied).
        max_prompt_tokens: the most prompt tokens the rollout takes (verl: ``rollout.prompt_length``, i.e.
            ``data.max_prompt_length``, and below ``rollout.max_model_len``); a longer question is rejected as
            ``prompt_too_long`` before it is answered. Needs ``prompt_tokens``; ``None``: no token limit.

    Returns:
        The round's counters; a pool without seeds gives an empty round (no callable is called).
    """
    if max_prompt_tokens is not None and (prompt_tokens is None or max_prompt_tokens < 1):
        raise ValueError("max_prompt_tokens must be >= 1 and needs prompt_tokens")
    count = config.num_questions if num_questions is None else num_questions
    result = GenerationRound(step=step, task=task, seeds_available=len(pool.seeds()))
    if count <= 0 or result.seeds_available == 0:
        return result
    seed_sets = [[e.question for e in pool.sample_seeds(config.num_shots)] for _ in range(count)]
    prompts = [build_generation_prompt(seeds, task) for seeds in seed_sets]
    texts = await write_questions(prompts)
    if len(texts) != len(prompts):
        raise ValueError(f"write_questions returned {len(texts)} texts for {len(prompts)} prompts")
    result.generated = len(texts)

    round_index = DedupIndex(config.near_duplicate_threshold)
    questions: list[str] = []
    for i, (text, seeds) in enumerate(zip(texts, seed_sets, strict=True)):
        question, reason = parse_generated_question(
            text, task, seeds, config.max_question_chars, config.near_duplicate_threshold
        )
        if question is None:
            result.rejected[reason] += 1
        elif (
            prompt_tokens is not None and max_prompt_tokens is not None and prompt_tokens(question) > max_prompt_tokens
        ):
            result.rejected["prompt_too_long"] += 1
        elif pool.find_duplicate(question) is not None or round_index.add(question, str(i)) is not None:
            result.rejected["duplicate"] += 1
        else:
            questions.append(question)
    result.parsed = len(questions)
    if not questions:
        return result

    responses = await answer_questions(questions)
    if len(responses) != len(questions):
        raise ValueError(f"answer_questions returned {len(responses)} groups for {len(questions)} questions")
    scored = [(q, r) for q, r in zip(questions, responses, strict=True) if r]
    if len(scored) < len(questions):
        result.rejected["no_answer"] += len(questions) - len(scored)
    stats_list = await ascore_groups([list(r) for _, r in scored], task, clusterer) if scored else []
    threshold = admit_threshold(config, task)
    for (question, _), stats in zip(scored, stats_list, strict=True):
        result.agreements.append(stats.agreement)
        admitted, reason = admit(stats, threshold)
        if not admitted:
            result.rejected[reason] += 1
            continue
        added = pool.add(question, task, "generated", label=stats.majority_answer, label_source="self", step=step)
        if not added:
            result.rejected["duplicate"] += 1
            continue
        result.admitted += 1
        result.admitted_ids.append(prompt_id(GENERATED_SOURCE, question))
    return result
