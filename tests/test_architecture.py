"""The structure docs/architecture.md promises, checked on the source: no import cycles, no
web or command-line framework below the shells, no role check in the shells (the services
check roles), no module of 500 lines or more.

Imports are read with ``ast`` (function-level imports included, ``if TYPE_CHECKING:``
blocks excluded), so a cycle hidden in a lazy import counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "connectors", "keys")
SHELLS = ("gateway.api", "gateway.cli")
FRAMEWORKS = ("aiohttp", "click")
# Outbound HTTP clients: they speak to a chain node (web3 takes aiohttp's session and
# timeout objects) and to alert webhooks. Adapters, not rules; nothing else may join.
ADAPTERS = frozenset(
    {"gateway.chain.backend", "gateway.chain.errors", "gateway.monitoring.webhook"}
)
MAX_LINES = 500
# Background tasks are started in one place, gateway.tasks (Supervised), which logs a task
# that dies and waits for it on stop. Elsewhere only these calls create a task, each a
# one-shot that ends with the call that made it, never a loop (module, enclosing function).
TASK_MAKERS = frozenset({"create_task", "ensure_future"})
ONE_SHOT_TASKS = frozenset(
    {
        # The concurrent readiness probes, in an asyncio.TaskGroup the call waits for.
        ("gateway.readiness", "check_dependencies"),
        # The policy reload a probe starts: shielded from the probe's timeout because calls
        # may be waiting for it; its outcome is retrieved by a done callback.
        ("gateway.readiness", "_policy"),
    }
)
# Modules still being split (issue 15); the list may only shrink.
OVERSIZED: frozenset[str] = frozenset()


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imported(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".") if is_package else module.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                # ``from package import submodule`` imports the submodule; otherwise the
                # names come from ``base`` itself.
                yield from (f"{base}.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from walk([c for c in children if isinstance(c, ast.stmt)])
                    for handler in children:
                        if isinstance(handler, ast.ExceptHandler):
                            yield from walk(handler.body)

    yield from walk(tree.body)


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    internal: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text("utf-8"))
        for target in _imported(tree, name, path.name == "__init__.py"):
            resolved = target
            while resolved and resolved not in modules:
                resolved = resolved.rpartition(".")[0]  # a name in a module: the module
            if resolved and resolved != name:
                internal[name].add(resolved)
            elif not resolved:
                external[name].add(target.split(".")[0])
    return internal, external


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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


def test_no_module_imports_one_that_imports_it_back() -> None:
    internal, _ = _graph()
    assert _cycles(internal) == []


def test_no_framework_below_the_shells() -> None:
    _, external = _graph()
    offenders = {
        module: sorted(set(imports) & set(FRAMEWORKS))
        for module, imports in external.items()
        if not module.startswith(SHELLS)
        and module not in ADAPTERS
        and set(imports) & set(FRAMEWORKS)
    }
    assert offenders == {}
    clients = {module for module, imports in external.items() if "aiohttp" in imports}
    assert "click" not in {i for m, imports in external.items() if m in ADAPTERS for i in imports}
    assert clients >= ADAPTERS, sorted(ADAPTERS - clients)  # a fixed adapter leaves the list


def test_no_role_check_in_the_shells() -> None:
    """Roles are checked by the services (``actor.may(...)``), never by an HTTP handler or
    a command, so every caller meets the same rule; a shell that must refuse before reading
    a body asks the service's own check (e.g. ``LeakTracer.authorize``)."""
    offenders = []
    for name, path in _modules().items():
        if not name.startswith(SHELLS):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "may"
            ):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_modules_stay_small() -> None:
    sizes = {name: len(path.read_text("utf-8").splitlines()) for name, path in _modules().items()}
    oversized = {name for name, lines in sizes.items() if lines >= MAX_LINES}
    assert oversized <= OVERSIZED, sorted(oversized - OVERSIZED)
    # A module split since it was listed must leave the list.
    assert oversized >= OVERSIZED, sorted(OVERSIZED - oversized)


def _task_makers(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """(enclosing function, line) of each ``create_task(...)``/``ensure_future(...)`` call,
    by any spelling: ``asyncio.create_task``, ``loop.create_task``, a bare imported name."""

    def visit(node: ast.AST, function: str) -> Iterator[tuple[str, int]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in TASK_MAKERS:
                yield function, node.lineno
        for child in ast.iter_child_nodes(node):
            yield from visit(child, function)

    yield from visit(tree, "<module>")


def test_background_tasks_start_only_in_gateway_tasks() -> None:
    found = {
        (name, function, line)
        for name, path in _modules().items()
        if name != "gateway.tasks"
        for function, line in _task_makers(ast.parse(path.read_text("utf-8")))
    }
    stray = sorted(f"{n}:{line} in {f}" for n, f, line in found if (n, f) not in ONE_SHOT_TASKS)
    assert stray == [], "start background work with gateway.tasks.Supervised"
    # An allowance whose call went away leaves the list.
    assert {(n, f) for n, f, _ in found} >= ONE_SHOT_TASKS


def test_the_task_rule_sees_every_spelling() -> None:
    source = (
        "import asyncio\nfrom asyncio import create_task\n"
        "async def a(loop):\n    loop.create_task(b())\n"
        "def c():\n    asyncio.create_task(b())\n    create_task(b())\n"
        "asyncio.ensure_future(b())\n"
    )
    assert sorted(_task_makers(ast.parse(source))) == [
        ("<module>", 8),
        ("a", 4),
        ("c", 6),
        ("c", 7),
    ]


def test_the_checks_see_a_cycle() -> None:
    """The cycle finder itself: a two-module loop and a self-contained chain."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []
