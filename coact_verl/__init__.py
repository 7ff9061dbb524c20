"""coact-verl: CoAct for verl.

Self-consistency decides which prompts the policy can label itself; a router spends a label budget
on the rest through an oracle service; the actor learns with GRPO or DPO(+NLL) inside verl's FSDP
workers. verl loads the plugin through its ``verl.plugins`` entry point (:mod:`coact_verl.plugin`).
"""

__version__ = "0.1.0"
VERL_VERSION = "0.9.1"
