"""Hardening of the service against hostile or careless callers, each with the trigger that once broke it."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from oracle_testlib import ADMIN, TRAINER, _children, query_body

from coact_verl.oracle.backends import Candidate, LabelQuery
from coact_verl.oracle.service.db import Store

JSON = {"content-type": "application/json"}


@pytest.fixture
def svc(service_factory):
    return service_factory()


def _annotator(svc) -> str:
    with svc.client(ADMIN) as admin:
        return admin.post("/v1/annotators", json={"name": "a"}).json()["token"]


def _raw(body: dict, **extra: str) -> bytes:
    """``body`` as JSON with raw (non-standard) tokens appended as extra fields, e.g. ``zzz="NaN"``."""
    text = json.dumps(body)[:-1]
    for name, token in extra.items():
        text += f', "{name}": {token}'
    return (text + "}").encode()


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", '"\\ud800"', '["\\udfff", 1e999]'])
def test_invalid_bodies_get_a_422_that_serialises(svc, token):
    """Any body that fails validation and holds a non-finite number or a lone surrogate: 422, not 500, and the
    keep-alive connection stays usable."""
    annotator = _annotator(svc)
    vote = {"key": "k", "ticket": "t", "picked": "a"}
    with svc.client(annotator) as a, svc.client() as trainer:
        for client, path, body in (
            (a, "/v1/votes", _raw(vote, zzz=token)),
            (a, "/v1/votes/batch", _raw({"votes": [vote]}, zzz=token)),
            (trainer, "/v1/queries", _raw({**query_body(1), "prompt": "x"}, zzz=token)),
            (trainer, "/v1/queries", _raw({k: v for k, v in query_body(1).items() if k != "prompt"}, prompt=token)),
            (trainer, "/v1/queries", _raw({k: v for k, v in query_body(1).items() if k != "step"}, step=token)),
        ):
            reply = client.post(path, content=body, headers=JSON)
            assert reply.status_code == 422, (path, body, reply.text)
            assert reply.json()["detail"], reply.text  # serialised, parseable
            assert client.get("/healthz").status_code == 200  # same connection, still open
        # the literal examples
        reply = a.post("/v1/votes", content=b'{"key": "k", "ticket": "t", "picked": "a", "zzz": NaN}', headers=JSON)
        assert reply.status_code == 422
        reply = trainer.post("/v1/queries", content=_raw({**query_body(1), "prompt": "PLACEHOLDER"}), headers=JSON)
        assert reply.status_code == 200
        body = json.dumps({**query_body(2), "prompt": "PLACEHOLDER"}).replace("PLACEHOLDER", "\\ud800")
        assert trainer.post("/v1/queries", content=body.encode(), headers=JSON).status_code == 422


def test_422_echo_is_truncated(svc):
    with svc.client() as trainer:
        reply = trainer.post("/v1/queries", json={**query_body(1), "prompt": "x" * 200_001, "step": -1})
    assert reply.status_code == 422 and len(reply.content) < 5_000
    assert {e["loc"][-1] for e in reply.json()["detail"]} == {"prompt", "step"}


def test_key_reused_with_another_body_is_409(svc):
    """Reusing a key with another prompt used to return the first prompt's label silently."""
    with svc.client() as trainer:
        first = trainer.post("/v1/queries", json=query_body(1)).json()
        assert first["status"] == "labeled"
        assert trainer.post("/v1/queries", json=query_body(1)).json() == first  # a true replay
        for other in (
            query_body(2, key="k1"),
            {**query_body(1), "step": 3},
            {**query_body(1), "task": "math"},
            query_body(1, answers=("1001", "8")),
        ):
            reply = trainer.post("/v1/queries", json=other)
            assert reply.status_code == 409, (other, reply.text)
        assert trainer.get("/v1/budget").json()["spent"] == 1
        labels = trainer.get("/v1/labels").json()["labels"]
        assert [(r["key"], r["prompt_id"]) for r in labels] == [("k1", "p1")]


