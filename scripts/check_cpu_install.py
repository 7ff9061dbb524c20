"""Fail when a CPU install would get (or has got) a CUDA build of torch or NVIDIA runtime wheels.

``--dry-run-requirements SPEC`` asks pip what installing SPEC would add and rejects any ``nvidia-*``
package or a torch other than the one installed; without it, the installed environment is checked.
Skipped on hosts with an NVIDIA driver, where CUDA wheels are wanted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from importlib import metadata


def _cuda_host() -> bool:
    return shutil.which("nvidia-smi") is not None


def check_installed() -> list[str]:
    problems = []
    import torch

    if torch.version.cuda is not None:
        problems.append(f"torch {torch.__version__} is a CUDA build (torch.version.cuda={torch.version.cuda})")
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("nvidia-") or name in {"vllm", "flash-attn", "flash_attn", "triton"}:
            problems.append(f"{name} {dist.version} is installed")
    return problems


def check_dry_run(spec: str) -> list[str]:
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", spec],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    installs = [item["metadata"] for item in json.loads(report.stdout).get("install", [])]
    problems = []
    for meta in installs:
        name = meta["name"].lower()
        if name.startswith("nvidia-") or name == "torch":
            problems.append(f"installing {spec} would add {name} {meta['version']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry-run-requirements", metavar="SPEC", default=None)
    args = parser.parse_args()
    if _cuda_host():
        print("check_cpu_install: NVIDIA driver present; CUDA wheels allowed")
        return 0
    problems = check_dry_run(args.dry_run_requirements) if args.dry_run_requirements else check_installed()
    for problem in problems:
        print(f"check_cpu_install: {problem}", file=sys.stderr)
    if not problems:
        print("check_cpu_install: ok (no CUDA torch, no NVIDIA wheels)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
