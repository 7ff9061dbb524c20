"""Where a verl job finds its oracle, and the start-up handshake that makes a misconfigured one fail loudly.

It reads verl's job config (an OmegaConf tree) but imports nothing of verl.

verl's ``TaskRunnerV1`` builds the trainer, then the agent-loop manager, from one config object. The
first of them to need the oracle resolves it:

- ``coact.oracle.url`` null (and a router that can ask at all): a service is started next to the trainer, on
  127.0.0.1, with a random trainer token for this run and a database of this run
  (``trainer.default_local_dir/oracle.sqlite`` unless ``coact.oracle.db_path`` names one: a resumed run keeps it,
  a fresh run sets an old one aside). With ``trainer.nnodes > 1`` this stops the run: workers on other nodes
  could not reach 127.0.0.1.
- ``coact.oracle.url`` set: the trainer token comes from ``coact.oracle.token`` or
  ``$COACT_ORACLE_TRAINER_TOKEN``.

Either way the trainer then shakes hands with the service (:func:`coact_verl.oracle.client.handshake`: reachable,
token valid with the trainer role, backend, gold answers where the backend needs them, total budget) and opens this
run's namespace in it: ``coact.oracle.run_name`` or ``trainer.project_name/trainer.experiment_name``, fresh (a new
generation of the name: no spent budget, no labels) unless verl resumes from a checkpoint (then the newest
generation, with its budget and labels). It stops with one message naming what to set if anything is wrong. It
writes the URL, the token, the run id and the service's budget back into ``coact.oracle``, so everything built after
it, Ray workers on every node included, reaches the same service and run. Only after a successful handshake does an
outage degrade training (self-label or drop, counted).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from coact_verl.config import CoActConfig

logger = logging.getLogger(__name__)

_started: list[Any] = []
_checked: dict[tuple[str, str], dict[str, Any]] = {}  # (url, run name) → handshake answer


def coact_config(config: Any) -> CoActConfig:
    """Typed ``coact`` settings of a verl config (defaults when the key is absent, as in stock verl configs)."""
    section = config.get("coact") if hasattr(config, "get") else None
    coact = CoActConfig.from_mapping(section)
    if coact.router.embedder == "policy" and not coact.router.embedder_model:  # CoAct embeds with the policy
        model = (config.get("actor_rollout_ref") or {}).get("model") or {}
        router = dataclasses.replace(coact.router, embedder_model=model.get("path"))
        coact = dataclasses.replace(coact, router=router)
    return coact


def _trainer_setting(config: Any, key: str, default: Any = None) -> Any:
    trainer = config.get("trainer") if hasattr(config, "get") else None
    value = trainer.get(key, default) if trainer is not None and hasattr(trainer, "get") else default
    return default if value is None else value


def run_resumes(config: Any) -> bool:
    """Whether verl will resume this run: ``trainer.resume_mode`` is not ``disable`` and either names a checkpoint
    (``resume_path``) or ``trainer.default_local_dir`` holds one."""
    local_dir = Path(str(_trainer_setting(config, "default_local_dir", "checkpoints")))
    resume_mode = str(_trainer_setting(config, "resume_mode", "auto"))
    return resume_mode != "disable" and (
        resume_mode == "resume_path" or (local_dir / "latest_checkpointed_iteration.txt").exists()
    )


def run_name(config: Any, name: str | None = None) -> str:
    """This run's namespace in the oracle service: ``name`` if given, else
    ``trainer.project_name/trainer.experiment_name``."""
    if name:
        return name
    project = _trainer_setting(config, "project_name", "coact")
    experiment = _trainer_setting(config, "experiment_name", "run")
    return f"{project}/{experiment}"


def _samples_per_prompt(config: Any) -> int | None:
    try:
        n = config.get("actor_rollout_ref").get("rollout").get("n")
    except AttributeError:
        return None
    return None if n is None else int(n)


def _write_back(config: Any, key: str, value: Any) -> None:
    """Set ``coact.oracle.<key>`` in the job's config, adding the key if a struct-mode config lacks it."""
    from omegaconf import DictConfig, open_dict

    node = config.coact.oracle
    if isinstance(node, DictConfig):
        with open_dict(node):
            node[key] = value
    else:
        setattr(node, key, value)