def _raw_request(url: str, head: str, body: bytes = b"", wait_s: float = 5.0) -> tuple[int, float]:
    """Send ``head`` (request line and headers) and ``body`` on a fresh connection, keep it open, and return the
    status of the answer and the seconds it took (status 0: no answer within ``wait_s``)."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return 0, time.monotonic() - started
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - started


def _head(method: str, path: str, length: int, token: str | None = None, extra: str = "") -> str:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
            f"{auth}{extra}")  # fmt: skip


def test_auth_is_checked_before_the_body_is_read(svc):
    """A 15 MB body announced to ``POST /v1/budget`` without a token (or with the wrong role) is refused at once,
    before any of it is sent; a body over the route's limit too."""
    annotator = _annotator(svc)
    for token, path, expected in (
        (None, "/v1/budget", 401),
        ("wrong", "/v1/budget", 401),
        (TRAINER, "/v1/budget", 403),
        (annotator, "/v1/gold", 403),
        (TRAINER, "/v1/votes/batch", 403),
        (annotator, "/v1/votes", 413),  # a vote is a few hundred bytes: its limit is 16 KiB
        (ADMIN, "/v1/budget", 413),
    ):
        status, took = _raw_request(svc.url, _head("POST", path, 15_000_000, token), b"[")
        assert (status, path) == (expected, path) and took < 2.0, (token, path, status, took)


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_slow_bodies_time_out_and_huge_headers_are_refused(service_factory, http):
    svc = service_factory("--body-timeout", "1", "--http", http)
    status, took = _raw_request(svc.url, _head("POST", "/v1/queries", 10_000_000, TRAINER), b"0123456789")
    assert status == 408 and 0.9 < took < 4.0, (status, took)
    status, _ = _raw_request(svc.url, _head("POST", "/v1/queries", 2, TRAINER, "X-Big: " + "a" * 200_000 + "\r\n"))
    assert status == 431
    with svc.client() as trainer:  # the service is still fine
        assert trainer.post("/v1/queries", json=query_body(1)).json()["status"] == "labeled"


def test_annotator_quotas(service_factory):
    """An annotator that writes faster than its quota gets 429 with Retry-After; others are unaffected."""
    svc = service_factory("--annotator-rps", "1", "--annotator-bytes-per-s", "1000")
    with svc.client(ADMIN) as admin:
        tokens = [admin.post("/v1/annotators", json={"name": n}).json()["token"] for n in "ab"]
    edit = {"key": "e", "prompt_id": "p", "prompt": "q", "task": "math", "original": "x", "edited": "y"}
    with svc.client(tokens[0]) as a, svc.client(tokens[1]) as b:
        statuses = [a.post("/v1/edits", json={**edit, "key": f"e{i}"}).status_code for i in range(15)]
        assert statuses[:10] == [200] * 10 and statuses[-1] == 429, statuses  # a burst of 10 s, then 1/s
        reply = a.post("/v1/edits", json=edit)
        assert reply.status_code == 429 and int(reply.headers["retry-after"]) >= 1
        assert b.post("/v1/edits", json=edit).status_code == 200
        big = {**edit, "key": "big", "original": "x" * 3_000_000}  # over the byte burst (16 MiB) only in total
        assert [b.post("/v1/edits", json={**big, "key": f"big{i}"}).status_code for i in range(7)][-1] == 429


def test_pages_are_bounded_by_bytes(service_factory):
    """Long prompts: a page of labels or pairs ends once its texts reach ``--page-max-bytes``, and paging on
    returns every record once."""
    svc = service_factory("--page-max-bytes", "100000")
    with svc.client() as trainer:
        for i in range(12):
            body = {**query_body(i), "prompt": f"{i} " + "x" * 40_000}
            assert trainer.post("/v1/queries", json=body).json()["status"] == "labeled"
        seen, since, pages = [], 0, 0
        while True:
            page = trainer.get("/v1/labels", params={"since_id": since, "limit": 5000})
            assert len(page.content) < 250_000
            labels = page.json()["labels"]
            if not labels:
                break
            assert len(labels) <= 3
            seen += [r["key"] for r in labels]
            since, pages = page.json()["next_since_id"], pages + 1
        assert seen == [f"k{i}" for i in range(12)] and pages >= 4
    annotator = _annotator(svc)
    edit = {"prompt_id": "p", "prompt": "q", "task": "math", "original": "x" * 40_000, "edited": "y"}
    with svc.client(annotator) as a:
        for i in range(6):
            assert a.post("/v1/edits", json={**edit, "key": f"e{i}"}).status_code == 200
    with svc.client(ADMIN) as admin:
        admin.put("/v1/annotators/1/trust", json={"trust": 1.0})
    with svc.client() as trainer:
        page = trainer.get("/v1/feedback/pairs", params={"limit": 1000}).json()
        assert 1 <= len(page["pairs"]) <= 3 and page["next_since_id"] == page["pairs"][-1]["id"]


