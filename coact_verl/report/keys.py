"""The step-metric keys that the report reads (as logged by verl's ``file`` logger during a CoAct run)."""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Mean agreement ρ (largest answer cluster / n) over the batch's prompts, in [0, 1].
AGREEMENT_MEAN = "coact/agreement/mean"
#: Share of the batch's prompts per route, each in [0, 1].
ROUTE_FRACTIONS = {
    "self": "coact/route/self_frac",
    "oracle": "coact/route/oracle_frac",
    "drop": "coact/route/drop_frac",
}
#: Oracle labels charged so far (cumulative), and the total budget (absent when unbounded).
BUDGET_SPENT = "coact/oracle/budget_spent"
BUDGET_TOTAL = "coact/oracle/budget_total"
#: With hidden gold: share of self-labelled prompts whose majority answer is right, in [0, 1].
SELF_LABEL_PRECISION = "coact/self_label/precision"
#: With hidden gold: share of oracle verdicts that are right, in [0, 1].
ORACLE_LABEL_ACCURACY = "coact/oracle/label_accuracy"
#: With hidden gold: share of labelled groups' training responses whose answer is right, in [0, 1].
TRAIN_GOLD_ACCURACY = "coact/reward/gold_acc"

#: verl's validation accuracy: ``val-core/<data_source>/<acc|reward>/<mean@N | maj@N/mean>``.
VALIDATION_ACCURACY = re.compile(r"^val-core/(?P<source>.+)/(?P<var>acc|reward)/(?P<stat>mean@\d+|maj@\d+/mean)$")


def validation_keys(keys: Iterable[str]) -> list[str]:
    """The validation-accuracy keys among ``keys``, ``mean@N`` before ``maj@N``, then by name."""
    found = [(m.group("stat").startswith("maj"), key) for key in keys if (m := VALIDATION_ACCURACY.match(key))]
    return [key for _, key in sorted(found)]


def short_validation_name(key: str) -> str:
    """``val-core/openai/gsm8k/acc/mean@4`` -> ``openai/gsm8k mean@4``."""
    match = VALIDATION_ACCURACY.match(key)
    if match is None:
        return key
    return f"{match.group('source')} {match.group('stat').removesuffix('/mean')}"
