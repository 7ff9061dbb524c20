"""Starting an oracle service next to the trainer (when ``OracleConfig.url`` is ``None``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import httpx

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from coact_verl.config import OracleConfig


class StartOptions(TypedDict, total=False):
    """Keyword arguments of :func:`start_local_service` that :func:`start_from_config` passes through."""

    port: int
    host: str
    admin_token: str | None
    startup_timeout_s: float
    log_path: str | None


def start_local_service(
    db_path: str,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    backend: str = "gold",
    gold_path: str | None = None,
    budget_total: int | None = None,
    trainer_token: str,
    admin_token: str | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout_s: float = 60.0,
    log_path: str | None = None,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Run ``python -m coact_verl.oracle serve`` on ``host`` and wait until ``/healthz`` answers.

    ``port=0`` lets the service pick a free port (read back from a port file, so there is no race).
    ``trainer_token`` is required (there is no default token). Tokens travel in the environment, not on the command
    line. Output goes to ``log_path`` (default: inherited).
    Returns ``(base_url, process)``; raises ``RuntimeError`` if the service is not healthy within
    ``startup_timeout_s`` seconds (the process is killed then).
    """
    port_file = Path(tempfile.mkdtemp(prefix="coact-oracle-")) / "port"
    cmd = [sys.executable, "-m", "coact_verl.oracle", "serve", "--db", str(db_path), "--host", host]
    cmd += ["--port", str(port), "--port-file", str(port_file), "--backend", backend]
    if gold_path:
        cmd += ["--gold", str(gold_path)]
    if budget_total is not None:
        cmd += ["--budget-total", str(budget_total)]
    cmd += list(extra_args)
    env = dict(os.environ, COACT_ORACLE_TRAINER_TOKEN=trainer_token)
    if admin_token:
        env["COACT_ORACLE_ADMIN_TOKEN"] = admin_token
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
    finally:
        if out is not None:
            out.close()
    deadline = time.monotonic() + startup_timeout_s
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"oracle service exited with code {proc.returncode} during start-up: {cmd}")
        if url is None and port_file.exists():
            url = f"http://{host}:{int(port_file.read_text())}"
        if url is not None:
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    return url, proc
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    stop_local_service(proc)
    raise RuntimeError(f"oracle service not healthy within {startup_timeout_s} s: {cmd}")


def start_from_config(
    config: OracleConfig, *, extra_args: Sequence[str] = (), **kwargs: Unpack[StartOptions]
) -> tuple[str, subprocess.Popen[bytes]]:
    """:func:`start_local_service` with the settings of an :class:`~coact_verl.config.OracleConfig`.

    The service gets the config's trainer token (:meth:`~coact_verl.config.OracleConfig.resolved_token`; the
    trainer generates a random one per run) and its ``db_path`` (``oracle.sqlite`` when ``None``).
    """
    token = config.resolved_token()
    if not token:
        raise ValueError("no trainer token: set coact.oracle.token or $COACT_ORACLE_TRAINER_TOKEN")
    extra = [*config.serve_args, *extra_args]
    return start_local_service(
        config.db_path or "oracle.sqlite",
        backend=config.backend,
        gold_path=config.gold_path,
        budget_total=config.budget_total,
        trainer_token=token,
        extra_args=extra,
        **kwargs,
    )


def stop_local_service(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int | None:
    """Stop a service started by :func:`start_local_service`: SIGTERM, then SIGKILL after ``timeout_s`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
    return proc.returncode
