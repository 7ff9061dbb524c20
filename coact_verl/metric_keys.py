"""Every metric key CoAct logs, under one ``coact/`` prefix, each spelled once with its meaning.

A key with ``{fields}`` is a template: fill it with :meth:`str.format` (``ROUTE_FRAC.format(route="self")``).
The README's metrics table is :func:`metrics_table` (``python -m coact_verl.metric_keys README.md`` rewrites
it between the two ``metrics-table`` markers).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

PREFIX = "coact/"


@dataclass(frozen=True)
class MetricDoc:
    """One documented key (or key template) and what it holds."""

    section: str
    key: str
    meaning: str


DOCUMENTED: list[MetricDoc] = []


def _metric(section: str, key: str, meaning: str) -> str:
    if not key.startswith(PREFIX):
        raise ValueError(f"metric {key!r} is not under {PREFIX!r}")
    DOCUMENTED.append(MetricDoc(section, key, meaning))
    return key


_GROUPS = "group step (per batch)"
GROUPS = _metric(_GROUPS, "coact/groups", "CoAct groups in the batch (users' feedback pairs excluded)")
AGREEMENT_MEAN = _metric(_GROUPS, "coact/agreement/mean", "mean share of a group in its largest answer cluster")
AGREEMENT_HIST = _metric(
    _GROUPS, "coact/agreement/hist_le_{upper}", "share of groups with agreement in (previous bin, upper]; bins 0.25-1"
)
ROUTE_FRAC = _metric(_GROUPS, "coact/route/{route}_frac", "share of groups routed `self`, `oracle` or `drop`")
ORACLE_STATUS = _metric(
    _GROUPS, "coact/oracle/status_{status}", "groups whose oracle request ended so (`labeled`, `unavailable`, ...)"
)
ORACLE_CONFIRMED = _metric(
    _GROUPS,
    "coact/oracle/majority_confirmed",
    "groups the router sent to the oracle whose label is their majority answer (the k-NN reference set grows by these)",
)
LABELLED_FRAC = _metric(_GROUPS, "coact/labelled_frac", "share of groups that got a label (self or oracle)")
SELF_LABEL_PRECISION = _metric(
    _GROUPS, "coact/self_label/precision", "with hidden gold: share of self-labels equal to the gold answer"
)
ORACLE_LABEL_ACCURACY = _metric(
    _GROUPS, "coact/oracle/label_accuracy", "with hidden gold: share of oracle verdicts that agree with it"
)
GOLD_GROUPS = _metric(
    _GROUPS, "coact/gold/groups", "with hidden gold: groups the gold metrics were estimated on (a uniform sample)"
)
REWARD_ACCURACY = _metric(
    _GROUPS, "coact/reward/accuracy", "with hidden gold: share of labelled responses whose reward matches gold"
)
REWARD_GOLD_ACC = _metric(
    _GROUPS, "coact/reward/gold_acc", "with hidden gold: share of labelled responses whose answer is right"
)

_ORACLE = "oracle service (per step)"
ORACLE_BUDGET = _metric(_ORACLE, "coact/oracle/budget_{field}", "the service's budget: `total`, `spent`, ...")
ORACLE_UNREACHABLE = _metric(_ORACLE, "coact/oracle/unreachable", "1 when the budget could not be read")

_ROUTER = "router (since the last read)"
ROUTER_FRAC = _metric(_ROUTER, "coact/router/{action}_frac", "share of routed groups per action (self, oracle, drop)")
ROUTER_ORACLE_REASON = _metric(
    _ROUTER, "coact/router/oracle_frac/{reason}", "share of groups sent to the oracle, per reason"
)
ROUTER_DROP_REASON = _metric(_ROUTER, "coact/router/drop_frac/{reason}", "share of groups dropped, per reason")
ROUTER_GROUPS = _metric(_ROUTER, "coact/router/groups", "groups routed")
ROUTER_ORACLE_USED = _metric(_ROUTER, "coact/router/oracle_used_total", "oracle labels the router spent in the run")
ROUTER_REFERENCE_SIZE = _metric(_ROUTER, "coact/router/reference_size", "verified prompts in the k-NN reference set")
ROUTER_BRANCH = _metric(
    _ROUTER,
    "coact/router/branch/{branch}/{stat}",
    "per acquisition branch: `labels`, `changed` (labels that changed the target), `yield`, `share`",
)
ROUTER_TAU_SELF = _metric(_ROUTER, "coact/router/tau_self", "current self-label threshold τ_self")
ROUTER_CALIBRATION = _metric(
    _ROUTER, "coact/router/calibration/{task}/{level}", "estimated P(majority correct) per task and agreement level"
)
ROUTER_CALIBRATION_N = _metric(
    _ROUTER, "coact/router/calibration/{task}/{level}/n", "oracle outcomes behind that estimate"
)
AUDIT = _metric(
    _ROUTER,
    "coact/audit/{stat}",
    "self-label audit: `precision`, `ci_low`, `ci_high` (Wilson 95%), `n`, `guard_events`, `tau_self`",
)

_POOL = "prompt pool and question generation"
POOL_SIZE = _metric(_POOL, "coact/pool/size", "prompts in the pool")
POOL_SIZE_BY = _metric(_POOL, "coact/pool/size_{provenance}", "prompts per provenance (dataset, oracle, generated)")
POOL_SEEDS = _metric(_POOL, "coact/pool/seeds", "oracle-verified prompts usable as few-shot seeds")
POOL_QUEUED = _metric(_POOL, "coact/pool/queued", "prompts waiting to be trained on")
POOL_DUPLICATES_REJECTED = _metric(_POOL, "coact/pool/duplicates_rejected", "duplicates rejected in total")
POOL_DUPLICATES = _metric(_POOL, "coact/pool/duplicates_{kind}", "duplicates rejected, `exact` or `near`")
POOL_LATE_LABELS = _metric(_POOL, "coact/pool/late_labels", "oracle labels that arrived after their step")
POOL_SERVED = _metric(_POOL, "coact/pool/served", "pool prompts put into training batches")
BATCH_PROVENANCE = _metric(_POOL, "coact/batch/provenance_{provenance}", "rows of the batch per provenance")
LATE_LABELS = _metric(_POOL, "coact/late_labels/{count}", "late labels read this step: `late`, `late_unusable`")
LATE_LABELS_UNREACHABLE = _metric(_POOL, "coact/late_labels/unreachable", "1 when the label log could not be read")
GEN_GENERATED = _metric(_POOL, "coact/gen/generated", "questions written in the round")
GEN_PARSED = _metric(_POOL, "coact/gen/parsed", "questions that parsed and passed the checks")
GEN_ADMITTED = _metric(_POOL, "coact/gen/admitted", "questions admitted to the pool")
GEN_ADMISSION_RATE = _metric(_POOL, "coact/gen/admission_rate", "admitted / generated")
GEN_SEEDS_AVAILABLE = _metric(_POOL, "coact/gen/seeds_available", "seeds the round could draw from")
GEN_REJECTED = _metric(_POOL, "coact/gen/rejected_{reason}", "questions rejected, per reason")
GEN_AGREEMENT_MEAN = _metric(_POOL, "coact/gen/agreement_mean", "mean agreement of the answered questions")

_FEEDBACK = "users' feedback and DPO"
FEEDBACK_QUEUED = _metric(_FEEDBACK, "coact/feedback/queued", "preference pairs waiting")
FEEDBACK_RECEIVED = _metric(_FEEDBACK, "coact/feedback/received", "pairs read from the service in the run")
FEEDBACK_SERVED = _metric(_FEEDBACK, "coact/feedback/served", "pairs put into training batches in the run")
FEEDBACK_READ = _metric(_FEEDBACK, "coact/feedback/read", "new pairs read this step")
FEEDBACK_BATCH_ROWS = _metric(_FEEDBACK, "coact/feedback/batch_rows", "rows of the batch that replay a user pair")
FEEDBACK_UNREACHABLE = _metric(_FEEDBACK, "coact/feedback/unreachable", "1 when the pairs could not be read")
DPO_PAIRS = _metric(_FEEDBACK, "coact/dpo/pairs", "pairs in the step's update")
DPO_UPDATE_ROWS = _metric(_FEEDBACK, "coact/dpo/update_rows", "rows trained on in the step's update")


def documented(key: str) -> MetricDoc | None:
    """The entry that documents a logged key (a template's fields match one path segment), or ``None``."""
    for doc in DOCUMENTED:
        if _matches(doc.key, key):
            return doc
    return None


def _matches(template: str, key: str) -> bool:
    regex = "".join(
        "[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[a-z_]+\})", template)
    )
    return re.fullmatch(regex, key) is not None


BEGIN, END = "<!-- metrics-table:begin -->", "<!-- metrics-table:end -->"


def metrics_table() -> str:
    """The README's metrics table (markdown), one row per documented key, grouped by section."""
    lines = ["| metric | what it holds |", "|---|---|"]
    section = None
    for doc in DOCUMENTED:
        if doc.section != section:
            section = doc.section
            lines.append(f"| **{section}** | |")
        lines.append(f"| `{doc.key}` | {doc.meaning} |")
    return "\n".join(lines)


def readme_table(text: str) -> str | None:
    """The table between the markers of a README text, or ``None`` without markers."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def write_readme_table(path: str | Path) -> bool:
    """Replace the table between the markers of ``path`` by :func:`metrics_table`; ``True`` when it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if readme_table(text) is None:
        raise ValueError(f"{path} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = f"{head}{BEGIN}\n{metrics_table()}\n{END}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    changed = write_readme_table(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print("metrics table updated" if changed else "metrics table up to date")  # noqa: T201
