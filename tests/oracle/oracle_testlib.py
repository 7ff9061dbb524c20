"""Helpers for the oracle tests: real services (uvicorn subprocesses on 127.0.0.1) and request bodies."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from coact_verl.oracle.local import start_local_service, stop_local_service

ADMIN = "admin-test-token"
TRAINER = "trainer-test-token"
GOLD = {f"p{i}": str(1000 + i) for i in range(400)}


@dataclass
class Service:
    """A running service and how to restart it on the same port and database."""

    db: Path
    log: Path
    args: list[str]
    backend: str
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self, port: int = 0) -> Service:
        self.url, self.proc = start_local_service(
            str(self.db),
            port,
            backend=self.backend,
            trainer_token=TRAINER,
            admin_token=ADMIN,
            extra_args=self.args,
            log_path=str(self.log),
            startup_timeout_s=30,
        )
        self.starts += 1
        return self

    def restart(self) -> Service:
        return self.start(self.port)

    def kill(self) -> None:
        """SIGKILL the whole service (workers included) and reap it."""
        assert self.proc is not None
        for pid in _children(self.proc.pid):
            _signal(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_local_service(self.proc)

    def client(self, token: str = TRAINER, timeout_s: float = 10.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(p) for p in out.split()]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query_body(i: int, *, key: str | None = None, step: int = 0, answers: tuple[str, ...] | None = None) -> dict:
    """A query for prompt ``p{i}``: first candidate right (gold 1000+i), second wrong."""
    answers = answers or (str(1000 + i), "7")
    return {
        "key": key or f"k{i}",
        "prompt_id": f"p{i}",
        "prompt": f"What is {1000 + i}?",
        "task": "gsm8k",
        "step": step,
        "candidates": [{"answer": a, "response": f"... #### {a}", "votes": 4 - j} for j, a in enumerate(answers)],
    }


class FakeJudge:
    """An OpenAI-compatible chat-completions server (uvicorn in a thread on 127.0.0.1) acting as a judge.

    It marks a candidate correct when its "Final answer" line equals the reference answer in the prompt.
    ``script`` lists what to do for successive calls: ``ok``, ``500``, ``400``, ``garbage`` or ``slow`` (sleeps
    ``slow_s`` seconds, then answers); once exhausted every call is ``ok``.
    """

    def __init__(self, script: list[str] | None = None, slow_s: float = 5.0) -> None:
        self.script, self.slow_s, self.calls = list(script or []), slow_s, []
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request):
            body = await request.json()
            self.calls.append(body)
            action = self.script.pop(0) if self.script else "ok"
            if action in ("500", "400"):
                return JSONResponse({"error": "scripted"}, status_code=int(action))
            if action == "slow":
                await asyncio.sleep(self.slow_s)
            text = body["messages"][-1]["content"]
            ref = re.search(r"Reference answer \(ground truth\):\n(.*)\n", text)
            finals = re.findall(r"^Final answer: (.*)$", text, re.MULTILINE)
            correct = [ref is not None and f.strip() == ref.group(1).strip() for f in finals]
            content = "not json" if action == "garbage" else json.dumps({"correct": correct, "answer": "judge-answer"})
            return {"choices": [{"message": {"role": "assistant", "content": content}}]}

        self.port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1)
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeJudge:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
