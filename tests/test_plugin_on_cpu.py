"""The ``verl.plugins`` entry point: cheap at ``import verl``, every name resolvable on first use, loud on use.

Each check that depends on what ``import verl`` does runs in a fresh interpreter, as verl's processes do.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from coact_verl.plugin import FAIL_ENV, LazyRegistry

PROBE = """
import json, verl
from verl.plugin.platform import get_platform
from verl.workers.rollout.replica import RolloutReplicaRegistry
from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.engine.base import EngineRegistry
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
from verl.trainer.ppo.v1 import get_trainer_cls
print(json.dumps({
    "platform": get_platform().device_name,
    "replica": RolloutReplicaRegistry.get("hf").__name__,
    "adapter": _ROLLOUT_REGISTRY[("hf", "async")],
    "engine": EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
    "reward_manager": get_reward_manager_cls("coact").__name__,
    "trainer": get_trainer_cls("coact").__name__,
    "dpo_trainer": get_trainer_cls("coact_dpo").__name__,
    "agent_loop": _agent_loop_registry["coact_feedback"]["_target_"],
}))
"""

#: Modules that only a job using CoAct (or verl's trainer) needs; ``import verl`` must load none of them.
HEAVY_MODULES = (
    "verl.trainer.ppo.v1",
    "verl.workers.engine",
    "verl.experimental.reward_loop",
    "verl.experimental.agent_loop",
    "coact_verl.adapters.trainer",
    "coact_verl.adapters.dpo",
    "coact_verl.adapters.reward_manager",
    "coact_verl.cpu.hf_rollout",
    "coact_verl.consistency",
    "coact_verl.group.labeler",
)

ASK_FOR_EVERY_COMPONENT = """
import json, verl
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
from verl.trainer.ppo.v1 import get_trainer_cls
from verl.workers.rollout.replica import RolloutReplicaRegistry
asks = {
    "reward manager": lambda: get_reward_manager_cls("coact"),
    "trainer mode": lambda: get_trainer_cls("coact"),
    "dpo trainer mode": lambda: get_trainer_cls("coact_dpo"),
    "rollout": lambda: RolloutReplicaRegistry.get("hf"),
    "agent loop": lambda: "coact_feedback" in _agent_loop_registry,
}
found = {}
for name, ask in asks.items():
    try:
        ask()
        found[name] = "no error"
    except Exception as error:
        found[name] = f"{type(error).__name__}: {error}"
found["verl's own"] = [get_reward_manager_cls("naive").__name__, get_trainer_cls("sync").__name__]
print(json.dumps(found))
"""

WRONG_VERL_VERSION = """
import importlib.metadata as metadata
real_version = metadata.version
metadata.version = lambda name: "0.9.0" if name == "verl" else real_version(name)
"""

PLUGIN_WARNING = "coact-verl is not usable in this process"


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VERL_") and k != FAIL_ENV}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**clean, **env}
    )


def _last_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_verl_loads_no_coact_component_and_starts_no_subprocess(tmp_path: Path):
    # A GPU host's nvidia-smi, here a stand-in that records being run: import must not run it.
    marker = tmp_path / "nvidia-smi-ran"
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(f"#!/bin/sh\ntouch {marker}\nexit 0\n")
    smi.chmod(0o755)
    code = f"""
import json, os, sys, verl
print(json.dumps({{"loaded": [m for m in {HEAVY_MODULES!r} if m in sys.modules],
                   "smi_ran": os.path.exists({str(marker)!r})}}))
