"""The ``verl.plugins`` entry point: every registry filled in a fresh process, and loud failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from coact_verl.plugin import FAIL_ENV

PROBE = """
import json, verl
from verl.plugin.platform import get_platform
from verl.workers.rollout.replica import RolloutReplicaRegistry
from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.engine.base import EngineRegistry
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo.v1 import get_trainer_cls
print(json.dumps({
    "platform": get_platform().device_name,
    "replica": RolloutReplicaRegistry.get("hf").__name__,
    "adapter": _ROLLOUT_REGISTRY[("hf", "async")],
    "engine": EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
    "reward_manager": get_reward_manager_cls("coact").__name__,
    "trainer": get_trainer_cls("coact").__name__,
}))
"""


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env={**clean, **env}
    )


def test_entry_point_registers_everything_without_env_vars():
    result = _python(PROBE)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {
        "platform": "cpu",
        "replica": "HFReplica",
        "adapter": "coact_verl.cpu.hf_rollout.HFServerAdapter",
        "engine": "FSDPEngineWithLMHead",
        "reward_manager": "CoActRewardManager",
        "trainer": "CoActTrainer",
    }


def test_broken_install_fails_loudly_naming_the_cause():
    result = _python("import verl; print('imported')", **{FAIL_ENV: "coact_verl.adapters.registration"})
    assert result.returncode != 0
    assert "imported" not in result.stdout
    assert "coact-verl failed to register with verl" in result.stderr
    assert "importing coact_verl.adapters.registration raised ImportError" in result.stderr


def test_plugin_can_be_disabled():
    result = _python(PROBE, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode != 0 and "Unknown rollout mode: hf" in result.stderr