def run_db_path(config: Any, db_path: str | None) -> str:
    """The local service's database for this run; a fresh run sets an earlier run's file aside.

    ``db_path`` ``None`` means ``oracle.sqlite`` in ``trainer.default_local_dir`` (verl's per-run checkpoint folder,
    ``checkpoints/<project_name>/<experiment_name>`` by default). The run resumes (and keeps the database, with
    its spent budget and label log) when verl will resume: ``trainer.resume_mode`` is not ``disable`` and the
    folder holds a checkpoint. Otherwise an existing database is renamed ``<stem>.<timestamp>.<suffix>`` (with its
    WAL), never deleted.
    """
    local_dir = Path(str(_trainer_setting(config, "default_local_dir", "checkpoints")))
    path = Path(db_path) if db_path else local_dir / "oracle.sqlite"
    if not run_resumes(config) and path.exists():
        aside = path.with_name(f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}.{time.time_ns() % 10**6}{path.suffix}")
        for suffix in ("", "-wal", "-shm"):
            old = Path(f"{path}{suffix}")
            if old.exists():
                old.rename(f"{aside}{suffix}")
        logger.warning("fresh run: the previous run's oracle database is set aside as %s", aside)
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def ensure_oracle_service(config: Any) -> str | None:
    """Return the oracle URL after a successful handshake, starting a local service once per process if the
    config has no URL. Raises :class:`~coact_verl.oracle.client.OracleSetupError` when the service cannot serve
    this run."""
    from coact_verl.oracle.client import OracleSetupError, handshake

    settings = coact_config(config)
    oracle = settings.oracle
    url, token = oracle.url, oracle.resolved_token()
    if not url and settings.router.policy == "self_only":
        return None  # nothing asks an oracle: none is started
    if not url:
        nnodes = int(_trainer_setting(config, "nnodes", 1))
        if nnodes > 1:
            raise OracleSetupError(
                f"coact.oracle.url is null with trainer.nnodes={nnodes}: a service started next to the trainer"
                " listens on 127.0.0.1, which workers on other nodes cannot reach. Start one where every node can"
                " reach it (`coact-verl oracle serve --host 0.0.0.0 --port 8765 ...` with"
                " $COACT_ORACLE_TRAINER_TOKEN set) and set coact.oracle.url=http://HOST:8765"
            )
        import dataclasses

        from coact_verl.oracle.local import start_from_config, stop_local_service

        token = secrets.token_urlsafe(24)  # this run's own: never a public default
        db_path = run_db_path(config, oracle.db_path)
        url, process = start_from_config(dataclasses.replace(oracle, token=token, db_path=db_path))
        _started.append(process)
        atexit.register(stop_local_service, process)
        _write_back(config, "url", url)
        _write_back(config, "db_path", db_path)
        logger.info("CoAct oracle service (%s backend, %s) started at %s", oracle.backend, db_path, url)
    name = run_name(config, oracle.run_name)
    if (url, name) not in _checked:
        try:
            _checked[(url, name)] = handshake(
                url,
                token,
                budget_total=oracle.budget_total,
                run_name=name,
                resume=run_resumes(config),
                run_id=oracle.run_id,
                samples_per_prompt=_samples_per_prompt(config),
                request_timeout_s=5.0,
            )
        except OracleSetupError as error:
            logger.error("CoAct oracle: %s", error)
            raise
        info = _checked[(url, name)]
        run = info["run"]
        logger.info(
            "CoAct oracle at %s: %s backend, %d gold answers; run %s (id %d, generation %d, %s), budget %s",
            url,
            info.get("backend"),
            info.get("gold", 0),
            run["name"],
            run["id"],
            run["generation"],
            "resumed" if run["resumed"] else "fresh",
            info.get("budget"),
        )
    # Everything built after this point (Ray workers on any node) reads these from the job's config.
    info = _checked[(url, name)]
    _write_back(config, "token", token)
    _write_back(config, "run_id", int(info["run"]["id"]))
    total = (info.get("budget") or {}).get("total")
    if oracle.budget_total is None and total is not None:
        _write_back(config, "budget_total", total)  # read from the service: the router paces against it
    return url
