"""What the plugin registers for CoAct: the ``coact`` reward manager, trainer modes and feedback agent loop."""

from __future__ import annotations

import importlib

REGISTERING_MODULES = (
    "coact_verl.adapters.reward_manager",
    "coact_verl.adapters.trainer",
    "coact_verl.adapters.dpo",
    "coact_verl.adapters.feedback",
)


def register() -> None:
    """Import the modules whose import fills verl's registries (reward manager, trainer modes)."""
    for module in REGISTERING_MODULES:
        importlib.import_module(module)
