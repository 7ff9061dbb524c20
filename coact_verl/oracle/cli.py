"""``oracle serve``: run the oracle service (``coact-verl oracle serve`` or ``python -m coact_verl.oracle serve``)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from coact_verl.oracle.backends import BACKENDS
from coact_verl.oracle.service.process import SUPERVISOR_PID_ENV
from coact_verl.oracle.service.schemas import MAX_CANDIDATES
from coact_verl.oracle.service.settings import SETTINGS_ENV, OracleSettings

ADMIN_TOKEN_ENV = "COACT_ORACLE_ADMIN_TOKEN"
TRAINER_TOKEN_ENV = "COACT_ORACLE_TRAINER_TOKEN"


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "unbounded") else int(text)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _candidate_cap(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_CANDIDATES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CANDIDATES} (the API's limit), got {text}")
    return value


def _fraction(low: float, high: float, open_low: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not (low < value if open_low else low <= value) or not value <= high:
            raise argparse.ArgumentTypeError(f"must lie in {'(' if open_low else '['}{low}, {high}], got {text}")
        return value

    return parse


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``serve``."""
    defaults = OracleSettings()
    add = parser.add_argument
    add("--db", default=defaults.db_path, help="SQLite file (created if missing)")
    add("--host", default="127.0.0.1", help="bind address")
    add("--port", type=int, default=8765, help="TCP port; 0 picks a free one (see --port-file)")
    add("--port-file", default=None, help="write the bound port to this file once listening")
    add("--backend", choices=sorted(BACKENDS), default=defaults.backend, help="who labels (registered backends)")
    add("--gold", default=None, help="parquet/jsonl with prompt_id and answer, loaded at start")
    add("--budget-total", type=_optional_int, default=None, help="total label budget ('none' = unbounded)")
    add("--budget-per-step", type=_optional_int, default=None, help="labels per training step")
    add("--admin-token", default=os.environ.get(ADMIN_TOKEN_ENV), help=f"admin token (or ${ADMIN_TOKEN_ENV})")
    add("--trainer-token", default=os.environ.get(TRAINER_TOKEN_ENV), help=f"trainer token (or ${TRAINER_TOKEN_ENV})")
    add("--admin-token-file", help="file holding the admin token (first line)")
    add("--trainer-token-file", help="file holding the trainer token (first line)")
    add("--equivalence", default=defaults.equivalence, help="consistency | exact | module:function")
    add("--seed", type=int, default=defaults.seed, help="seed of the simulated annotators")
    add("--sim-annotators", type=int, default=defaults.sim_annotators, help="simulated pool size")
    add("--sim-flip-rate", type=float, default=defaults.sim_flip_rate, help="mean label-flip probability")
    add("--sim-flip-spread", type=float, default=defaults.sim_flip_spread, help="spread of per-annotator flip rates")
    add("--sim-position-bias", type=float, default=defaults.sim_position_bias, help="first-candidate bias")
    add("--judge-url", default=None, help="OpenAI-compatible base URL (…/v1) for llm_judge")
    add("--judge-model", default=defaults.judge_model, help="judge model name")
    add("--judge-api-key-env", default=defaults.judge_api_key_env, help="env variable holding the judge API key")
    add("--judge-timeout", type=float, default=defaults.judge_timeout_s, help="judge request timeout, seconds")
    add("--judge-retries", type=int, default=defaults.judge_retries, help="judge retries")
    add("--judge-without-gold", action="store_true", help="do not show the judge the gold answer")
    add("--judge-max-tokens", type=int, default=defaults.judge_max_tokens, help="judge completion length bound")
    add("--db-synchronous", default=defaults.db_synchronous, choices=("NORMAL", "FULL", "EXTRA"), help="SQLite sync")
    add("--db-threads", action=argparse.BooleanOptionalAction, default=defaults.db_threads,
        help="run SQLite calls in worker threads (off: on the event loop)")  # fmt: skip
    add(
        "--commit-batch",
        type=_positive_int,
        default=defaults.commit_batch,
        help="most queries per transaction (group commit; 1: a commit per query)",
    )
    add(
        "--two-phase",
        action="store_true",
        help="charge and label in separate transactions (answers checked in a thread)",
    )
    add("--no-fast-path", action="store_true", help="serve every request through the FastAPI routes")
    add(
        "--vote-mu",
        type=_fraction(0.5, 1.0, True),
        default=None,
        help="P(stronger model's response is better) in comparison votes; estimated from the votes when not given",
    )
    add(
        "--vote-min-eta",
        type=_fraction(0.0, 1.0, False),
        default=defaults.vote_min_eta,
        help="default attentiveness threshold of vote pairs",
    )
    add("--lease", type=float, default=defaults.lease_s, help="human task lease, seconds")
    add("--workers", type=int, default=1, help="uvicorn worker processes")
    add("--http", choices=("auto", "h11", "httptools"), default="auto", help="HTTP parser")
    add("--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="event loop")
    add("--log-level", default="warning", help="uvicorn log level")
    add("--access-log", action="store_true", help="log every request")
    add("--body-timeout", type=float, default=defaults.body_timeout_s, help="seconds to receive a body (408 after)")
    add("--head-timeout", type=float, default=defaults.head_timeout_s, help="seconds to receive request headers")
    add("--max-header-bytes", type=int, default=defaults.max_header_bytes, help="request header bytes (431 beyond)")
    add("--annotator-rps", type=float, default=defaults.annotator_rps, help="annotator writes/s per worker (429)")
    add("--annotator-bytes-per-s", type=float, default=defaults.annotator_bytes_per_s, help="annotator body bytes/s")
    add("--page-max-bytes", type=int, default=defaults.page_max_bytes, help="text bytes per page of labels or pairs")
    add("--verify-lanes", type=int, default=defaults.verify_lanes, help="math-verify worker processes")
    add("--verify-timeout", type=float, default=defaults.verify_timeout_s, help="seconds per math-verify comparison")
    add("--max-candidates", type=_candidate_cap, default=defaults.max_candidates, help="most candidates per query"
        " (422 beyond) in runs without their own cap; a trainer's run is capped at its samples per prompt")  # fmt: skip
    add("--docs", action="store_true", help="serve /docs and /redoc (their scripts come from a CDN)")
    add("--human-task-ttl", type=float, default=defaults.human_task_ttl_s, help="seconds before an unanswered human"
        " task expires and its charge is refunded (default: never)")  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> OracleSettings:
    """:class:`OracleSettings` from parsed ``serve`` options."""
    return OracleSettings(
        db_path=args.db,
        backend=args.backend,
        gold_path=args.gold,
        budget_total=args.budget_total,
        budget_per_step=args.budget_per_step,
        admin_token=args.admin_token,
        trainer_token=args.trainer_token,
        equivalence=args.equivalence,
        seed=args.seed,
        sim_annotators=args.sim_annotators,
        sim_flip_rate=args.sim_flip_rate,
        sim_flip_spread=args.sim_flip_spread,
        sim_position_bias=args.sim_position_bias,
        judge_url=args.judge_url,
        judge_model=args.judge_model,
        judge_api_key_env=args.judge_api_key_env,
        judge_timeout_s=args.judge_timeout,
        judge_retries=args.judge_retries,
        judge_with_gold=not args.judge_without_gold,
        judge_max_tokens=args.judge_max_tokens,
        db_synchronous=args.db_synchronous,
        db_threads=args.db_threads,
        commit_batch=args.commit_batch,
        lease_s=args.lease,
        two_phase=args.two_phase,
        fast_path=not args.no_fast_path,
        vote_mu=args.vote_mu,
        vote_min_eta=args.vote_min_eta,
        body_timeout_s=args.body_timeout,
        head_timeout_s=args.head_timeout,
        max_header_bytes=args.max_header_bytes,
        annotator_rps=args.annotator_rps,
        annotator_bytes_per_s=args.annotator_bytes_per_s,
        page_max_bytes=args.page_max_bytes,
        verify_lanes=args.verify_lanes,
        verify_timeout_s=args.verify_timeout,
        max_candidates=args.max_candidates,
        docs=args.docs,
        human_task_ttl_s=args.human_task_ttl,
    )


def _tokens_from_files(args: argparse.Namespace) -> None:
    """Read ``--*-token-file``; warn about tokens given as flags (other local users see them in /proc/PID/cmdline)."""
    log = logging.getLogger("coact_verl.oracle")
    for role, env in (("admin", ADMIN_TOKEN_ENV), ("trainer", TRAINER_TOKEN_ENV)):
        path = getattr(args, f"{role}_token_file", None)
        if path:
            lines = Path(path).read_text().strip().splitlines()
            token = lines[0].strip() if lines else ""
            if not token:
                raise SystemExit(f"--{role}-token-file {path} is empty")
            setattr(args, f"{role}_token", token)
        elif getattr(args, f"{role}_token", None) and args.__dict__[f"{role}_token"] != os.environ.get(env):
            log.warning("--%s-token on the command line is visible to other local users (/proc/PID/cmdline);"
                        " prefer $%s or --%s-token-file", role, env, role)  # fmt: skip


def serve(args: argparse.Namespace) -> int:
    """Bind, announce the port, and serve until stopped."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    _tokens_from_files(args)
    settings = settings_from_args(args)
    if not settings.trainer_token:
        # No public default: a service without a trainer token would answer every trainer 401.
        settings = dataclasses.replace(settings, trainer_token=secrets.token_urlsafe(24))
        sys.stderr.write(
            f"no --trainer-token or ${TRAINER_TOKEN_ENV} given; generated trainer token: {settings.trainer_token}\n"
            f"start the trainer with {TRAINER_TOKEN_ENV}={settings.trainer_token} (or coact.oracle.token=...)\n"
        )
        sys.stderr.flush()
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    common = {"log_level": args.log_level, "access_log": args.access_log, "timeout_graceful_shutdown": 5}
    # No client addresses are used (tokens identify callers): skip proxy-header rewriting and the server banner.
    common.update(http=args.http, loop=args.loop, proxy_headers=False, server_header=False)
    # Request heads get a deadline and a size bound with either parser (workers read both from the settings in the
    # environment); with h11, h11's own head bound is set above ours so that ours answers (431).
    from coact_verl.oracle.service import protocol

    protocol.set_head_limits(settings.head_timeout_s, settings.max_header_bytes)
    if args.http == "h11" or (args.http == "auto" and importlib.util.find_spec("httptools") is None):
        common["http"] = "coact_verl.oracle.service.protocol:GuardedH11Protocol"
        common["h11_max_incomplete_event_size"] = settings.max_header_bytes + 64 * 1024
    else:
        common["http"] = "coact_verl.oracle.service.protocol:GuardedHttpToolsProtocol"
    if args.port_file:  # written only after binding, atomically
        tmp = Path(f"{args.port_file}.tmp")
        tmp.write_text(str(port))
        os.replace(tmp, args.port_file)
    logging.getLogger("coact_verl.oracle").info("oracle service on %s:%d (%s)", args.host, port, settings.backend)
    if args.workers > 1:
        # Gold and budget are applied here, once: a worker that the supervisor restarts must not reset a budget
        # changed through the API since.
        from coact_verl.oracle.service.app import apply_start_settings
        from coact_verl.oracle.service.db import Store

        store = Store(settings.db_path, synchronous=settings.db_synchronous, checkpoint_every_s=None)
        apply_start_settings(store, settings)
        store.close()
        worker_settings = dataclasses.replace(settings, gold_path=None, budget_total=None, budget_per_step=None)
        os.environ[SETTINGS_ENV] = worker_settings.to_env()
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())  # workers die with this process (service/process.py)
        app = "coact_verl.oracle.service.app:create_asgi_app_from_env"
        config = uvicorn.Config(app, factory=True, workers=args.workers, host=args.host, port=port, **common)
        Multiprocess(config, sockets=[sock]).run()
        return 0
    from coact_verl.oracle.service.app import create_asgi_app

    server = uvicorn.Server(uvicorn.Config(create_asgi_app(settings), host=args.host, port=port, **common))
    server.run(sockets=[sock])
    return 0 if server.started else 1


def add_oracle_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``oracle serve`` on a CLI's subparsers; the leaf parser sets ``func`` (call ``args.func(args)``)."""
    oracle = subparsers.add_parser("oracle", help="the oracle label service")
    actions = oracle.add_subparsers(dest="oracle_command", required=True)
    serve_parser = actions.add_parser("serve", help="run the oracle service")
    add_serve_arguments(serve_parser)
    serve_parser.set_defaults(func=serve)
    return oracle


def main(argv: list[str] | None = None) -> int:
    """``python -m coact_verl.oracle serve ...``."""
    parser = argparse.ArgumentParser(prog="python -m coact_verl.oracle", description="coact-verl oracle service")
    actions = parser.add_subparsers(dest="command", required=True)
    serve_parser = actions.add_parser("serve", help="run the oracle service")
    add_serve_arguments(serve_parser)
    serve_parser.set_defaults(func=serve)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    code: int = args.func(args)  # the leaf parser's ``func``: serve
    return code
