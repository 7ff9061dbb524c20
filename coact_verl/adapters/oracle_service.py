"""Where the trainer finds its oracle: a URL from the config, or a service it starts next to itself.

verl's ``TaskRunnerV1`` builds the trainer, then the agent-loop manager, from one config object. The
first of them to need the oracle starts it (when ``coact.oracle.url`` is null and the router can ask
at all) and writes the URL back into ``coact.oracle.url``, so everything built after it, Ray workers
included, reaches the same service.
"""

from __future__ import annotations

import atexit
import logging
from typing import Any

from coact_verl.config import CoActConfig

logger = logging.getLogger(__name__)

_started: list[Any] = []


def coact_config(config: Any) -> CoActConfig:
    """Typed ``coact`` settings of a verl config (defaults when the key is absent, as in stock verl configs)."""
    section = config.get("coact") if hasattr(config, "get") else None
    return CoActConfig.from_mapping(section)


def ensure_oracle_service(config: Any) -> str | None:
    """Return the oracle URL, starting a local service once per process if the config has none."""
    settings = coact_config(config)
    if settings.oracle.url or settings.router.policy == "self_only":
        return settings.oracle.url
    from coact_verl.oracle.local import start_from_config, stop_local_service

    url, process = start_from_config(settings.oracle)
    _started.append(process)
    atexit.register(stop_local_service, process)
    config.coact.oracle.url = url
    logger.info("CoAct oracle service (%s backend) started at %s", settings.oracle.backend, url)
    return url
