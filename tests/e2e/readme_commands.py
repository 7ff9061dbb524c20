"""The shell commands of README.md's code blocks, as the e2e tests run them (one logical line per command)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx

README = Path(__file__).resolve().parents[2] / "README.md"


def section(heading: str, text: str | None = None) -> str:
    """The text under a markdown heading (``## Name`` or ``### Name``), up to the next heading of its level or above
    (``#`` lines inside code blocks are shell comments, not headings)."""
    lines = (README.read_text() if text is None else text).splitlines(keepends=True)
    start = level = None
    fenced = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"(#+) (.*)\n?$", line)
        if match and start is None and match.group(2) == heading:
            start, level = index + 1, len(match.group(1))
        elif match and start is not None and len(match.group(1)) <= level:
            return "".join(lines[start:index])
    assert start is not None, f"README.md has no section {heading!r}"
    return "".join(lines[start:])


def bash_commands(text: str) -> list[str]:
    """Logical lines of every ```bash block in ``text``: continuations joined, comment-only lines dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                out.append(line.strip())
    return out


def command(text: str, prefix: str) -> str:
    """The one command of ``text``'s bash blocks that starts with ``prefix``."""
    found = [c for c in bash_commands(text) if c.startswith(prefix)]
    assert len(found) == 1, f"expected one `{prefix} ...` command in the README section, found {found}"
    return found[0]


def words(line: str) -> list[str]:
    """The command's words, as the shell splits them (trailing ``# comment`` dropped)."""
    return shlex.split(line, comments=True)


def export_value(line: str) -> tuple[str, str]:
    """Run an ``export NAME=...`` line in bash and return ``(NAME, value)``."""
    name = re.match(r"export (\w+)=", line).group(1)
    out = subprocess.run(["bash", "-c", f'{line}\nprintf %s "${name}"'], capture_output=True, text=True, check=True)
    assert out.stdout, f"{line!r} set nothing"
    return name, out.stdout


def option(argv: list[str], name: str) -> str:
    """The value after ``name`` in ``argv``."""
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def replace_option(argv: list[str], name: str, value: str) -> list[str]:
    """``argv`` with the value of option ``name`` replaced (the option must be there)."""
    index = argv.index(name)
    return [*argv[: index + 1], value, *argv[index + 2 :]]


def replace_overrides(overrides: list[str], values: dict[str, str]) -> list[str]:
    """Hydra ``key=value`` overrides with the values of ``values``' keys replaced; every key must be there."""
    keys = {o.split("=", 1)[0] for o in overrides}
    missing = set(values) - keys
    assert not missing, f"the README command lacks {sorted(missing)}"
    out = []
    for item in overrides:
        key = item.split("=", 1)[0]
        out.append(f"{key}={values[key]}" if key in values else item)
    return out


def serve(argv: list[str], env: dict[str, str], log: Path, port: int, timeout_s: float = 60) -> subprocess.Popen:
    """Start ``coact-verl oracle serve ...`` (the venv's script) and wait until ``/healthz`` on ``port`` answers."""
    assert argv[:3] == ["coact-verl", "oracle", "serve"], argv
    script = Path(sys.executable).with_name("coact-verl")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(script), *argv[1:]], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"oracle serve exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"oracle serve not healthy within {timeout_s} s:\n{log.read_text()[-3000:]}")