"""
    found = _last_json(_python(code, PATH=f"{smi.parent}{os.pathsep}{os.environ.get('PATH', '')}"))
    assert found == {"loaded": [], "smi_ran": False}


def test_entry_point_registers_everything_without_env_vars():
    found = _last_json(_python(PROBE))
    assert found == {
        "platform": "cpu",
        "replica": "HFReplica",
        "adapter": "coact_verl.cpu.hf_rollout.HFServerAdapter",
        "engine": "FSDPEngineWithLMHead",
        "reward_manager": "CoActRewardManager",
        "trainer": "CoActTrainer",
        "dpo_trainer": "CoActDPOTrainer",
        "agent_loop": "coact_verl.adapters.dpo.FeedbackPairAgentLoop",
    }


def test_broken_install_lets_verl_start_with_one_warning():
    code = """
import verl
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo.v1 import get_trainer_cls
print(get_reward_manager_cls("naive").__name__, get_trainer_cls("sync").__name__)
"""
    result = _python(code, **{FAIL_ENV: "coact_verl.adapters.reward_manager"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["NaiveRewardManager", "PPOTrainerSync"]
    assert result.stderr.count(PLUGIN_WARNING) == 1
    assert "importing coact_verl.adapters.reward_manager raised ImportError" in result.stderr
    assert "pip install -e ." in result.stderr


def test_broken_install_fails_loudly_when_a_job_asks_for_a_coact_component():
    found = _last_json(_python(ASK_FOR_EVERY_COMPONENT, **{FAIL_ENV: "coact_verl.adapters.reward_manager"}))
    assert found.pop("verl's own") == ["NaiveRewardManager", "PPOTrainerSync"]
    for component, outcome in found.items():
        assert outcome.startswith("PluginLoadError: coact-verl cannot provide"), (component, outcome)
        assert "importing coact_verl.adapters.reward_manager raised ImportError" in outcome, component
        assert "pip install -e ." in outcome, component


def test_wrong_verl_version_warns_at_import_and_fails_when_a_component_is_asked_for():
    result = _python(WRONG_VERL_VERSION + ASK_FOR_EVERY_COMPONENT)
    found = _last_json(result)
    assert result.stderr.count(PLUGIN_WARNING) == 1
    assert "verl==0.9.0 is installed" in result.stderr
    assert found.pop("verl's own") == ["NaiveRewardManager", "PPOTrainerSync"]
    for component, outcome in found.items():
        assert outcome.startswith("PluginLoadError: coact-verl cannot provide"), (component, outcome)
        assert "supports verl==0.9.1" in outcome and "pip install 'verl[verl-core]==0.9.1'" in outcome


def test_plugin_can_be_disabled():
    result = _python(PROBE, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode != 0 and "Unknown rollout mode: hf" in result.stderr


# --------------------------------------------------------------------------- LazyRegistry


class _Registering:
    """Stands in for a CoAct module whose import runs ``@register(name)`` against the registry."""

    def __init__(self, registry: LazyRegistry, name: str, value: object) -> None:
        self.registry, self.name, self.value, self.imports = registry, name, value, 0

    def __call__(self) -> None:
        self.imports += 1
        # verl's decorators check "already registered to another class?" before adding the name
        assert self.registry.get(self.name) is None and self.name not in self.registry
        self.registry[self.name] = self.value


def test_lazy_registry_loads_a_name_on_first_lookup_only():
    registry = LazyRegistry({"naive": int})
    module = _Registering(registry, "coact", str)
    registry.lazy["coact"] = module
    assert dict(registry) == {"naive": int} and module.imports == 0
    assert "coact" in registry and registry["coact"] is str and registry.get("coact") is str
    assert module.imports == 1 and registry.lazy == {}
    assert registry.get("missing") is None and "missing" not in registry
    with pytest.raises(KeyError):
        registry["missing"]
    assert pickle.loads(pickle.dumps(registry)) == {"naive": int, "coact": str}


def test_lazy_registry_name_registered_directly_is_not_loaded_again():
    registry = LazyRegistry({})
    module = _Registering(registry, "coact", str)
    registry.lazy["coact"] = module
    registry["coact"] = str  # its module was imported by other code first
    assert registry["coact"] is str and module.imports == 0 and registry.lazy == {}
