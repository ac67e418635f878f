"""The import structure of the harness: no import cycles, and each layer imports only the layers below it.

Imports are read with `ast` from the sources of harness/ and hydra_plugins/ (nothing is imported): those at module
level and those inside functions alike, since a function-level import is a dependency that only runs later. An
import under `if TYPE_CHECKING:` never runs: it is left out of the cycle check and kept in the layering checks.
`from pkg import name` depends on the module pkg.name when there is one, else on pkg. Importing a module runs its
parent packages' __init__ first: the cycle check counts that edge too, except to the packages the importing module is
itself inside of (they are being imported already, and a package that imports its own submodules would otherwise be a
cycle with each of them).
"""

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "hydra_plugins")


@dataclass(frozen=True)
class Import:
    """One import statement of a module, resolved to the module of this project that it runs."""

    source: str  # importing module, dotted
    target: str  # imported module, dotted
    path: str  # the importing file, relative to the repository root
    line: int
    function: str | None  # the enclosing function, None at module level
    type_checking: bool  # under `if TYPE_CHECKING:`
    package_init: bool = False  # target is a parent package of the module named, whose __init__ runs first

    def where(self) -> str:
        inside = f", in {self.function}" if self.function else ""
        init = ", its package __init__" if self.package_init else ""
        return f"{self.path}:{self.line}{inside}{init}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str | None, bool]]:
    """Every import statement with its enclosing function (None at module level) and whether TYPE_CHECKING guards
    it."""

    def walk(node: ast.AST, function: str | None, guarded: bool) -> Iterator:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, function, guarded
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name if function is None else f"{function}.{node.name}"
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                yield from walk(stmt, function, True)
            for stmt in node.orelse:
                yield from walk(stmt, function, guarded)
            return
        for child in ast.iter_child_nodes(node):
            yield from walk(child, function, guarded)

    yield from walk(tree, None, False)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a module of this project (`import a.b.c` runs a.b.c)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _targets(stmt: ast.Import | ast.ImportFrom, source: str, modules: dict[str, Path]) -> list[str]:
    """The modules of this project an import statement runs, in its order."""
    if isinstance(stmt, ast.Import):
        found = [_known(alias.name, modules) for alias in stmt.names]
        return [t for t in found if t is not None]
    base = stmt.module or ""
    if stmt.level:  # relative: from the importing module's package, one level up per dot after the first
        package = source.split(".") if modules[source].name == "__init__.py" else source.split(".")[:-1]
        anchor = ".".join(package[: len(package) - stmt.level + 1])
        base = f"{anchor}.{base}" if base else anchor
    found = []
    for alias in stmt.names:
        submodule = f"{base}.{alias.name}"
        found.append(submodule if submodule in modules else _known(base, modules))
    return [t for t in found if t is not None]


def _packages_above(module: str, modules: dict[str, Path]) -> list[str]:
    parts = module.split(".")
    return [p for p in (".".join(parts[:end]) for end in range(1, len(parts))) if p in modules]


def _imports() -> list[Import]:
    modules, found = _modules(), []
    for source, path in modules.items():
        tree, relative = ast.parse(path.read_text(), filename=str(path)), str(path.relative_to(ROOT))
        inside = {source, *_packages_above(source, modules)}
        for stmt, function, guarded in _statements(tree):
            for target in dict.fromkeys(_targets(stmt, source, modules)):
                if target != source:
                    found.append(Import(source, target, relative, stmt.lineno, function, guarded))
                for package in _packages_above(target, modules):
                    if package not in inside:
                        found.append(Import(source, package, relative, stmt.lineno, function, guarded, True))
    return found


IMPORTS = _imports()


# --- Cycles ---------------------------------------------------------------------------------------------------------


