"""verl's private surface that CoAct relies on (``VERL_PRIVATE_SURFACE``) still exists in the installed verl,
with the leading parameters we pass; and the check itself fails when a signature changes."""

from __future__ import annotations

import importlib
import inspect

from coact_verl.adapters.trainer import VERL_PRIVATE_SURFACE


def surface_problems(surface=VERL_PRIVATE_SURFACE) -> list[str]:
    """One line per entry that no longer matches: missing, or other leading parameters."""
    problems = []
    for module_name, path, expected in surface:
        owner: object = importlib.import_module(module_name)
        parts = path.split(".")
        attribute = parts.pop() if expected is None else None
        try:
            for part in parts:
                owner = getattr(owner, part)
        except AttributeError:
            problems.append(f"{module_name}.{path}: missing")
            continue
        if attribute is not None:  # an attribute we read: assigned in the named method
            if f"self.{attribute} =" not in inspect.getsource(owner):  # type: ignore[arg-type]
                problems.append(f"{module_name}.{path}: no longer set there")
            continue
        names = tuple(inspect.signature(owner).parameters)  # type: ignore[arg-type]
        if names[: len(expected)] != expected:
            problems.append(f"{module_name}.{path}: parameters {names}, we pass {expected}")
    return problems


def test_every_private_verl_method_we_use_is_still_there():
    assert len(VERL_PRIVATE_SURFACE) >= 8
    assert surface_problems() == []


def test_the_check_fails_on_a_changed_signature(monkeypatch):
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    def _update_actor(self, batch, metrics, *, extra=None):
        return batch

    def renamed(self, meta, metrics):
        return meta

    monkeypatch.setattr(PPOTrainer, "_update_actor", _update_actor)
    assert surface_problems() == []  # a new trailing keyword does not break what we pass
    monkeypatch.setattr(PPOTrainer, "_update_actor", renamed)
    (problem,) = surface_problems()
    assert "PPOTrainer._update_actor: parameters ('self', 'meta', 'metrics')" in problem
    monkeypatch.delattr(PPOTrainer, "_fetch_one_gen_batch")
    assert any("PPOTrainer._fetch_one_gen_batch: missing" in p for p in surface_problems())


def test_the_check_fails_when_an_attribute_is_no_longer_set(monkeypatch):
    from verl.single_controller.base.worker_group import WorkerGroup

    def __init__(self, resource_pool, **kwargs):
        self._collect_info = {}

    monkeypatch.setattr(WorkerGroup, "__init__", __init__)
    assert surface_problems() == [
        "verl.single_controller.base.worker_group.WorkerGroup.__init__._dispatch_info: no longer set there"
    ]


def test_the_transfer_queue_names_the_reward_manager_reads_are_still_verls():
    """The drop-in reward manager finds V1's validation prompts by TransferQueue's controller actor (name,
    namespace) and verl's validation partition id: both are names inside verl and transfer_queue, not API."""
    import transfer_queue.interface
    from verl.trainer.ppo.v1 import agent_loop_tq

    from coact_verl.adapters.reward_manager import TQ_CONTROLLER, VALIDATION_PARTITION

    controller_source = inspect.getsource(transfer_queue.interface)
    name, namespace = TQ_CONTROLLER
    assert f'name="{name}", namespace="{namespace}"' in controller_source
    assert f'"train" if not validate else "{VALIDATION_PARTITION}"' in inspect.getsource(agent_loop_tq)
