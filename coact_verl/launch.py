"""Launch verl's own entrypoint (``python -m verl.trainer.main_ppo``) with a CoAct config and read back
the step metrics it prints. The demo, the end-to-end tests and the benchmarks all go through here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

# Environment for a local CPU run: no Ray token auth on a private single-host cluster, no hub access,
# no wandb, quiet tokenizers.
CPU_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_DEDUP_LOGS": "0",
}
_STEP_LINE = re.compile(r"step:(\d+) - (.*)$")
_NUMBER = re.compile(r"^(?:np\.\w+\()?(-?[\d.]+(?:e[-+]?\d+)?|nan|inf)\)?$")


def config_dir() -> Path:
    """Absolute path of the shipped Hydra configs (works from a checkout and from an installed package)."""
    return Path(str(resources.files("coact_verl.configs")))


def parse_step_metrics(log_text: str) -> dict[int, dict[str, float]]:
    """``{step: {metric: value}}`` from verl's console logger lines ``step:N - key:value - ...``."""
    steps: dict[int, dict[str, float]] = {}
    for line in log_text.splitlines():
        match = _STEP_LINE.search(line)
        if not match:
            continue
        metrics = steps.setdefault(int(match.group(1)), {})
        for item in match.group(2).split(" - "):
            key, _, raw = item.partition(":")
            number = _NUMBER.match(raw.strip())
            if key and number:
                metrics[key.strip()] = float(number.group(1))
    return steps


@dataclass
class TrainerRun:
    """Outcome of one ``main_ppo`` run."""

    returncode: int
    log_path: Path
    wall_s: float
    steps: dict[int, dict[str, float]] = field(default_factory=dict)

    def metric(self, name: str) -> list[float]:
        """The metric's value at every step that logged it, in step order."""
        return [self.steps[s][name] for s in sorted(self.steps) if name in self.steps[s]]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def run_trainer(
    config_name: str,
    overrides: list[str],
    log_path: str | Path,
    *,
    config_path: str | Path | None = None,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 900,
    echo: bool = False,
) -> TrainerRun:
    """Run ``python -m verl.trainer.main_ppo --config-path <configs> --config-name NAME overrides...``.

    ``config_path`` defaults to the shipped configs (:func:`config_dir`).

    The child gets its own process group and is killed with everything it started (Ray included) if it
    outlives ``timeout_s``; the run then reports return code 124.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **CPU_ENV, **(extra_env or {})}
    command = [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        "--config-path",
        str(config_path or config_dir()),
        "--config-name",
        config_name,
        *overrides,
    ]
    start = time.monotonic()
    deadline = start + timeout_s
    with log_path.open("w") as log, log_path.open() as reader:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        returncode, pending = None, ""
        while returncode is None:
            returncode = process.poll()
            *lines, pending = (pending + reader.read()).split("\n")
            for line in lines:
                match = _STEP_LINE.search(line) if echo else None
                if match:
                    print(match.group(0), flush=True)
            if returncode is None and time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                returncode = 124
            elif returncode is None:
                time.sleep(0.5)
    run = TrainerRun(returncode=returncode, log_path=log_path, wall_s=time.monotonic() - start)
    run.steps = parse_step_metrics(log_path.read_text(errors="replace"))
    return run
