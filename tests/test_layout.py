"""The package layout as a specification: no import cycle, every import
points down the layers of the README's "Layout" section, no module over
400 lines, and the algorithm and training layers free of Ray."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "conlst_ray"
COMMANDS = ("run", "tune", "evaluate", "report", "pseudo_label", "translate", "predict")
# other modules at the package root: the Auto-class registration sits on the models, the Python API on top
ROOT_MODULES = {"hf": "models", "api": None}
LAYERS = ["data", "config", "models", "training", "algorithm", "ray_jobs", "pipeline", "reporting", "commands"]


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: dict) -> set[str]:
    """conlst_ray modules imported anywhere in the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("conlst_ray"):
            found |= {n for n in [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if n in known}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package itself (version)
    if len(parts) == 2 and parts[1] in COMMANDS:
        return len(LAYERS)  # python -m aliases at the root
    if len(parts) == 2 and parts[1] in ROOT_MODULES:
        below = ROOT_MODULES[parts[1]]
        return len(LAYERS) if below is None else LAYERS.index(below)
    return LAYERS.index(parts[1])


def test_no_import_cycle_and_no_import_running_back_up():
    known = modules()
    graph = {m: imports(p, known) - {m} for m, p in known.items()}
    upward = [f"{m} -> {t}" for m, ts in graph.items() for t in ts if layer(t) > layer(m)]
    assert not upward, upward
    # within a layer: no cycle (depth-first search for a back edge)
    state: dict[str, int] = {}

    def visit(m, trail):
        state[m] = 1
        for t in graph[m]:
            assert state.get(t) != 1, " -> ".join(trail + [m, t])
            if t not in state:
                visit(t, trail + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_algorithm_and_training_layers_do_not_import_ray():
    for folder in ("algorithm", "training"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
            assert not [n for n in names if n == "ray" or n.startswith("ray.")], path
