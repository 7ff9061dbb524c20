"""The import graph of ``coact_verl``: no cycles, and no import from a lower layer up to a higher one.

Imports inside functions count too (a lazy import is still a dependency). Every module must belong to a
layer below, so a new package has to be placed deliberately.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "coact_verl"

#: Bottom to top. A module belongs to the layer of its longest matching prefix; it may import its own layer
#: and the layers below.
LAYERS: tuple[tuple[str, ...], ...] = (
    # contracts and settings
    (
        "coact_verl",
        "coact_verl.tasks",
        "coact_verl.records",
        "coact_verl.state_file",
        "coact_verl.config",
        "coact_verl.metric_keys",
    ),
    # answer checking
    ("coact_verl.consistency",),
    # routing, rewards and pairs, the DPO loss
    ("coact_verl.router", "coact_verl.rewards", "coact_verl.losses"),
    # users' votes and edits (the oracle service estimates attentiveness with them)
    ("coact_verl.feedback",),
    # the oracle: service, backends, client
    ("coact_verl.oracle",),
    # prompt pool and generation, the feedback queue, step metrics
    ("coact_verl.pool", "coact_verl.feedback.queue", "coact_verl.metrics"),
    # the group step
    ("coact_verl.group",),
    # between two training steps
    ("coact_verl.step",),
    # verl touch-points
    ("coact_verl.adapters", "coact_verl.cpu", "coact_verl.plugin"),
    # tools on top of the library
    (
        "coact_verl.data",
        "coact_verl.evaluation",
        "coact_verl.report",
        "coact_verl.serving",
        "coact_verl.demo",
        "coact_verl.launch",
        "coact_verl.cli",
        "coact_verl.testbed",
        "coact_verl.configs",
    ),
)


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: {coact_verl modules it imports}}``; ``from pkg import name`` points at ``pkg.name`` when that
    is a module, else at ``pkg``."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in modules else base)
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> int:
    best, layer = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), index
    return layer


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{src} (layer {layer_of(src)}) -> {dst} (layer {layer_of(dst)})"
        for src, targets in graph.items()
        for dst in targets
        if layer_of(dst) > layer_of(src)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if layer_of(m) < 0] == []


def test_no_import_runs_from_a_lower_layer_up():
    assert upward_imports(import_graph()) == []


def test_the_import_graph_has_no_cycles():
    assert cycles(import_graph()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    package = tmp_path / "coact_verl"
    (package / "pool").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text("from coact_verl.pool.pool import PromptPool\n")
    (package / "pool" / "__init__.py").write_text("from . import pool\n")
    (package / "pool" / "pool.py").write_text("def f():\n    from coact_verl import tasks\n")
    graph = import_graph(package)
    assert upward_imports(graph) == ["coact_verl.tasks (layer 0) -> coact_verl.pool.pool (layer 5)"]
    assert cycles(graph) == [["coact_verl.pool.pool", "coact_verl.tasks"]]