def _graph(imports: list[Import]) -> dict[str, dict[str, Import]]:
    """source -> target -> the first import statement of that edge (runtime imports only)."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if not imp.type_checking:
            graph.setdefault(imp.source, {}).setdefault(imp.target, imp)
    return graph


def _components(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _shortest_path(graph: dict[str, dict[str, Import]], start: str, goal: str, within: set[str]) -> list[str]:
    paths, seen = {start: [start]}, {start}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, {})):
                if nxt in within and nxt not in seen:
                    seen.add(nxt)
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        if goal in paths:
            return paths[goal]
        frontier = following
    raise AssertionError(f"{goal} is not reachable from {start}")


def _cycles(graph: dict[str, dict[str, Import]], component: list[str]) -> list[list[str]]:
    """For each import edge inside a component, the shortest cycle through it; each cycle once, from its smallest
    module, closed (first module repeated at the end)."""
    members, cycles = set(component), {}
    for source in component:
        for target in graph.get(source, {}):
            if target in members:
                loop = [source, *_shortest_path(graph, target, source, members)[:-1]]
                at = loop.index(min(loop))
                loop = loop[at:] + loop[:at]
                cycles[tuple(loop)] = loop + [loop[0]]
    return [cycles[key] for key in sorted(cycles)]


def _describe(graph: dict[str, dict[str, Import]], component: list[str]) -> str:
    lines = [f"import cycle among {len(component)} modules: {', '.join(component)}"]
    for cycle in _cycles(graph, component):
        lines.append("  " + " -> ".join(cycle))
        for source, target in zip(cycle, cycle[1:]):
            lines.append(f"      {source} imports {target} at {graph[source][target].where()}")
    return "\n".join(lines)


GRAPH = _graph(IMPORTS)
COMPONENTS = _components(GRAPH)


def test_the_scan_sees_the_imports():
    """The parser resolves the imports it must (else every check below would pass on an empty graph)."""
    assert "harness.tasks.base" in GRAPH["harness.tasks.registry"]  # from harness.tasks.base import Task
    assert "harness.tasks.base" in GRAPH["harness.tasks"]  # from harness.tasks.base import ... (a package)
    assert "harness.plugins" in GRAPH["harness.train"]  # from harness import entry, plugins
    assert any(i.function for i in IMPORTS)  # function-level imports
    assert any(i.type_checking for i in IMPORTS)
    # from harness.tasks.base import ... runs harness/tasks/__init__.py first
    assert "harness.tasks" in GRAPH["harness.batched.models"]
    assert "harness.tasks" not in GRAPH["harness.tasks.registry"]  # its own package: being imported already


def test_no_import_cycles():
    """No module imports, directly or through others, a module that imports it."""
    cycles = [_describe(GRAPH, c) for c in COMPONENTS]
    assert not cycles, f"{len(cycles)} import cycle(s) in harness/ and hydra_plugins/:\n" + "\n".join(cycles)


# --- Layers ---------------------------------------------------------------------------------------------------------


def _violations(package: str, allowed: tuple[str, ...] = (), forbidden: tuple[str, ...] = ()) -> list[str]:
    """Imports of this project's modules from `package`'s modules that leave `allowed` (when given) or enter
    `forbidden` (the modules named; their packages' __init__ are left to the cycle check)."""

    def under(module: str, prefixes: tuple[str, ...]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    bad = []
    for imp in IMPORTS:
        if imp.package_init or not under(imp.source, (package,)):
            continue
        if (allowed and not under(imp.target, (package, *allowed))) or under(imp.target, forbidden):
            bad.append(f"{imp.source} imports {imp.target} at {imp.where()}")
    return bad


def test_report_imports_only_tracking():
    """The report reads the tracker's store and draws from it; it never reaches back into training code (the error
    types of harness.errors sit below everything)."""
    bad = _violations("harness.report", allowed=("harness.tracking", "harness.errors"))
    assert not bad, "harness/report/ imports beyond harness.tracking:\n" + "\n".join(bad)


def test_sweep_never_imports_report():
    bad = _violations("harness.sweep", forbidden=("harness.report",))
    assert not bad, "harness/sweep/ imports harness.report:\n" + "\n".join(bad)


def test_tasks_never_import_batched():
    """The task contract sits below the batched engine: a task declares its batched form as data."""
    bad = _violations("harness.tasks", forbidden=("harness.batched",))
    assert not bad, "harness/tasks/ imports harness.batched:\n" + "\n".join(bad)
