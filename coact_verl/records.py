"""The two data contracts between CoAct and verl, each key spelled once and typed both ways.

* :class:`PromptRow`: one dataset row in verl's schema (``data_source``, chat ``prompt``, ``ability``,
  ``reward_model``, ``extra_info``), written by dataset preparation, the prompt pool and the feedback queue,
  read back by the group step.
* :class:`ResponseInfo`: the per-response ``coact_*`` keys of verl's ``reward_extra_info``, written by the
  group step (both verl paths) and read by metrics, the prompt pool, late labels and the DPO loss.

Readers go through :meth:`PromptRow.from_row` and :meth:`ResponseInfo.from_extra_info`, which turn the
loosely typed values verl hands back (numpy scalars, strings) into typed fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coact_verl.tasks import prompt_text

# ---------------------------------------------------------------------------- shared vocabulary

ROUTE_SELF, ROUTE_ORACLE, ROUTE_DROP = "self", "oracle", "drop"
ROUTE_FEEDBACK, ROUTE_INCOMPLETE = "feedback", "incomplete"
#: ``route_reason`` of a group scored against the label its pool prompt carries (the router was not asked)
REASON_POOL_LABEL = "pool_label"
#: Routes of a CoAct group (``feedback``: a user pair; ``incomplete``: the group never gathered).
ROUTES = (ROUTE_SELF, ROUTE_ORACLE, ROUTE_DROP, ROUTE_FEEDBACK, ROUTE_INCOMPLETE)
SOURCE_SELF, SOURCE_ORACLE, SOURCE_NONE, SOURCE_FEEDBACK = "self", "oracle", "none", "feedback"
#: Where a group's label came from.
LABEL_SOURCES = (SOURCE_SELF, SOURCE_ORACLE, SOURCE_NONE, SOURCE_FEEDBACK)
#: ``oracle_status`` of a group that did not ask the oracle.
ORACLE_NOT_ASKED = "not_asked"
PAIR_CHOSEN, PAIR_REJECTED = "chosen", "rejected"
#: ``extra_info.split`` values that mark an evaluation row (scored alone against its ``ground_truth``).
EVAL_SPLITS = frozenset({"test", "val", "validation", "eval"})

# ---------------------------------------------------------------------------- the dataset row

#: ``extra_info`` keys CoAct adds to a verl dataset row.
ROW_LABEL_KEY = "coact_label"
ROW_LABEL_SOURCE_KEY = "coact_label_source"
ROW_FEEDBACK_KEY = "coact_feedback"
#: Marks a validation row (verl's ``validate`` flag, which verl pops before the reward worker sees the row).
VALIDATE_KEY = "coact_validate"


@dataclass(frozen=True)
class FeedbackPair:
    """A user's preference carried by a feedback row: ``chosen`` ≻ ``rejected`` with a weight > 0."""

    kind: str
    chosen: str
    rejected: str
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chosen": self.chosen, "rejected": self.rejected, "weight": self.weight}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeedbackPair:
        return cls(str(data["kind"]), str(data["chosen"]), str(data["rejected"]), float(data["weight"]))


