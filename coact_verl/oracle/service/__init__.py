"""The oracle HTTP service (FastAPI + SQLite)."""

from typing import Any

from coact_verl.oracle.service.settings import OracleSettings

__all__ = ["OracleSettings", "create_app"]


def __getattr__(name: str) -> Any:  # the app factory imports FastAPI; load it only when asked
    if name == "create_app":
        from coact_verl.oracle.service.app import create_app

        return create_app
    raise AttributeError(name)