def test_a_database_locked_by_another_process_does_not_freeze_the_service(svc):
    """Another process holds ``BEGIN IMMEDIATE`` for 3 s: ``/healthz`` keeps answering at once, the query waits for
    the lock and then succeeds, and the wait is logged and counted."""
    with svc.client() as trainer:
        assert trainer.post("/v1/queries", json=query_body(1)).status_code == 200
    other = sqlite3.connect(svc.db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            with svc.client() as trainer:
                pending = pool.submit(trainer.post, "/v1/queries", json=query_body(2))
                time.sleep(0.5)
                with svc.client(token="") as probe:
                    for _ in range(5):
                        started = time.monotonic()
                        assert probe.get("/healthz").status_code == 200
                        assert time.monotonic() - started < 0.5
                        time.sleep(0.4)
                assert not pending.done()
                other.execute("COMMIT")
                assert pending.result(10).json()["status"] == "labeled"
    finally:
        other.close()
    with svc.client(token="") as probe:
        metrics = probe.get("/metrics").text
    assert "oracle_db_slow_calls_total 1" in metrics, metrics
    assert "took" in svc.log.read_text()


def test_recovery_labels_every_charged_query(service_factory):
    """1,300 queries charged but never labelled (the service died between charge and label): after a restart
    every one of them gets its label (recovery used to stop at 1,000)."""
    svc = service_factory("--equivalence", "exact")
    svc.stop()
    store = Store(str(svc.db))
    queries = [
        LabelQuery(0, f"stuck-{i}", f"p{i % 400}", "q", "gsm8k", 0, (Candidate(str(1000 + i % 400), "r", 1),))
        for i in range(1300)
    ]
    out = store.reserve_many(queries, needs_gold=True, initial="labeling")
    assert [r.status for r in out] == ["labeling"] * 1300  # type: ignore[union-attr]
    store.close()
    svc.restart()
    deadline, labels = time.monotonic() + 60, []
    with svc.client() as trainer:
        while len(labels) < 1300 and time.monotonic() < deadline:
            time.sleep(0.5)
            labels, since = [], 0
            while page := trainer.get("/v1/labels", params={"since_id": since, "limit": 5000}).json()["labels"]:
                labels += page
                since = page[-1]["id"]
    assert len(labels) == 1300 and all(r["label"]["correct"] == [True] for r in labels)
    assert Store(str(svc.db)).unfinished(10_000) == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_of_the_supervisor_takes_its_workers_and_a_restart_succeeds(service_factory):
    svc = service_factory("--workers", "2")
    assert svc.proc is not None
    deadline = time.monotonic() + 30
    while len(workers := _children(svc.proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) >= 2
    svc.proc.kill()  # the supervisor only
    svc.proc.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for pid in left:  # do not leak them from the test either way
        os.kill(pid, signal.SIGKILL)
    assert left == [], "workers outlived their supervisor"
    svc.restart()  # same port
    with svc.client() as trainer:
        assert trainer.post("/v1/queries", json=query_body(1)).json()["status"] == "labeled"


def test_one_query_with_slow_answers_does_not_hold_another(service_factory):
    """Four answers that each run math-verify to its timeout: the query pays for them (3 s per answer), while an
    unrelated query that needs math-verify meanwhile is answered from the other lane (with one lane, as before,
    it waited for all four)."""
    svc = service_factory("--verify-lanes", "2", "--verify-timeout", "3")
    slow = ("9^{9^{9}}", "8^{8^{8^{8}}}", "7^{7^{7^{7}}}", "6^{6^{6^{6^{6}}}}")
    with concurrent.futures.ThreadPoolExecutor(2) as pool, svc.client(timeout_s=120) as trainer:
        warm = [pool.submit(trainer.post, "/v1/queries", json=query_body(i, answers=(f"\\sqrt{{{(1000 + i) ** 2}}}",)))
                for i in (10, 11)]  # fmt: skip  # start both lanes' workers
        assert [w.result().json()["label"]["correct"] for w in warm] == [[True], [True]]
        started = time.monotonic()
        held = pool.submit(trainer.post, "/v1/queries", json=query_body(1, answers=slow))
        time.sleep(1.0)
        quick_started = time.monotonic()
        quick = trainer.post("/v1/queries", json=query_body(2, answers=("\\sqrt{1004004}",))).json()
        quick_s = time.monotonic() - quick_started
        assert quick["label"]["correct"] == [True] and quick_s < 5.0, quick_s  # one lane: about 11 s here
        assert not held.done()
        assert held.result().json()["label"]["correct"] == [False] * 4
        assert time.monotonic() - started < 4 * 3 + 15  # each answer stopped at its timeout


def test_files_are_private_and_docs_off(svc):
    for suffix in ("", "-wal", "-shm", "-lock"):
        path = Path(f"{svc.db}{suffix}")
        assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    with svc.client(token="") as c:
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").status_code == 200


def test_gold_is_written_only_when_it_changed(tmp_path):
    store = Store(str(tmp_path / "g.sqlite"))
    assert store.put_gold({"p1": "1", "p2": "2"}) == 2
    before = store.conn.total_changes
    wal = Path(f"{store.path}-wal").stat().st_size
    assert store.put_gold({"p1": "1", "p2": "2"}) == 0  # a restart with the same gold file
    assert store.conn.total_changes == before and Path(f"{store.path}-wal").stat().st_size == wal
    assert store.put_gold({"p1": "1", "p2": "22", "p3": "3"}) == 2 and store.gold_count() == 3
    store.close()


def test_unanswered_human_tasks_expire_and_are_refunded(service_factory):
    svc = service_factory("--human-task-ttl", "1", backend="human")
    annotator = _annotator(svc)
    with svc.client() as trainer:
        assert trainer.post("/v1/queries", json=query_body(1)).json()["status"] == "pending"
        assert trainer.get("/v1/budget").json()["spent"] == 1
        deadline = time.monotonic() + 10
        while trainer.get("/v1/budget").json()["spent"] != 0:
            assert time.monotonic() < deadline, "the task never expired"
            time.sleep(0.2)
        with svc.client(annotator) as a:
            assert a.get("/v1/tasks/next").json() == {"task": None}
        again = trainer.post("/v1/queries", json=query_body(1)).json()  # the key may be sent again
        assert again["status"] == "pending" and again["budget"]["spent"] == 1


def test_tokens_from_files_and_a_warning_for_flags(tmp_path, monkeypatch, caplog):
    from coact_verl.oracle import cli

    (tmp_path / "admin").write_text("from-file\n")
    monkeypatch.delenv(cli.ADMIN_TOKEN_ENV, raising=False)
    monkeypatch.setenv(cli.TRAINER_TOKEN_ENV, "from-env")
    parser = argparse.ArgumentParser()
    cli.add_oracle_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["oracle", "serve", "--admin-token-file", str(tmp_path / "admin")])
    cli._tokens_from_files(args)
    settings = cli.settings_from_args(args)
    assert (settings.admin_token, settings.trainer_token) == ("from-file", "from-env")
    assert "visible" not in caplog.text
    cli._tokens_from_files(parser.parse_args(["oracle", "serve", "--admin-token", "on-the-command-line"]))
    assert "--admin-token on the command line is visible" in caplog.text
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SystemExit):
        cli._tokens_from_files(parser.parse_args(["oracle", "serve", "--trainer-token-file", str(tmp_path / "empty")]))