@dataclass(frozen=True)
class PromptRow:
    """One verl dataset row.

    Attributes:
        prompt_id: :func:`coact_verl.tasks.prompt_id` of ``(data_source, question)``; ``""`` when a row lacks it.
        question: question text without any answer-format instruction.
        task: answer format (``gsm8k``, ``math``, ``numeric``); ``""`` when a row lacks it.
        data_source: verl ``data_source``.
        split: ``train``, ``test``, ``pool``, ``feedback``, ...
        index: position within its split or source.
        content: the user turn; ``None`` builds it from the question and the task's instruction.
        ability: verl ``ability``.
        ground_truth: the gold answer; set on evaluation splits only (training rows never carry it).
        provenance: ``dataset``/``oracle``/``generated`` (prompt pool) or ``feedback``; ``None`` for a prepared
            dataset row, which then carries no label keys.
        label: a label the row already carries (``""``: none).
        label_source: ``oracle``, ``self`` or ``none``.
        feedback: the user pair of a feedback row.
        agent_name: verl agent loop of the row (feedback rows replay their pair instead of sampling).
        validate: marked as a validation row (:data:`VALIDATE_KEY`).
    """

    prompt_id: str
    question: str
    task: str
    data_source: str = ""
    split: str = ""
    index: int = 0
    content: str | None = None
    ability: str = "math"
    ground_truth: str = ""
    provenance: str | None = None
    label: str = ""
    label_source: str = SOURCE_NONE
    feedback: FeedbackPair | None = None
    agent_name: str | None = None
    validate: bool = False

    @property
    def user_turn(self) -> str:
        """The user message the policy sees."""
        return self.content if self.content is not None else prompt_text(self.question, self.task)

    @property
    def given_label(self) -> tuple[str | None, str]:
        """``(answer, source)`` of a label the row carries (late oracle labels, admitted generated questions),
        else ``(None, "none")``."""
        if self.label and self.label_source in (SOURCE_ORACLE, SOURCE_SELF):
            return self.label, self.label_source
        return None, SOURCE_NONE

    @property
    def is_validation(self) -> bool:
        """Scored alone against ``ground_truth``: marked from verl's ``validate`` flag, or an evaluation split."""
        return self.validate or self.split.lower() in EVAL_SPLITS

    def to_row(self) -> dict[str, Any]:
        """The row in verl's schema."""
        row: dict[str, Any] = {
            "data_source": self.data_source,
            "prompt": [{"role": "user", "content": self.user_turn}],
            "ability": self.ability,
            "reward_model": {"style": "rule" if self.ground_truth else "coact", "ground_truth": self.ground_truth},
        }
        if self.agent_name is not None:
            row["agent_name"] = self.agent_name
        extra: dict[str, Any] = {
            "split": self.split,
            "index": self.index,
            "prompt_id": self.prompt_id,
            "task": self.task,
            "question": self.question,
        }
        if self.provenance is not None:
            extra["provenance"] = self.provenance
            extra[ROW_LABEL_KEY] = self.label
            extra[ROW_LABEL_SOURCE_KEY] = self.label_source
        if self.feedback is not None:
            extra[ROW_FEEDBACK_KEY] = self.feedback.to_dict()
        if self.validate:
            extra[VALIDATE_KEY] = True
        row["extra_info"] = extra
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PromptRow:
        """Read a row (or the per-sample fields verl hands an agent loop or a reward manager).

        The chat prompt is ``prompt`` or ``raw_prompt``; keys a stock verl dataset lacks take defaults, and
        ``question`` falls back to the last user turn.
        """
        extra = row.get("extra_info")
        extra = extra if isinstance(extra, Mapping) else {}
        messages = row.get("prompt")
        if messages is None or isinstance(messages, str):
            messages = row.get("raw_prompt")
        users = [m.get("content", "") for m in (messages if messages is not None else ()) if _is_user(m)]
        content = str(users[-1]) if users else None
        reward_model = row.get("reward_model")
        reward_model = reward_model if isinstance(reward_model, Mapping) else {}
        pair = extra.get(ROW_FEEDBACK_KEY)
        agent = row.get("agent_name")
        provenance = extra.get("provenance")
        return cls(
            prompt_id=str(extra.get("prompt_id") or ""),
            question=str(extra.get("question") or content or ""),
            task=str(extra.get("task") or ""),
            data_source=str(row.get("data_source") or ""),
            split=str(extra.get("split") or ""),
            index=int(extra.get("index") or 0),
            content=content,
            ability=str(row.get("ability") or "math"),
            ground_truth=str(reward_model.get("ground_truth") or ""),
            provenance=str(provenance) if provenance else None,
            label=str(extra.get(ROW_LABEL_KEY) or ""),
            label_source=str(extra.get(ROW_LABEL_SOURCE_KEY) or SOURCE_NONE),
            feedback=FeedbackPair.from_dict(pair) if isinstance(pair, Mapping) and pair else None,
            agent_name=str(agent) if agent else None,
            validate=bool(extra.get(VALIDATE_KEY)),
        )


def _is_user(message: Any) -> bool:
    return isinstance(message, Mapping) and message.get("role") == "user"


# ---------------------------------------------------------------------------- the per-response info

#: Prefix of every key CoAct writes into ``reward_extra_info``.
INFO_PREFIX = "coact_"


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "1.0", "true", "yes")
    return bool(float(value))


