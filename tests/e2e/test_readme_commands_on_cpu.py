"""README.md's commands, run as written: the launch section's ``prepare`` and ``main_ppo`` lines, the multi-node
section's token, ``oracle serve`` and URL lines, and the oracle service section's ``serve`` line.

Only what the README itself names for a CPU host is changed (``--config-name coact_grpo_cpu`` in place of
``coact_grpo``), plus a tiny local model and data in place of Qwen and GSM8K (as in the other e2e tests), one
step, a free port and files under the test's folder. A documented command that stops working fails here.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from coact_verl.launch import run_trainer
from coact_verl.oracle.client import OracleSetupError, handshake
from coact_verl.oracle.local import stop_local_service
from tests.e2e.readme_commands import (
    bash_commands,
    command,
    export_value,
    option,
    replace_option,
    replace_overrides,
    section,
    serve,
    words,
)

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SHARED_GSM8K = REPO.parent / "shared" / "data" / "gsm8k"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tiny_assets: dict[str, Path], tmp_path: Path) -> tuple[str, Path, list[str]]:
    """The README's training command on the CPU backend: (config name, config path, overrides)."""
    text = section("Launching with verl")
    argv = words(command(text, "python -m verl.trainer.main_ppo"))
    assert argv[:3] == ["python", "-m", "verl.trainer.main_ppo"], argv
    swap = re.search(r"replace\s+`--config-name (\S+)`\s+with\s+`--config-name (\S+)`", text)
    assert swap, "the README names no CPU config for its launch command"
    name = option(argv, "--config-name")
    assert name == swap.group(1), (name, swap.group(1))
    assert argv[3] == "--config-path" and argv[5] == "--config-name", argv
    overrides = argv[7:]
    overrides = replace_overrides(
        overrides,
        {
            "data.train_files": str(tiny_assets["train"]),
            "data.val_files": str(tiny_assets["test"]),
            "actor_rollout_ref.model.path": str(tiny_assets["model"]),
            "coact.oracle.gold_path": str(tiny_assets["train_gold"]),
        },
    )
    overrides += ["trainer.total_training_steps=1", f"trainer.default_local_dir={tmp_path / 'ckpt'}"]
    return swap.group(2), REPO / option(argv, "--config-path"), overrides


def _assert_oracle_labelled(run) -> None:
    assert run.returncode == 0, f"main_ppo exited {run.returncode}\n{run.tail(80)}"
    assert sorted(run.steps) == [1], run.tail(80)
    step = run.steps[1]
    assert step.get("coact/oracle/status_labeled", 0) >= 1, step
    assert step["coact/oracle/budget_spent"] >= 1 and "coact/oracle/status_unavailable" not in step, step


