"""Trainer-side client of the oracle service: bounded waits, retries, never raises into training."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from coact_verl.oracle.local import start_local_service, stop_local_service
from coact_verl.oracle.results import ClientStats, OracleLabel, OracleResult, make_key
from coact_verl.oracle.service.run_store import RUN_HEADER

if TYPE_CHECKING:
    from coact_verl.config import OracleConfig

__all__ = [
    "ClientStats",
    "OracleClient",
    "OracleLabel",
    "OracleResult",
    "OracleSetupError",
    "SyncOracleClient",
    "handshake",
    "make_key",
    "start_local_service",
    "stop_local_service",
]
log = logging.getLogger("coact_verl.oracle.client")
_T = TypeVar("_T")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


TOKEN_FIX = (
    "set COACT_ORACLE_TRAINER_TOKEN (or coact.oracle.token) to the service's trainer token: the one given to"
    " `coact-verl oracle serve` as --trainer-token or $COACT_ORACLE_TRAINER_TOKEN (a service started without one"
    " prints the token it generated); on a cluster started with `ray start`, the trainer sees the environment of"
    " `ray start`"
)


class OracleSetupError(RuntimeError):
    """The oracle service cannot serve this run as configured; the message names what to set."""


def handshake(
    url: str,
    token: str | None,
    *,
    budget_total: int | None = None,
    run_name: str | None = None,
    resume: bool = False,
    run_id: int | None = None,
    samples_per_prompt: int | None = None,
    wait_s: float = 10.0,
    request_timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Check a service before training starts, open this run in it, and return the ``GET /v1/handshake`` answer
    (its ``run`` is this run: pass ``run["id"]`` to every client of the run).

    The run is ``run_id`` when given (already opened, e.g. by the process that built this config), else ``run_name``
    opened fresh (a new generation: no spent budget, no labels) or, with ``resume``, its newest generation; with
    neither, the service's default run. ``samples_per_prompt`` caps candidates per query in the run.

    Raises :class:`OracleSetupError` when no token is given, the service is unreachable for ``wait_s`` seconds,
    rejects the token or gives it another role than trainer, does not know ``run_id``, cannot take
    ``samples_per_prompt`` candidates per query, has a backend that needs gold answers but holds none, or has a
    total budget for the run other than ``budget_total`` (when that is not ``None``).
    """
    where = f"the oracle service at {url}"
    if not token:
        raise OracleSetupError(f"no trainer token for {where}: {TOKEN_FIX}")
    deadline = time.monotonic() + wait_s
    headers = {"Authorization": f"Bearer {token}"}

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        while True:
            try:
                resp = httpx.request(
                    method, f"{url.rstrip('/')}{path}", headers=headers, timeout=request_timeout_s, **kwargs
                )
            except httpx.HTTPError as exc:
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise OracleSetupError(
                    f"cannot reach {where} ({type(exc).__name__}: {exc}): start it where every node can reach it"
                    " (`coact-verl oracle serve --host 0.0.0.0 --port 8765 ...`) and set coact.oracle.url to its"
                    " address, or set coact.oracle.url=null to start one next to the trainer (single node only)"
                ) from exc
            if resp.status_code in (502, 503, 504) and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            return resp

    opened = None
    if run_id is None and run_name:
        body = {"name": run_name, "resume": resume, "samples_per_prompt": samples_per_prompt}
        resp = call("POST", "/v1/runs", json=body)
        _raise_for_handshake(resp, where)
        opened = resp.json()
        run_id = int(opened["id"])
    if run_id is not None:
        headers[RUN_HEADER] = str(run_id)
    resp = call("GET", "/v1/handshake")
    _raise_for_handshake(resp, where)
    info: dict[str, Any] = resp.json()
    if opened is not None:
        info["run"]["resumed"] = opened["resumed"]
    if info.get("needs_gold") and not info.get("gold"):
        raise OracleSetupError(
            f"{where} uses the {info.get('backend')} backend, which labels against gold answers, but holds none:"
            " start it with --gold PATH (the train_gold.parquet of `coact-verl prepare`), or set"
            " coact.oracle.gold_path for a service the trainer starts itself"
        )
    cap = (info.get("run") or {}).get("max_candidates")
    if samples_per_prompt is not None and cap is not None and samples_per_prompt > cap:
        raise OracleSetupError(
            f"run {run_id} at {where} admits {cap} candidates per query, fewer than the {samples_per_prompt} samples"
            " per prompt of this run: start a fresh run (trainer.resume_mode=disable) or a service with"
            f" --max-candidates {samples_per_prompt}"
        )
    total = (info.get("budget") or {}).get("total")
    if budget_total is not None and total != budget_total:
        raise OracleSetupError(
            f"coact.oracle.budget_total={budget_total} but {where} has a total budget of"
            f" {'unbounded' if total is None else total} for this run: set coact.oracle.budget_total="
            f"{'null' if total is None else total} (or null to use the service's), or change the service's budget"
            " (`oracle serve --budget-total N` for new runs, or POST /v1/budget with the admin token and the run's"
            f" {RUN_HEADER} header)"
        )
    return info


