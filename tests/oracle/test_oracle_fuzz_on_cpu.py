"""Property-based fuzzing of the OpenAPI spec against real services: no 5xx, responses match the spec."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from oracle_testlib import ADMIN, GOLD, TRAINER, Service
from schemathesis import GenerationMode, checks

_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
ANNOTATOR_PATHS = ("/v1/tasks", "/v1/votes", "/v1/edits", "/v1/comparisons/next")  # operations only annotators may call
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


# JSON that Python's parser accepts and strict JSON does not: non-finite numbers, out-of-range numbers, lone surrogates.
HOSTILE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", '"\\ud800"', '"a\\udfffb"', '["\\ud83d", NaN]',
           '{"x": Infinity}']  # fmt: skip


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


def _with_token(body: object, path: list, token: str) -> bytes:
    """``body`` as JSON with the value at ``path`` (or a new key ``zzz``) replaced by the raw ``token``."""
    marker = "\x00HOSTILE\x00"
    target, parent, key = body, None, None
    for step in path:
        if isinstance(target, dict) and target:
            parent, key = target, sorted(target)[step % len(target)]
        elif isinstance(target, list) and target:
            parent, key = target, step % len(target)
        else:
            break
        target = parent[key]
    if parent is None:
        if isinstance(body, dict):
            body = {**body, "zzz": marker}
        else:
            return token.encode()
    else:
        parent[key] = marker
    return json.dumps(body).replace(json.dumps(marker), token).encode()


def test_fuzz_hostile_numbers_and_surrogates(fuzz_services):
    """Valid bodies with one value (or an extra field) replaced by a non-finite number or a lone surrogate: never a
    server error, and every error answer is JSON."""
    url = fuzz_services[0][0].url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    with_body = [op for op in operations if op.method.upper() in ("POST", "PUT") and op.body]
    assert len(with_body) >= 8
    for operation in with_body:

        @given(
            case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            token=st.sampled_from(HOSTILE),
            path=st.lists(st.integers(0, 50), min_size=0, max_size=3),
        )
        @settings(max_examples=MAX_EXAMPLES, deadline=None, phases=[Phase.generate], derandomize=True,
                  suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
        def run(case, token, path):
            content = _with_token(json.loads(json.dumps(case.body)), path, token)
            for svc, annotator in fuzz_services:
                role = annotator if case.path.startswith(ANNOTATOR_PATHS) else ADMIN
                reply = httpx.request(
                    case.method, f"{svc.url}{case.formatted_path}", content=content, timeout=10,
                    headers={"Authorization": f"Bearer {role}", "content-type": "application/json"},
                )  # fmt: skip
                assert reply.status_code < 500, (case.method, case.formatted_path, content[:300], reply.text[:300])
                reply.json()

        run()