def test_readme_launch_commands_prepare_and_train_with_the_oracle(tiny_assets, tmp_path, monkeypatch):
    """``coact-verl prepare`` writes the files the training command names; the training command trains on CPU,
    the oracle it starts itself labelling (a random token and a database in the run's folder)."""
    monkeypatch.delenv("COACT_ORACLE_TRAINER_TOKEN", raising=False)
    text = section("Launching with verl")
    prepare = words(command(text, "coact-verl prepare"))
    train = dict(o.split("=", 1) for o in words(command(text, "python -m verl.trainer.main_ppo"))[7:])
    if SHARED_GSM8K.is_dir():  # "or a local jsonl folder": GSM8K's local copy instead of the hub
        out = option(prepare, "--out")
        argv = replace_option(replace_option(prepare, "--src", str(SHARED_GSM8K)), "--out", str(tmp_path / out))
        script = Path(sys.executable).with_name("coact-verl")
        done = subprocess.run([str(script), *argv[1:]], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        for key in ("data.train_files", "data.val_files", "coact.oracle.gold_path"):
            assert (tmp_path / train[key]).is_file(), f"prepare wrote no {train[key]} ({key})"
    name, config_path, overrides = _launch(tiny_assets, tmp_path)
    run = run_trainer(name, overrides, tmp_path / "launch.log", config_path=config_path, timeout_s=300)
    _assert_oracle_labelled(run)
    assert (tmp_path / "ckpt" / "oracle.sqlite").is_file()


def test_readme_service_by_url_trains_and_a_wrong_token_stops_at_start_up(tiny_assets, tmp_path, monkeypatch):
    """The multi-node section's service (token exported, ``oracle serve``, ``coact.oracle.url``) with the launch
    command: a wrong token stops the run before any step with the message naming the fix; the right one trains."""
    monkeypatch.delenv("COACT_ORACLE_TRAINER_TOKEN", raising=False)
    text = section("Multi-node Ray clusters")
    exports = [c for c in bash_commands(text) if c.startswith("export ")]
    assert len(exports) == 1, exports
    env_name, token = export_value(exports[0])
    assert env_name == "COACT_ORACLE_TRAINER_TOKEN"
    port = _free_port()
    argv = words(command(text, "coact-verl oracle serve"))
    argv = replace_option(argv, "--db", str(tmp_path / "oracle.sqlite"))
    argv = replace_option(replace_option(argv, "--port", str(port)), "--gold", str(tiny_assets["train_gold"]))
    url_line = command(text, "coact.oracle.url=")
    assert "ORACLE_HOST:8765" in url_line, url_line
    url_override = url_line.replace("ORACLE_HOST:8765", f"127.0.0.1:{port}")
    proc = serve(argv, {**os.environ, env_name: token}, tmp_path / "oracle.log", port)
    try:
        name, config_path, overrides = _launch(tiny_assets, tmp_path)
        wrong = run_trainer(
            name,
            [*overrides, url_override],
            tmp_path / "wrong.log",
            config_path=config_path,
            extra_env={env_name: "not-the-token"},
            timeout_s=240,
        )
        log = wrong.log_path.read_text(errors="replace")
        assert wrong.returncode not in (0, 124) and not wrong.steps, wrong.tail(40)
        assert "rejected the trainer token" in log and "set COACT_ORACLE_TRAINER_TOKEN" in log, wrong.tail(40)
        print(f"\nwrong token: exit {wrong.returncode} after {wrong.wall_s:.1f} s")
        run = run_trainer(
            name,
            [*overrides, url_override],
            tmp_path / "url.log",
            config_path=config_path,
            extra_env={env_name: token},
            timeout_s=300,
        )
        _assert_oracle_labelled(run)
    finally:
        stop_local_service(proc)


def test_readme_oracle_service_command(tmp_path):
    """The oracle service section's ``serve`` line with its exported tokens: the trainer token passes the
    handshake with the budget the command sets, a wrong one is refused with the fix named."""
    text = section("The oracle service")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COACT_ORACLE_")}
    for line in (c for c in bash_commands(text) if c.startswith("export ")):
        name, value = export_value(line)
        env[name] = value
    assert {"COACT_ORACLE_ADMIN_TOKEN", "COACT_ORACLE_TRAINER_TOKEN"} <= set(env), "the section exports no tokens"
    serve_lines = [c for c in bash_commands(text) if c.startswith("coact-verl oracle serve --db")]
    argv = words(serve_lines[0])
    port = _free_port()
    argv = replace_option(argv, "--db", str(tmp_path / "oracle.sqlite"))
    gold = tmp_path / "train_gold.jsonl"
    gold.write_text('{"prompt_id": "p1", "answer": "1001"}\n')
    argv = replace_option(replace_option(argv, "--port", str(port)), "--gold", str(gold))
    proc = serve(argv, env, tmp_path / "oracle.log", port)
    try:
        url = f"http://127.0.0.1:{port}"
        info = handshake(url, env["COACT_ORACLE_TRAINER_TOKEN"], budget_total=int(option(argv, "--budget-total")))
        assert info["backend"] == "gold" and info["gold"] > 0 and info["budget"]["total"] == 3000
        with pytest.raises(OracleSetupError, match="COACT_ORACLE_TRAINER_TOKEN"):
            handshake(url, env["COACT_ORACLE_ADMIN_TOKEN"])  # a valid token, but not the trainer's
    finally:
        stop_local_service(proc)