def test_candidate_texts_are_stored_once(tmp_path):
    """A run resends the same long responses: each distinct text is stored once, and read back whole."""
    store = Store(str(tmp_path / "t.sqlite"))
    store.put_gold({"p1": "1"})
    long = [f"step {j}: " + "reasoning " * 500 + f"#### {j}" for j in range(4)]
    queries = [
        LabelQuery(
            0,
            f"k{i}",
            "p1",
            "q",
            "gsm8k",
            i,
            tuple(Candidate(str(j), long[j], 1) for j in range(4)) + (Candidate("9", "short", 1),),
        )  # fmt: skip
        for i in range(50)
    ]
    store.reserve_many(queries, needs_gold=True, initial="pending")
    assert store.conn.execute("SELECT COUNT(*) FROM texts").fetchone()[0] == 4
    stored = store.conn.execute("SELECT SUM(LENGTH(candidates)) FROM queries").fetchone()[0]
    assert stored < 50 * 500  # hashes, not 50 × 20 KB of text
    assert store.next_task(1, 60.0).candidates == queries[0].candidates  # type: ignore[union-attr]
    assert store.reserve_many(queries[:1], needs_gold=True, initial="pending")[0].status == "pending"  # a replay
    store.close()


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_request_heads_have_a_deadline_and_a_size_bound(service_factory, http):
    """A head trickled byte by byte, an idle connection and a 20 MB header: 408/431 and closed, not held open, with
    either HTTP parser."""
    svc = service_factory("--head-timeout", "1", "--http", http)
    host, port = svc.url.removeprefix("http://").split(":")
    for opening in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "):
        started = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(opening)
            data = sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5, data
    # slowloris: a byte every 0.3 s keeps the connection busy but never completes the head
    started, data = time.monotonic(), b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijklmnopqrstuvwxyz":
                sock.sendall(bytes([byte]))
                time.sleep(0.3)
                sock.setblocking(False)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    pass
                sock.setblocking(True)
                if data:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5, data
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent, answer = 0, b""
        try:
            while sent < 20_000_000 and not answer:
                sock.sendall(b"a" * 65536)
                sent += 65536
                sock.setblocking(False)
                try:
                    answer = sock.recv(4096)
                except BlockingIOError:
                    pass
                sock.setblocking(True)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if not answer:
            sock.settimeout(5)
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431") and sent < 10_000_000, (answer[:40], sent)  # socket buffers
    with svc.client(token="") as c:  # keep-alive requests on one connection are unaffected
        assert all(c.get("/healthz").status_code == 200 for _ in range(20))
