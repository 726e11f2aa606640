"""The layers of the code, enforced: a test walks every import (`ast`) and fails on an import
that goes up a layer, on an import cycle, on FastAPI below the HTTP layer, and on a module
grown past ~400 lines. docs/architecture.md explains the layers."""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "routers", "schemas")

# Lower numbers are lower layers. A module may import its own package and any lower layer;
# packages on one level (http, grpc, server, training) do not import each other.
LAYERS: dict[str, int] = {
    "app.config": 0,
    "app.errors": 0,
    "app.metrics": 0,
    "app.native": 0,
    "app.tracing": 0,  # OpenTelemetry, a no-op unless on: the data plane and HTTP both trace
    "schemas": 0,
    "app.store": 1,
    "app.serving": 2,
    "app.codecs": 3,
    "app.http": 4,
    "app.grpc": 4,
    "app.server": 4,
    "app.training": 4,
    # `modelport score`: runs the stream codecs and the data plane in-process, or talks HTTP
    # to a server itself; beside http, which it does not need.
    "app.bulk": 4,
    "routers": 5,
    "app.main": 6,
    "app.cli": 6,
}
# The web framework stays above the data plane: nothing in these layers may import it.
WEB_FRAMEWORKS = ("fastapi", "starlette")
BELOW_HTTP = 3
MAX_LINES = 400


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> tuple[str, int]:
    """The layer (its package key and level) that a module of ours belongs to."""
    for key in sorted(LAYERS, key=len, reverse=True):
        if module == key or module.startswith(key + "."):
            return key, LAYERS[key]
    raise KeyError(f"{module} is in no layer: add its package to LAYERS")


def imports_of(path: Path, root: Path, ours: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in a file, function-level ones included."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                yield node.lineno, candidate if candidate in ours else node.module


def source_files(root: Path) -> list[Path]:
    """Every module of ours but `app/__init__.py`, the namespace of the layers (kept empty)."""
    return sorted(
        path
        for package in PACKAGES
        if (root / package).is_dir()
        for path in (root / package).rglob("*.py")
        if path != root / "app" / "__init__.py"
    )


def check_layers(root: Path) -> list[str]:
    """Every broken rule in the tree under `root`, one line each (empty when all hold)."""
    files = source_files(root)
    ours = {module_name(path, root) for path in files}
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for path in files:
        module = module_name(path, root)
        key, level = layer_of(module)
        where = f"{path.relative_to(root)}"
        graph[module] = set()
        for line, imported in imports_of(path, root, ours):
            top = imported.split(".")[0]
            if top in WEB_FRAMEWORKS and level <= BELOW_HTTP:
                problems.append(f"{where}:{line}: imports {imported} below the HTTP layer")
            if top not in {"app", "routers", "schemas"} or imported == "app":
                continue
            graph[module].add(imported)
            their_key, their_level = layer_of(imported)
            if their_key == key:
                continue
            if their_level > level or (their_level == level and level > 0):
                problems.append(
                    f"{where}:{line}: {key} (layer {level}) imports {imported} ({their_key}, layer {their_level})"
                )
            elif their_level == level == 0:
                problems.append(f"{where}:{line}: leaf {key} imports leaf {imported}")
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            problems.append(f"{where}: {lines} lines (over {MAX_LINES}: split it by concern)")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in find_cycles(graph)]
    return problems


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
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
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_tree_keeps_its_layers() -> None:
    assert check_layers(REPO) == []


def test_every_package_of_ours_has_a_layer() -> None:
    for path in source_files(REPO):
        layer_of(module_name(path, REPO))
    assert (REPO / "app" / "__init__.py").read_text() == ""


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


CLEAN = {
    "app/__init__.py": "",
    "app/errors.py": "",
    "app/serving/__init__.py": "",
    "app/serving/model.py": "from app.errors import *\n",
    "app/http/__init__.py": "",
    "app/http/deps.py": "import fastapi\nfrom app.serving import model\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert check_layers(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("module", "text", "expected"),
    [
        (
            "app/serving/model.py",
            "from app.http.deps import x\n",
            "app.serving (layer 2) imports app.http.deps",
        ),
        ("app/serving/model.py", "def f():\n    import app.http.deps\n", "imports app.http.deps"),
        (
            "app/serving/model.py",
            "from fastapi import Request\n",
            "imports fastapi below the HTTP layer",
        ),
        (
            "app/serving/model.py",
            "import starlette.types\n",
            "imports starlette.types below the HTTP layer",
        ),
        ("app/errors.py", "from app import serving\n", "imports app.serving"),
        ("app/serving/model.py", "x = 1\n" * 401, "401 lines"),
    ],
)
def test_a_broken_rule_is_found(tmp_path: Path, module: str, text: str, expected: str) -> None:
    problems = check_layers(_tree(tmp_path, {**CLEAN, module: text}))
    assert any(expected in problem for problem in problems), problems


def test_a_cycle_is_found(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "app/serving/batching.py": "from app.serving import model\n",
        "app/serving/model.py": "def f():\n    from app.serving.batching import g\n",
    }
    problems = check_layers(_tree(tmp_path, files))
    assert problems == ["import cycle: app.serving.batching -> app.serving.model"]
