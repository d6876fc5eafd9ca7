"""The layout keeps its promises: few modules at the top of ``matcher/``, subpackages in data-flow order with no
import going against the flow, no import cycles, inference never reaching training, benchmark or command-line code,
every package listed for the wheel, and tests mirroring the package folders.

The import graph is read statically from the sources (every ``import``, including those inside functions; those
under ``if TYPE_CHECKING:`` are left out, as they never run)."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("matcher", "detectors")

# Layers in data-flow order: a module may import modules of its own layer or of earlier ones, never later ones.
LAYERS: list[tuple[str, ...]] = [
    ("matcher", "matcher.config", "matcher.registry", "matcher.resources", "matcher.io"),
    ("detectors", "detectors.network", "detectors.model", "detectors.detect", "detectors.evidence"),
    ("matcher.regions",),
    ("matcher.descriptors", "matcher.local"),
    ("matcher.retrieval",),
    ("matcher.references",),
    ("matcher.fusion",),
    ("matcher.pipeline",),
    ("matcher.isc",),
    ("matcher.report",),
    ("matcher.dedup",),
    ("matcher.cluster",),
    ("matcher.api",),
    ("matcher.service",),
    ("matcher.benchmark", "matcher.training", "detectors.synth", "detectors.train", "detectors.offline"),
    ("matcher.cli",),
]
INFERENCE_ENTRIES = ("matcher.api", "matcher.pipeline.pipeline", "matcher.pipeline.batch", "matcher.local.engine",
                     "matcher.isc.track", "matcher.isc.exhaustive", "matcher.references.open", "matcher.service.app")
NOT_FOR_INFERENCE = ("matcher.benchmark", "matcher.training", "matcher.cli", "detectors.synth", "detectors.train",
                     "detectors.offline")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST) -> list[tuple[str, str | None]]:
    """(module, imported name or None) of every runtime import statement."""
    out: list[tuple[str, str | None]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.extend((node.module, a.name) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """Module -> project modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    sources = _sources()
    edges: dict[str, set[str]] = {m: set() for m in sources}
    for mod, path in sources.items():
        for target, name in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            if target.split(".")[0] not in PACKAGES:
                continue
            full = f"{target}.{name}" if name and f"{target}.{name}" in sources else target
            if full not in sources:
                raise AssertionError(f"{mod} imports {full}, which does not exist")
            if full != mod:
                edges[mod].add(full)
    return edges


def _layer(mod: str) -> int:
    best, found = -1, -1
    for i, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > best:
                best, found = len(n), i
    if found < 0:
        raise AssertionError(f"module {mod} belongs to no layer of tests/test_layout.py")
    return found


def test_few_modules_at_the_top_of_matcher() -> None:
    top = sorted(p.name for p in (REPO / "matcher").glob("*.py"))
    assert len(top) <= 8, top


def test_imports_follow_the_data_flow(graph: dict[str, set[str]]) -> None:
    against = sorted(f"{a} -> {b}" for a, bs in graph.items() for b in bs if _layer(b) > _layer(a))
    assert against == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    assert cycles == []


def test_subpackages_import_each_other_one_way(graph: dict[str, set[str]]) -> None:
    def group(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if parts[0] == "matcher" else m

    pairs = {(group(a), group(b)) for a, bs in graph.items() for b in bs if group(a) != group(b)}
    both = sorted(f"{a} <-> {b}" for a, b in pairs if (b, a) in pairs and a < b)
    assert both == []


def test_inference_reaches_no_training_benchmark_or_cli_code(graph: dict[str, set[str]]) -> None:
    seen: set[str] = set()
    todo = list(INFERENCE_ENTRIES)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    bad = sorted(m for m in seen if any(m == n or m.startswith(n + ".") for n in NOT_FOR_INFERENCE))
    assert bad == []
    sources = _sources()
    argparse_users = sorted(m for m in seen if any(t == "argparse" for t, _ in _imported(
        ast.parse(sources[m].read_text(encoding="utf-8")))))
    assert argparse_users == []


def test_argparse_lives_only_in_the_cli() -> None:
    users = sorted(m for m, p in _sources().items()
                   if any(t == "argparse" for t, _ in _imported(ast.parse(p.read_text(encoding="utf-8")))))
    assert users and all(m.startswith("matcher.cli") for m in users), users


def test_every_package_is_listed_for_the_wheel() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    on_disk = {_module_name(p) for pkg in PACKAGES for p in (REPO / pkg).rglob("__init__.py")}
    assert set(cfg["packages"]) == on_disk | {"matcher.weights"}
    assert cfg["package-dir"]["matcher.weights"] == "weights"
    assert (REPO / "matcher" / "py.typed").is_file() and (REPO / "detectors" / "py.typed").is_file()


def test_tests_mirror_the_package_folders() -> None:
    packages = {p.parent.name for p in (REPO / "matcher").glob("*/__init__.py")} | {"detectors"}
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders <= packages, sorted(folders - packages)
    stray = sorted(p.name for p in (REPO / "tests").glob("test_*.py")
                   if p.stem.removeprefix("test_") not in {"layout", "api_side_effects", "wheel"}
                   and not (REPO / "matcher" / f"{p.stem.removeprefix('test_')}.py").is_file())
    assert stray == []
