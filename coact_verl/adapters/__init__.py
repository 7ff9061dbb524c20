"""Every verl touch-point of CoAct, one module each.

- :mod:`~coact_verl.adapters.agent_loop`: the group step inside the rollout workers (loaded by FQN);
- :mod:`~coact_verl.adapters.reward_manager`: the ``coact`` reward manager (registered by name);
- :mod:`~coact_verl.adapters.trainer`: the ``coact`` V1 trainer mode (registered by name);
- :mod:`~coact_verl.adapters.dpo`, :mod:`~coact_verl.adapters.classic`, :mod:`~coact_verl.adapters.checkpoint`:
  the DPO trainer mode, verl's classic trainer, the step hooks' checkpoint state.

Where the job's oracle service comes from is verl-free: :mod:`coact_verl.oracle.job`.

verl is imported first, for the reason given in :mod:`coact_verl.cpu`.
"""

import verl  # noqa: F401
