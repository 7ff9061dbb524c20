"""CoAct's step metrics (:func:`coact_verl.metrics.step_metrics`) and the oracle's budget, once per step."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from coact_verl import metric_keys as keys
from coact_verl.metrics import step_metrics
from coact_verl.step.hooks import StepBatch


class BudgetReader(Protocol):
    def budget(self) -> dict[str, Any] | None:
        """The oracle's budget (``total``, ``spent``, ...), or ``None`` when the service does not answer."""
        ...


def load_gold(path: str | None) -> dict[str, str]:
    """``{prompt_id: answer}`` from a gold parquet/jsonl written by ``coact-verl prepare``; empty without a path."""
    if not path:
        return {}
    import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not installed

    frame = pd.read_json(path, lines=True) if str(path).endswith(".jsonl") else pd.read_parquet(path)
    return dict(zip(frame["prompt_id"].astype(str), frame["answer"].astype(str), strict=True))


class MetricsHook:
    """``coact/...`` metrics of each step; gold answers (``{prompt_id: answer}``) only measure, never reward.

    Args:
        gold: hidden gold answers, or empty.
        same: batch answer-equivalence test over ``(a, b)`` pairs (needed with gold).
        oracle: the oracle service's client for ``coact/oracle/budget_*``, or ``None`` without a service.
        gold_groups: groups per step the gold metrics are estimated on (0: all; see ``step_metrics``).
    """

    state_file = None

    def __init__(
        self,
        gold: Mapping[str, str] | None = None,
        same: Callable[[Sequence[tuple[str | None, str]]], list[bool]] | None = None,
        oracle: BudgetReader | None = None,
        gold_groups: int = 0,
    ) -> None:
        self.gold = dict(gold or {})
        self.same = same
        self.oracle = oracle
        self.gold_groups = gold_groups

    def after_step(self, batch: StepBatch) -> dict[str, float]:
        metrics = (
            step_metrics(batch.infos, batch.uids, gold=self.gold, same=self.same, gold_groups=self.gold_groups)
            if batch.infos
            else {}
        )
        if self.oracle is not None:
            budget = self.oracle.budget()
            if not budget:
                metrics[keys.ORACLE_UNREACHABLE] = 1.0
            else:
                fields = {k: float(v) for k, v in budget.items() if isinstance(v, int | float)}
                metrics.update({keys.ORACLE_BUDGET.format(field=k): v for k, v in fields.items()})
        return metrics

    def rows_for_batch(self, step: int, free: int) -> list[dict[str, Any]]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
