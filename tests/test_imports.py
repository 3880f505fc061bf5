"""The import graph of magvit/: no cycle, even through imports inside functions, and no module imports
one above its layer (models never import training, sampling, bench or the CLI)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "magvit"

# lowest first; a module may import its own layer and the layers below it
LAYERS = [
    ("base", ["magvit", "magvit.errors", "magvit.fileio", "magvit.registry", "magvit.config", "magvit.schedules",
              "magvit.metrics", "magvit.media", "magvit.shipped", "magvit.plots", "magvit.runtime"]),
    ("models and data", ["magvit.weights", "magvit.tasks", "magvit.tokenizers", "magvit.transformer",
                         "magvit.autoregressive", "magvit.decode", "magvit.data"]),
    ("model folders", ["magvit.release", "magvit.inputs", "magvit.pipeline"]),
    ("recipes", ["magvit.training", "magvit.sampling", "magvit.evaluation", "magvit.bench"]),
    ("end to end", ["magvit.quickstart", "magvit.reproduce", "magvit.demo"]),
    ("entry points", ["magvit.kinds", "magvit.cli", "magvit.__main__"]),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the magvit modules it imports anywhere in its file (top level or inside functions).
    `from a.b import c` counts as importing a.b.c when that is a module, else a.b; the parent
    packages a submodule import runs first are not counted (a package re-exporting its submodules
    would otherwise be a cycle with each of them)."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {owner(a.name) for a in node.names if a.name.split(".")[0] == "magvit"}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "magvit":
                deps |= {owner(f"{node.module}.{a.name}") for a in node.names}
        graph[name] = deps - {None, name}
    return graph


def layer_of(module: str) -> int:
    best = max(((i, p) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes
                if module == p or module.startswith(p + ".")), key=lambda x: len(x[1]), default=None)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def test_no_relative_imports():
    for name, path in modules().items():
        levels = [n.level for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)]
        assert not any(levels), f"{name} uses a relative import"


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_module_imports_one_above_its_layer():
    wrong = [f"{mod} ({LAYERS[layer_of(mod)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
             for mod, deps in import_graph().items() for dep in sorted(deps) if layer_of(dep) > layer_of(mod)]
    assert not wrong, "\n".join(wrong)


def test_no_file_cites_a_document_outside_the_repository():
    """Code, configs, tests and docs cite the papers by name and section, not notes that do not ship."""
    import subprocess

    root = PACKAGE.parent
    outside = ("REFERENCE" + ".md", "DEVELOPERS" + ".md")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                           text=True, check=True).stdout.split()
    cited = [f"{name}: {word}" for name in files if (root / name).is_file() and not name.endswith(".safetensors")
             for word in outside if word in (root / name).read_text(errors="ignore")]
    assert not cited, cited