def _raise_for_handshake(resp: httpx.Response, where: str) -> None:
    """:class:`OracleSetupError` naming the fix for a failed handshake or run opening."""
    detail = resp.text[:300]
    if resp.status_code == 401:
        raise OracleSetupError(f"{where} rejected the trainer token (HTTP 401: {detail}): {TOKEN_FIX}")
    if resp.status_code == 403:
        raise OracleSetupError(f"{where} knows the token but not as a trainer token (HTTP 403): {TOKEN_FIX}")
    if resp.status_code == 404 and "unknown run" in detail:
        raise OracleSetupError(
            f"{where} does not know this run ({detail}): set coact.oracle.run_id=null to open the run by its"
            " name (trainer.project_name/trainer.experiment_name)"
        )
    if resp.status_code == 404:
        raise OracleSetupError(
            f"{where} has no {resp.request.url.path} (HTTP 404): coact.oracle.url must point at a coact-verl oracle"
            " service of this version"
        )
    if resp.status_code == 422:
        raise OracleSetupError(f"{where} refused this run (HTTP 422: {detail})")
    if resp.status_code != 200:
        raise OracleSetupError(f"{where} failed the start-up handshake (HTTP {resp.status_code}: {detail})")


def _candidate(c: Any) -> dict[str, Any]:
    if isinstance(c, Mapping):
        return {"answer": c.get("answer"), "response": c.get("response", ""), "votes": int(c.get("votes", 1))}
    return {"answer": c.answer, "response": c.response, "votes": int(getattr(c, "votes", 1))}


