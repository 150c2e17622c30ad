"""The layout's promises, read from the source with `ast` (no module is imported): no import
circle among `relay/` and `bots/` modules, and the core imports nothing from the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("relay", "bots")
CORE = ("relay.model", "relay.hub", "relay.routing", "relay.outbox", "relay.config", "relay.policy", "relay.journal")
ABOVE_CORE = ("relay.compliance", "relay.console", "relay.evidence", "relay.commands", "relay.app", "relay.web",
              "relay.admin", "bots")
SEAMS = ("bots.base", "bots.send_order")
"""The Channel protocol and its send-ordering helper: what the hub and outbox talk to channels through."""


def module_files(root: Path = ROOT) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is one of our modules (a name may be a function)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours that `module` imports anywhere: at the top, inside a function, under
    TYPE_CHECKING (a type-only import is still a dependency a reader has to follow)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    deps: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found = _known(alias.name, modules)
                if found:
                    deps.add(found)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found = _known(f"{target}.{alias.name}", modules) or _known(target, modules)
                if found:
                    deps.add(found)
    deps.discard(module)
    return deps


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_import_circle_among_relay_and_bots_modules() -> None:
    graph = import_graph()
    assert len(graph) > 100  # the walk found the tree
    assert cycles(graph) == []


def test_the_core_imports_nothing_from_the_layers_above_it() -> None:
    wrong = sorted(f"{m} imports {d}" for m, deps in import_graph().items() if _under(m, CORE)
                   for d in deps if _under(d, ABOVE_CORE) and d not in SEAMS)
    assert wrong == []


def test_the_network_adapters_import_only_the_model_and_each_other() -> None:
    """bots → relay.model (and helpers with no relay state): never the hub, journal or workflow."""
    allowed = ("relay.model", "relay.passwords", "relay.login_throttle")
    wrong = sorted(f"{m} imports {d}" for m, deps in import_graph().items() if _under(m, ("bots",))
                   for d in deps if d.startswith("relay") and not _under(d, allowed))
    assert wrong == []


def test_the_circle_check_sees_a_circle(tmp_path: Path) -> None:
    """The check itself: a planted circle (through a function-level import) is found."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "relay" / "a.py").write_text("from relay.b import thing\n")
    (tmp_path / "relay" / "b.py").write_text("def thing():\n    from relay import a\n")
    (tmp_path / "bots" / "c.py").write_text("from . import d\n")
    (tmp_path / "bots" / "d.py").write_text("import bots.c\n")
    assert sorted(cycles(import_graph(tmp_path))) == [["bots.c", "bots.d"], ["relay.a", "relay.b"]]
