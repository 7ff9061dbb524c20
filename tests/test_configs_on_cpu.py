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
    if "_classic" in name:  # verl's classic RayPPOTrainer, groups labelled in the coact reward manager
        assert job["trainer"]["use_v1"] is False and job["reward"]["reward_manager"]["name"] == "coact"
        assert job["actor_rollout_ref"]["rollout"]["agent"]["agent_loop_manager_class"].endswith(
            ".classic.CoActClassicAgentLoopManager"
        )
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


GPU_LAYOUTS = {
    "1 GPU": ["trainer.n_gpus_per_node=1", "trainer.nnodes=1"],
    "2 nodes x 8 GPUs": ["trainer.n_gpus_per_node=8", "trainer.nnodes=2"],
}
ALL_CONFIGS = [(None, name) for name in PRIMARY_CONFIGS] + [(p.parent, p.stem) for p in EXAMPLE_CONFIGS]


def _compose_in_process(config_path: Path, name: str, overrides: list[str]):
    """The config ``main_ppo --config-path <path> --config-name <name> <overrides>`` composes (Hydra's compose API)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_path), version_base=None):
        return compose(config_name=name, overrides=overrides)


@pytest.mark.parametrize("layout", sorted(GPU_LAYOUTS))
@pytest.mark.parametrize(("folder", "name"), ALL_CONFIGS, ids=[n for _, n in ALL_CONFIGS])
def test_config_passes_verls_validate_config(folder, name, layout):
    """What main_ppo runs before anything starts: ``validate_config`` with the reference/critic roles it derives.

    ``validate_config`` is config arithmetic only (the GPU count is ``trainer.n_gpus_per_node * trainer.nnodes``),
    so it runs here without a GPU; main_ppo's preceding ``auto_set_device`` only rewrites ``trainer.device``.
    """
    import warnings

    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    config = _compose_in_process(folder or config_dir(), name, GPU_LAYOUTS[layout])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # need_critic warns that GRPO needs no critic
        use_critic = need_critic(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=use_critic)
    actor = config.actor_rollout_ref.actor
    if config.trainer.v1.trainer_mode == "coact_dpo":  # what CoActDPOTrainer checks at start-up
        assert actor.ppo_micro_batch_size_per_gpu % 2 == 0 and not actor.use_dynamic_bsz and not actor.shuffle
        assert need_reference_policy(config)


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


def test_gpu_extra_pins_verls_tested_stack(monkeypatch):
    """``pip install -e ".[gpu]"`` gets exactly the vllm/torch/transformers pins of verl 0.9.1's own ``vllm``
    extra and a pinned flash-attn (verl's build for that torch), as read from the installed verl's metadata."""
    import runpy
    from importlib.metadata import requires

    import setuptools
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    runpy.run_path(str(REPO / "setup.py"))

    verl_requirements = [Requirement(r) for r in requires("verl")]

    def expand(requirements: list[Requirement]) -> dict[str, str]:
        """{name: specifier} of the requirements with verl's extras resolved (one level is all verl uses)."""
        pins: dict[str, str] = {}
        for req in requirements:
            if req.name != "verl":
                pins[req.name] = str(req.specifier)
                continue
            assert str(req.specifier) == "==0.9.1", req
            for sub in verl_requirements:
                if sub.marker and any(sub.marker.evaluate({**default_environment(), "extra": e}) for e in req.extras):
                    pins.setdefault(sub.name, str(sub.specifier))
        return pins

    gpu = expand([Requirement(r) for r in captured["extras_require"]["gpu"]])
    tested = expand([Requirement("verl[vllm]==0.9.1")])
    for name in ("vllm", "torch", "transformers"):
        assert tested[name].startswith("==") and gpu.get(name) == tested[name], (name, gpu.get(name), tested[name])
    assert gpu.get("flash-attn", "").startswith("=="), gpu.get("flash-attn")
