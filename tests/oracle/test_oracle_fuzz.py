"""Property-based fuzzing of the OpenAPI spec against real services: no 5xx, responses match the spec."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from oracle_testlib import ADMIN, GOLD, TRAINER, Service
from schemathesis import GenerationMode, checks

_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
ANNOTATOR_PATHS = ("/v1/tasks", "/v1/votes", "/v1/edits")  # operations only annotators may call
MAX_EXAMPLES = 25  # per operation and generation mode: bounded so the whole file stays well under a minute


@pytest.fixture(scope="module")
def fuzz_services(tmp_path_factory):
    """A gold service and a human service, each with an annotator token."""
    tmp = tmp_path_factory.mktemp("fuzz")
    gold = tmp / "gold.jsonl"
    gold.write_text("".join(f'{{"prompt_id": "{k}", "answer": "{v}"}}\n' for k, v in list(GOLD.items())[:20]))
    running = []
    for backend in ("gold", "human"):
        args = ["--gold", str(gold), "--budget-total", "30"]
        svc = Service(db=tmp / f"{backend}.sqlite", log=tmp / f"{backend}.log", args=args, backend=backend).start()
        made = httpx.post(
            f"{svc.url}/v1/annotators", json={"name": "fuzz"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        running.append((svc, made.json()["token"]))
    yield running
    for svc, _ in running:
        svc.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_fuzz_no_server_errors(fuzz_services, mode):
    """Every operation, called with a token of a role it admits, on both services."""
    url = fuzz_services[0][0].url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    skipped = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case):
            for svc, annotator in fuzz_services:
                if case.path.startswith(ANNOTATOR_PATHS):
                    token = annotator
                else:
                    token = TRAINER if case.method == "GET" else ADMIN
                case.call_and_validate(
                    base_url=svc.url, headers={"Authorization": f"Bearer {token}"}, checks=_CHECKS, timeout=10
                )

        try:
            run()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # an operation without inputs has no invalid ones
            skipped += 1
    assert skipped <= 4  # operations without parameters (health, budget, next task, annotator quality)
