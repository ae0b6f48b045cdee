"""The package's shape (docs/ARCHITECTURE.md): no import circle — imports inside functions counted, as a lazy
import only hides a circle — dependencies one way between the folders, nothing imports the CLI, no module outside
models/ branches on an architecture name, and the run folder's file names live in RunDir alone."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {ROOT / "engine": "iiae", ROOT / "kernels": "iiae.kernels"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, top in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of the imports under `if TYPE_CHECKING:` (never executed)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def _deepest(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The package's modules `module` imports anywhere (module level or in a function), resolved to the deepest
    module named: `from iiae.models import IIAE` is the package `iiae.models`, `from iiae.models import image` the
    module `iiae.models.image`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        out |= {t for t in map(_deepest, targets) if t and t != module}
    return out


GRAPH = {m: imports(m) for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    planted = {**GRAPH, "iiae.errors": GRAPH["iiae.errors"] | {"iiae.cli"}}
    assert any("iiae.errors" in c and "iiae.cli" in c for c in cycles(planted))


def test_no_import_cycle():
    found = cycles(GRAPH)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


# the folders and what each may import of the others (everything may import the shared top-level modules)
LAYERS = {
    "iiae.kernels": set(),
    "iiae.data": set(),
    "iiae.models": {"iiae.kernels", "iiae.data"},
    "iiae.hub": {"iiae.models", "iiae.data"},
    "iiae.evaluation": {"iiae.models", "iiae.data", "iiae.kernels"},
    "iiae.inference": {"iiae.models", "iiae.data", "iiae.evaluation"},  # retrieval ranking
    "iiae.training": {"iiae.models", "iiae.data", "iiae.kernels", "iiae.evaluation", "iiae.hub"},
    "iiae.app": {"iiae.models", "iiae.data", "iiae.evaluation", "iiae.inference", "iiae.hub"},  # the page on top
}
COMMAND_ONLY = {"iiae.cli", "iiae.__main__"}


def _layer(module: str) -> str | None:
    return next((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), None)


@pytest.mark.parametrize("layer", LAYERS)
def test_dependencies_run_one_way(layer):
    wrong = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if _layer(m) == layer for t in targets
                   if _layer(t) not in (None, layer) and _layer(t) not in LAYERS[layer])
    assert not wrong, wrong


def test_nothing_imports_the_cli():
    assert not sorted(m for m, targets in GRAPH.items() if targets & COMMAND_ONLY and m not in COMMAND_ONLY)


def test_no_module_outside_models_branches_on_an_architecture_name():
    branch = re.compile(r"\barch\s*(==|!=)|\barch\s+(not\s+)?in\b|[\"'](image|flat|mlp)[\"']\s*(==|!=)")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for m, p in MODULES.items() if not m.startswith("iiae.models")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line.split("#")[0])]
    assert not offenders, offenders


def test_run_folder_file_names_live_in_rundir_alone():
    """Every name RunDir gives a run-folder file is written nowhere else in the package as a literal."""
    from iiae.run_dir import ModelFolder, RunDir

    names = sorted({p.name for k, p in vars(RunDir(".")).items() if isinstance(p, Path) and k != "root"} |
                   {p.name for p in ModelFolder(".").files})
    # a file name anywhere as a literal; a folder name (best, samples ...: also other words) as a path part
    pattern = re.compile("|".join(rf"[\"']{re.escape(n)}[\"']" if "." in n else rf"/\s*[\"']{re.escape(n)}[\"']"
                                  for n in names))
    offenders = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for m, p in MODULES.items() if m != "iiae.run_dir"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
