"""What the plugin registers for CoAct: the ``coact`` reward manager, trainer modes and feedback agent loop.

Each name is registered lazily (:func:`coact_verl.plugin.register_lazy_names`): the module that defines
it is imported the first time verl looks the name up, in the process that looks it up, and its own
registration decorator then adds the class. Nothing here imports verl's trainer or CoAct's modules.
"""

from __future__ import annotations

from coact_verl.plugin import register_lazy_names

#: (verl module holding the registry, registry attribute, kind of component, {name: CoAct module}).
LAZY_NAMES = (
    (
        "verl.experimental.reward_loop.reward_manager.registry",
        "REWARD_MANAGER",
        "reward manager",
        {"coact": "coact_verl.adapters.reward_manager"},
    ),
    (
        "verl.trainer.ppo.v1.trainer_base",
        "TRAINER_REGISTRY",
        "trainer mode",
        {"coact": "coact_verl.adapters.trainer", "coact_dpo": "coact_verl.adapters.dpo"},
    ),
    (
        "verl.experimental.agent_loop.agent_loop",
        "_agent_loop_registry",
        "agent loop",
        # coact_verl.feedback.queue.FEEDBACK_AGENT (not imported here: the value is all that is needed)
        {"coact_feedback": "coact_verl.adapters.dpo"},
    ),
)


def register() -> None:
    """Declare every CoAct name in verl's registries; the modules load on first lookup."""
    for registry_module, attribute, kind, names in LAZY_NAMES:
        register_lazy_names(registry_module, attribute, names, kind)
