"""Request and response models of the oracle API (v1)."""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

API_VERSION = "1.0.0"
MAX_INT = 2**53  # JSON-safe integers; also well inside SQLite's 64-bit range.
MAX_CANDIDATES = 256  # candidates per query the API takes at all (a service and its runs may cap lower)
Task = Literal["gsm8k", "math", "numeric"]
QueryStatus = Literal["labeled", "pending", "over_budget", "no_gold", "failed"]


def _storable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
    return text


# Bounded, storable text fields (lengths in characters).
Key: TypeAlias = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_storable)]
Answer: TypeAlias = Annotated[str, Field(min_length=0, max_length=10_000), AfterValidator(_storable)]
LongText: TypeAlias = Annotated[str, Field(min_length=0, max_length=200_000), AfterValidator(_storable)]
AnnotatorName: TypeAlias = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CandidateIn(_Strict):
    """A sampled answer: extracted ``answer`` (``null`` if none), full ``response``, and its vote count."""

    answer: Answer | None = None
    response: LongText = ""
    votes: int = Field(1, ge=0, le=1_000_000)


class QueryIn(_Strict):
    """A labelling request; ``key`` makes it idempotent (same key, same stored result, charged once)."""

    key: Key
    prompt_id: Key
    prompt: LongText
    task: Task = "gsm8k"
    step: int = Field(0, ge=0, le=MAX_INT)
    candidates: list[CandidateIn] = Field(min_length=1, max_length=MAX_CANDIDATES)


class LabelOut(BaseModel):
    """The oracle's verdict: one ``correct`` entry per candidate (``null`` = no verdict), the accepted answer."""

    answer: str | None
    correct: list[bool | None]
    source: str


class BudgetOut(BaseModel):
    """Label budget; ``total``/``remaining``/``per_step`` are ``null`` when unbounded."""

    total: int | None
    spent: int
    remaining: int | None
    per_step: int | None = None


class QueryOut(BaseModel):
    """Result of a query, with its run's budget. A query costs one label whatever its number of candidates (capped
    per run); ``no_gold`` costs one too (it tells whether a prompt has gold), once per key; ``over_budget`` costs
    nothing; ``failed`` was refunded."""

    query_id: int
    status: QueryStatus
    label: LabelOut | None
    budget: BudgetOut


class LabelRecord(BaseModel):
    """A stored label, as listed by ``GET /v1/labels``, with its query's ``prompt`` text and ``task``."""

    id: int
    query_id: int
    key: str
    prompt_id: str
    prompt: str
    task: str
    step: int
    label: LabelOut
    annotator: str | None
    created_at: float


class LabelsOut(BaseModel):
    """A page of labels; pass ``next_since_id`` as ``since_id`` to continue."""

    labels: list[LabelRecord]
    next_since_id: int


class BudgetIn(_Strict):
    """New total (and optionally per-step) budget; ``null`` means unbounded. Omitting ``per_step`` keeps it."""

    total: int | None = Field(None, ge=0, le=MAX_INT)
    per_step: int | None = Field(None, ge=0, le=MAX_INT)


class GoldOut(BaseModel):
    """How many gold answers were written, and how many prompts now have one."""

    written: int
    total: int


class AnnotatorIn(_Strict):
    """A new annotator."""

    name: AnnotatorName


class AnnotatorOut(BaseModel):
    """The new annotator's id and bearer token (shown once; only its hash is stored)."""

    id: int
    name: str
    token: str


class TaskCandidate(BaseModel):
    """A candidate as shown to an annotator (no votes, no other verdicts)."""

    index: int
    answer: str | None
    response: str


class TaskOut(BaseModel):
    """A query leased to the calling annotator."""

    query_id: int
    prompt: str
    task: str
    candidates: list[TaskCandidate]


class NextTaskOut(BaseModel):
    """The next task for the calling annotator, or ``null`` when the queue is empty."""

    task: TaskOut | None


class AnswerIn(_Strict):
    """An annotator's verdict: indices of the correct candidates (``[]`` = none correct) and/or a typed answer."""

    correct: list[Annotated[int, Field(ge=0, le=255)]] | None = Field(None, max_length=256)
    answer: Answer | None = None

    @model_validator(mode="after")
    def _something(self) -> AnswerIn:
        if self.correct is None and (self.answer is None or not self.answer.strip()):
            raise ValueError("give `correct` (a list of candidate indices) or a non-empty `answer`")
        return self


class AnswerOut(BaseModel):
    """The stored label of the answered task."""

    query_id: int
    label: LabelOut


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"
    backend: str
