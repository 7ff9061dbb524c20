"""Every shipped config composes through verl's own entrypoint, and ships inside the package."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from coact_verl.config import CoActConfig
from coact_verl.launch import CPU_ENV, config_dir

REPO = Path(__file__).resolve().parents[1]
PRIMARY_CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
EXAMPLE_CONFIGS = sorted((REPO / "examples").glob("**/*.yaml"))


def _compose(config_path: Path, name: str) -> dict:
    import os

    result = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(config_path), "--config-name", name,
         "--cfg", "job"],
        capture_output=True, text=True, timeout=240, env={**os.environ, **CPU_ENV},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return yaml.safe_load(result.stdout)


def test_there_are_primary_configs():
    assert {"coact_grpo", "coact_grpo_cpu"} <= set(PRIMARY_CONFIGS)


@pytest.mark.parametrize("name", PRIMARY_CONFIGS)
def test_config_composes_with_cfg_job(name):
    job = _compose(config_dir(), name)
    settings = CoActConfig.from_mapping(job["coact"])  # typed check of the plugin section
    assert job["actor_rollout_ref"]["rollout"]["agent"]["agent_loop_manager_class"].startswith("coact_verl.")
    assert job["trainer"]["v1"]["trainer_mode"] in {"coact", "coact_dpo"}
    if name.endswith("_cpu"):
        assert job["actor_rollout_ref"]["rollout"]["name"] == "hf"
        assert job["trainer"]["device"] == "cpu"
    else:
        assert job["actor_rollout_ref"]["rollout"]["name"] == "vllm"
    assert settings.router.policy in {"coact", "lowest_agreement", "random", "self_only", "gold_all"}


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=[p.name for p in EXAMPLE_CONFIGS])
def test_example_config_composes(path):
    job = _compose(path.parent, path.stem)
    CoActConfig.from_mapping(job["coact"])  # typed check of the plugin section
    assert job["trainer"]["v1"]["trainer_mode"] in {"coact", "coact_dpo"}
    assert job["actor_rollout_ref"]["rollout"]["name"] == "vllm"  # the examples are GPU recipes


def test_recipe_yaml_lists_every_plugin_setting_with_its_default():
    section = yaml.safe_load((REPO / "configs" / "recipe" / "coact_grpo.yaml").read_text())["coact"]
    defaults = dataclasses.asdict(CoActConfig())
    assert {k: set(v) for k, v in section.items()} == {k: set(v) for k, v in defaults.items()}
    assert CoActConfig.from_mapping(section) == CoActConfig()


def test_unknown_plugin_key_is_rejected():
    with pytest.raises(ValueError, match="unknown keys under coact.router"):
        CoActConfig.from_mapping({"router": {"polcy": "random"}})


def test_wheel_ships_the_configs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(REPO)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("coact_verl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in PRIMARY_CONFIGS:
        assert f"coact_verl/configs/{name}.yaml" in names
    assert "coact_verl/configs/recipe/coact_grpo.yaml" in names
    assert "coact_verl/configs/backend/cpu.yaml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[verl.plugins]" in text and "coact = coact_verl.plugin" in text
