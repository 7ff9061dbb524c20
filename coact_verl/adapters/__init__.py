"""Every verl touch-point of CoAct, one module each.

- :mod:`~coact_verl.adapters.agent_loop`: the group step inside the rollout workers (loaded by FQN);
- :mod:`~coact_verl.adapters.reward_manager`: the ``coact`` reward manager (registered by name);
- :mod:`~coact_verl.adapters.trainer`: the ``coact`` V1 trainer mode (registered by name);
- :mod:`~coact_verl.adapters.oracle_service`: where the trainer's oracle service comes from.

verl is imported first, for the reason given in :mod:`coact_verl.cpu`.
"""

import verl  # noqa: F401