@dataclass(frozen=True)
class ResponseInfo:
    """What the group step decided for one response; the ``coact_<field>`` keys of ``reward_extra_info``.

    Every response of a batch carries the same keys (verl stacks them into one column per key).

    Attributes:
        prompt_id: the prompt's id (the rollout uid when the row has none).
        agreement: share of the group in its largest answer cluster, in [0, 1].
        entropy: entropy of the cluster sizes, in nats.
        route: ``self``, ``oracle``, ``drop``, ``feedback`` or ``incomplete``.
        route_reason: why (router reason, ``oracle_<status>``, ``pool_label``, the feedback kind, ``gate_timeout``).
        label_source: ``self``, ``oracle``, ``none`` or ``feedback``.
        label: the label answer (``""``: none).
        label_cluster: index of the cluster the label matches (-1: none).
        pred: this response's extracted answer (``""``: none).
        cluster: this response's cluster index (-1: none).
        oracle_status: ``not_asked``, ``labeled`` or the oracle client's failure status.
        reward: this response's reward, in {0, 1}.
        pair_role: ``chosen``/``rejected`` for the group's DPO pair, else ``""``.
        pair_weight: weight of the pair in the DPO loss.
        group_complete: set by the reward-manager path: whether every sibling arrived in time.
        gate_wait_s: set by the reward-manager path: seconds this response waited for its siblings.
    """

    prompt_id: str = ""
    agreement: float = 0.0
    entropy: float = 0.0
    route: str = ROUTE_INCOMPLETE
    route_reason: str = ""
    label_source: str = SOURCE_NONE
    label: str = ""
    label_cluster: int = -1
    pred: str = ""
    cluster: int = -1
    oracle_status: str = ORACLE_NOT_ASKED
    reward: float = 0.0
    pair_role: str = ""
    pair_weight: float = 1.0
    group_complete: bool | None = None
    gate_wait_s: float | None = None

    @staticmethod
    def key(name: str) -> str:
        """The ``reward_extra_info`` key of a field, e.g. ``key("route") == "coact_route"``."""
        if name not in _CONVERTERS:
            raise KeyError(f"ResponseInfo has no field {name!r}")
        return INFO_PREFIX + name

    @staticmethod
    def is_coact(extra_info: Mapping[str, Any] | None) -> bool:
        """Whether a ``reward_extra_info`` came from the group step (validation rows carry other keys)."""
        return extra_info is not None and ROUTE_KEY in extra_info

    def to_extra_info(self) -> dict[str, Any]:
        """Plain ``reward_extra_info`` dict; the two reward-manager fields appear only when set."""
        out: dict[str, Any] = {}
        for name in _CONVERTERS:
            value = getattr(self, name)
            if value is None:
                continue
            out[INFO_PREFIX + name] = float(value) if name == "group_complete" else value
        return out

    @classmethod
    def from_extra_info(cls, extra_info: Mapping[str, Any]) -> ResponseInfo:
        """Typed fields from a ``reward_extra_info`` mapping; absent (or ``None``) keys take the defaults."""
        values: dict[str, Any] = {}
        for name, convert in _CONVERTERS.items():
            value = extra_info.get(INFO_PREFIX + name)
            if value is not None:
                values[name] = convert(value)
        return cls(**values)

    def replace(self, **changes: Any) -> ResponseInfo:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def incomplete(cls, prompt_id: str = "", reason: str = "gate_timeout") -> ResponseInfo:
        """A response whose group never gathered: reward 0, no label, no pair."""
        return cls(prompt_id=prompt_id, route=ROUTE_INCOMPLETE, route_reason=reason)


_CONVERTERS: dict[str, Any] = {
    "prompt_id": str,
    "agreement": float,
    "entropy": float,
    "route": str,
    "route_reason": str,
    "label_source": str,
    "label": str,
    "label_cluster": int,
    "pred": str,
    "cluster": int,
    "oracle_status": str,
    "reward": float,
    "pair_role": str,
    "pair_weight": float,
    "group_complete": _as_bool,
    "gate_wait_s": float,
}
if tuple(_CONVERTERS) != tuple(f.name for f in dataclasses.fields(ResponseInfo)):  # pragma: no cover
    raise RuntimeError("ResponseInfo's fields and their converters differ")
#: ``reward_extra_info`` keys of every response (the two reward-manager keys excluded).
INFO_KEYS: tuple[str, ...] = tuple(INFO_PREFIX + n for n in _CONVERTERS if n not in ("group_complete", "gate_wait_s"))
ROUTE_KEY = INFO_PREFIX + "route"