class OracleClient:
    """Async client (one per event loop).

    Args:
        base_url: service URL, e.g. ``http://127.0.0.1:8765``.
        token: bearer token (trainer; admin for the admin calls; an annotator's for votes and edits).
        request_timeout_s: bound of one HTTP attempt, in seconds.
        max_wait_s: bound of one call including retries and backoff, in seconds.
        retries: retries after a failed attempt (connect errors, timeouts, 5xx, 429).
        backoff_s: first backoff, doubled per retry, with ±50 % jitter, in seconds.
        max_connections: HTTP connection pool size; at most this many requests are in flight (more callers wait,
            within their ``max_wait_s``), which keeps the pool fast under many concurrent callers.
        run_id: the service's run every request belongs to (sent as ``X-CoAct-Run``; from :func:`handshake`);
            ``None``: the service's default run.
    """

    WARN_EVERY_S = 10.0

    def __init__(
        self,
        base_url: str,
        token: str | None,
        request_timeout_s: float = 2.0,
        max_wait_s: float = 5.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        max_connections: int = 16,
        run_id: int | None = None,
    ) -> None:
        if request_timeout_s <= 0 or max_wait_s <= 0 or retries < 0:
            raise ValueError("timeouts must be > 0 and retries >= 0")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if run_id is not None:
            headers[RUN_HEADER] = str(int(run_id))
        self.base_url, self.retries, self.backoff_s = base_url.rstrip("/"), retries, backoff_s
        self.request_timeout_s, self.max_wait_s = request_timeout_s, max_wait_s
        self.stats = ClientStats()
        self._gate = asyncio.Semaphore(max_connections)
        self._last_warning = -float("inf")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(request_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    @classmethod
    def from_config(cls, config: OracleConfig, url: str | None = None) -> OracleClient:
        """Client with the token, timeouts and retries of an :class:`~coact_verl.config.OracleConfig`.

        ``url`` overrides ``config.url`` (e.g. the URL of a service from :func:`start_local_service`).
        """
        base_url = url or config.url
        if not base_url:
            raise ValueError("no oracle URL: set coact.oracle.url or start a local service first")
        return cls(
            base_url,
            config.resolved_token(),
            request_timeout_s=config.request_timeout_s,
            max_wait_s=config.max_wait_s,
            retries=config.retries,
            max_connections=config.max_connections,
            run_id=config.run_id,
        )

    async def __aenter__(self) -> OracleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response | None, str | None, int]:
        """One bounded, retried call: (response or ``None``, error, attempts). 4xx responses are returned as is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        error, attempt = "no attempt", 0
        while attempt <= self.retries:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            attempt += 1
            self.stats.requests += 1
            try:
                timeout = min(self.request_timeout_s, remaining)
                resp = await asyncio.wait_for(self._send(method, path, timeout, kwargs), timeout)
                if resp.status_code not in _RETRY_STATUS:
                    return resp, None, attempt
                error = f"HTTP {resp.status_code}"
            except (httpx.TransportError, asyncio.TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt > self.retries:
                break
            self.stats.retries += 1
            delay = min(self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5), deadline - loop.time())
            if delay > 0:
                await asyncio.sleep(delay)
        if loop.time() >= deadline:
            error = f"no answer within max_wait_s={self.max_wait_s} s ({error})"
        return None, error, attempt

    def _warn(self, message: str) -> None:
        """Log a warning at most every ``WARN_EVERY_S`` seconds (an outage must not flood the training log)."""
        now = time.monotonic()
        if now - self._last_warning >= self.WARN_EVERY_S:
            self._last_warning = now
            log.warning(message)
        else:
            log.debug(message)

    async def _send(self, method: str, path: str, timeout: float, kwargs: dict[str, Any]) -> httpx.Response:
        async with self._gate:
            return await self._http.request(method, path, timeout=timeout, **kwargs)

    async def query(
        self, *, key: str, prompt_id: str, prompt: str, task: str, step: int, candidates: Iterable[Any]
    ) -> OracleResult:
        """Ask for a label; returns within ``max_wait_s`` and never raises for service trouble."""
        start = time.monotonic()
        body = {"key": key, "prompt_id": prompt_id, "prompt": prompt, "task": task, "step": int(step),
                "candidates": [_candidate(c) for c in candidates]}  # fmt: skip
        try:
            resp, error, attempts = await self._call("POST", "/v1/queries", json=body)
        except Exception as exc:  # noqa: BLE001 - training must not see service failures
            resp, error, attempts = None, f"{type(exc).__name__}: {exc}", 0
        elapsed = time.monotonic() - start
        if resp is not None and resp.status_code == 200:
            try:
                data = resp.json()
                label = data["label"]
                result = OracleResult(
                    status=data["status"],
                    query_id=data["query_id"],
                    label=None
                    if label is None
                    else OracleLabel(label["answer"], tuple(label["correct"]), label["source"]),
                    budget=data["budget"],
                    attempts=attempts,
                    elapsed_s=elapsed,
                )
            except (ValueError, KeyError, TypeError) as exc:
                error = f"unreadable answer: {exc!r}"
            else:
                self.stats.by_status[result.status] = self.stats.by_status.get(result.status, 0) + 1
                return result
        elif resp is not None:
            error = f"HTTP {resp.status_code}: {resp.text[:200]}"
        self.stats.unavailable += 1
        self._warn(f"oracle unavailable for {key} ({self.stats.unavailable} so far): {error}")
        return OracleResult("unavailable", error=error, attempts=attempts, elapsed_s=elapsed)

    async def query_many(self, queries: Iterable[Mapping[str, Any]], concurrency: int = 64) -> list[OracleResult]:
        """Run :meth:`query` for each mapping of its keyword arguments, ``concurrency`` at a time, in order."""
        gate = asyncio.Semaphore(concurrency)

        async def one(q: Mapping[str, Any]) -> OracleResult:
            async with gate:
                return await self.query(**q)

        return list(await asyncio.gather(*(one(q) for q in queries)))

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any | None:
        try:
            resp, error, _ = await self._call(method, path, **kwargs)
        except Exception as exc:  # noqa: BLE001
            resp, error = None, repr(exc)
        if resp is None or resp.status_code != 200:
            self._warn(f"oracle {method} {path} failed: {error or resp.status_code}")  # type: ignore[union-attr]
            return None
        return resp.json()

    async def labels(self, since_id: int = 0, limit: int = 500) -> dict[str, Any] | None:
        """``{"labels": [...], "next_since_id": n}`` after ``since_id``, or ``None`` when unavailable."""
        return await self._json("GET", "/v1/labels", params={"since_id": since_id, "limit": limit})

    async def set_step(self, step: int) -> dict[str, Any] | None:
        """Move this client's run to training step ``step`` (the trainer's driver, once per step): queries arriving
        afterwards, from any worker, are charged to it. The run as stored, or ``None`` when it failed."""
        return await self._json("POST", "/v1/runs/step", json={"step": int(step)})

    async def budget(self) -> dict[str, Any] | None:
        """``{"total", "spent", "remaining", "per_step"}`` or ``None`` when unavailable."""
        return await self._json("GET", "/v1/budget")

    async def set_budget(self, total: int | None, per_step: int | None = None) -> dict[str, Any] | None:
        """Set the budget (admin token); ``None`` when it failed."""
        body: dict[str, Any] = {"total": total} if per_step is None else {"total": total, "per_step": per_step}
        return await self._json("POST", "/v1/budget", json=body)

    async def upload_gold(self, answers: Mapping[str, str]) -> dict[str, Any] | None:
        """Upload hidden gold answers (admin token); ``None`` when it failed."""
        return await self._json("POST", "/v1/gold", json=dict(answers))

    async def next_comparisons(self, limit: int = 1) -> list[dict[str, Any]] | None:
        """Comparisons leased to the calling annotator (``ticket``, prompt and both responses), ``None`` on failure."""
        out = await self._json("GET", "/v1/comparisons/next", params={"limit": limit})
        return None if out is None else out["comparisons"]

    async def submit_vote(self, *, key: str, ticket: str, picked: str) -> dict[str, Any] | None:
        """Vote ``picked`` (``"a"`` or ``"b"``) on the comparison leased under ``ticket`` (annotator token),
        idempotently by ``key``: the stored vote, ``None`` on failure. Which side came from the stronger model, and
        which is known to be better, is the service's record, never the vote's."""
        return await self._json("POST", "/v1/votes", json={"key": key, "ticket": ticket, "picked": picked})

    async def submit_votes(self, votes: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
        """Store up to 1000 votes (mappings of :meth:`submit_vote`'s arguments) in one transaction (annotator
        token): ``{"votes": [...], "created": n}``, or ``None`` on failure (then none was stored)."""
        return await self._json("POST", "/v1/votes/batch", json={"votes": [dict(v) for v in votes]})

    async def submit_edit(
        self, *, key: str, prompt_id: str, prompt: str, task: str, original: str, edited: str
    ) -> dict[str, Any] | None:
        """Store an edit, ``edited`` ≻ ``original`` (annotator token), idempotently by ``key``; ``None`` on failure."""
        body = {"key": key, "prompt_id": prompt_id, "prompt": prompt, "task": task, "original": original,
                "edited": edited}  # fmt: skip
        return await self._json("POST", "/v1/edits", json=body)

    async def feedback_pairs(
        self, since_id: int = 0, limit: int = 500, min_eta: float | None = None
    ) -> dict[str, Any] | None:
        """``{"pairs": [...], "next_since_id": n}`` from votes and edits after ``since_id``, ``None`` when unavailable.

        Votes of annotators with η̂ < ``min_eta`` (``None``: the service's default) are skipped, but the cursor
        moves past them; page until ``next_since_id`` stops changing.
        """
        params: dict[str, Any] = {"since_id": since_id, "limit": limit}
        if min_eta is not None:
            params["min_eta"] = min_eta
        return await self._json("GET", "/v1/feedback/pairs", params=params)

    async def annotator_quality(self) -> dict[str, Any] | None:
        """``{"mu", "mu_given", "votes", "annotators": [{"id", "name", "votes", "control_votes", "eta"}]}``, or
        ``None`` when unavailable."""
        return await self._json("GET", "/v1/annotators/quality")

    async def healthy(self) -> bool:
        """Whether ``/healthz`` answers within ``request_timeout_s``."""
        try:
            resp = await asyncio.wait_for(self._http.get("/healthz"), self.request_timeout_s)
            return resp.status_code == 200
        except Exception:  # noqa: BLE001
            return False


class SyncOracleClient:
    """Blocking wrapper for driver-side code: an :class:`OracleClient` on a private event-loop thread."""

    def __init__(self, base_url: str, token: str | None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="oracle-client", daemon=True)
        self._thread.start()

        async def make() -> OracleClient:
            return OracleClient(base_url, token, **kwargs)

        self.client: OracleClient = self._run(make())

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def query(self, **kwargs: Any) -> OracleResult:
        """Blocking :meth:`OracleClient.query` (bounded by ``max_wait_s``)."""
        return self._run(self.client.query(**kwargs))

    def query_many(self, queries: Iterable[Mapping[str, Any]], concurrency: int = 64) -> list[OracleResult]:
        """Blocking :meth:`OracleClient.query_many`."""
        return self._run(self.client.query_many(queries, concurrency))

    def labels(self, since_id: int = 0, limit: int = 500) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.labels`."""
        return self._run(self.client.labels(since_id, limit))

    def set_step(self, step: int) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.set_step`."""
        return self._run(self.client.set_step(step))

    def budget(self) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.budget`."""
        return self._run(self.client.budget())

    def set_budget(self, total: int | None, per_step: int | None = None) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.set_budget`."""
        return self._run(self.client.set_budget(total, per_step))

    def upload_gold(self, answers: Mapping[str, str]) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.upload_gold`."""
        return self._run(self.client.upload_gold(answers))

    def next_comparisons(self, limit: int = 1) -> list[dict[str, Any]] | None:
        """Blocking :meth:`OracleClient.next_comparisons`."""
        return self._run(self.client.next_comparisons(limit))

    def submit_vote(self, **kwargs: Any) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.submit_vote`."""
        return self._run(self.client.submit_vote(**kwargs))

    def submit_votes(self, votes: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.submit_votes`."""
        return self._run(self.client.submit_votes(votes))

    def submit_edit(self, **kwargs: Any) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.submit_edit`."""
        return self._run(self.client.submit_edit(**kwargs))

    def feedback_pairs(
        self, since_id: int = 0, limit: int = 500, min_eta: float | None = None
    ) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.feedback_pairs`."""
        return self._run(self.client.feedback_pairs(since_id, limit, min_eta))

    def annotator_quality(self) -> dict[str, Any] | None:
        """Blocking :meth:`OracleClient.annotator_quality`."""
        return self._run(self.client.annotator_quality())

    def healthy(self) -> bool:
        """Blocking :meth:`OracleClient.healthy`."""
        return self._run(self.client.healthy())

    @property
    def stats(self) -> ClientStats:
        """The wrapped client's counters."""
        return self.client.stats

    def close(self) -> None:
        """Close the client and stop the loop thread."""
        if self._loop.is_running():
            self._run(self.client.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> SyncOracleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
