"""Every verl touch-point of CoAct, one module each.

- :mod:`~coact_verl.adapters.agent_loop`: the group step inside the rollout workers (loaded by FQN);
- :mod:`~coact_verl.adapters.reward_manager`: the ``coact`` reward manager (registered by name);
- :mod:`~coact_verl.adapters.trainer`: the ``coact`` V1 trainer mode (registered by name);
- :mod:`~coact_verl.adapters.oracle_service`: where the trainer's oracle service comes from.
"""

from __future__ import annotations

import importlib

REGISTERING_MODULES = ("coact_verl.adapters.reward_manager", "coact_verl.adapters.trainer")


def register() -> None:
    """Import the modules whose import fills verl's registries (reward manager, trainer modes)."""
    for module in REGISTERING_MODULES:
        importlib.import_module(module)
