"""The package layout as a specification: no import cycle, every import
points down the layers of the README's "Layout" section, no module over
400 lines, and the algorithm and training layers free of Ray."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "conlst_ray"
COMMANDS = ("run", "tune", "evaluate", "report", "pseudo_label", "translate", "predict")
# other modules at the package root: the Auto-class registration sits on the models, the Python API on top
ROOT_MODULES = {"hf": "models", "api": None}
LAYERS = ["storage", "data", "config", "models", "training", "algorithm", "ray_jobs", "pipeline", "reporting",
          "commands"]


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: dict) -> set[str]:
    """conlst_ray modules imported anywhere in the file (functions included),
    annotations too (``if TYPE_CHECKING:``): an import for a type is still a
    dependency a reader follows, so it may not point up the layers either (a
    section a lower layer reads is named there by its shape, a Protocol)."""
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


def package_docstrings() -> dict[str, str]:
    return {init.parent.name: ast.get_docstring(ast.parse(init.read_text())) or ""
            for init in ROOT.glob("*/__init__.py")}


def test_package_docstrings_name_the_modules_they_hold_and_no_other():
    """A package docstring that lists modules lists each module it holds, and
    names none it does not."""
    for package, doc in package_docstrings().items():
        named = set(re.findall(r"\b([a-z_0-9]+)\.py\b", doc))
        held = {p.stem for p in (ROOT / package).glob("*.py")} - {"__init__"}
        assert named <= held, f"{package}/__init__.py names {sorted(named - held)}"
        if named:
            assert held <= named, f"{package}/__init__.py does not list {sorted(held - named)}"


def ray_importers() -> set[str]:
    """The packages with a module that imports Ray (anywhere in the file)."""
    found = set()
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        if any(n == "ray" or n.startswith("ray.") for n in names):
            found.add(path.relative_to(ROOT).parts[0])
    return found


def test_package_docstrings_say_true_things_about_ray():
    users = ray_importers()
    for package, doc in package_docstrings().items():
        if "no Ray" in doc:
            assert package not in users, f"{package}/__init__.py says 'no Ray' but imports it"
        if "only Ray" in doc:
            assert users == {package}, f"{package}/__init__.py claims the only Ray code; also {users - {package}}"


# What a run directory, a trial and a search hold (pipeline/rundir.py): files by name, folders by name
LAYOUT_FILES = {"config.yaml", "DONE.json", "FINGERPRINT.json", "metrics.jsonl", "steps.jsonl", "handed_back.json",
                "trial.json", "best_config.yaml", "best.json", "phases.json"}
LAYOUT_FOLDERS = {"model", "results", "analysis", "corpus", "checkpoint", "ray_train", "thresholds", "tensorboard",
                  "init", "targets", "translations", "pseudo_labels", "source", "conl", "ssl", "prior"}


def layout_spellings(path: Path) -> list[str]:
    """Where a module spells a run-layout name: a layout file name anywhere,
    a layout folder name joined onto a path (``p / "model"``,
    ``p.with_name(...)``, ``p.joinpath(...)``, ``run.stage(...)``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in LAYOUT_FILES:
            found.append(f"{node.lineno}: {node.value!r}")
        joined = None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            joined = node.right.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
              and node.func.attr in ("with_name", "joinpath", "stage") and isinstance(node.args[0], ast.Constant)):
            joined = node.args[0].value
        if joined in LAYOUT_FOLDERS | LAYOUT_FILES:
            found.append(f"{node.lineno}: / {joined!r}")
    return found


def test_only_the_run_directory_spells_the_run_layout():
    """In the package, the experiments and the benchmarks: they read a run
    through ``RunDir``/``SearchDir``/``stage_files`` as the package does."""
    files = [*ROOT.rglob("*.py"), *(ROOT.parent / "experiments").glob("*.py"),
             *(ROOT.parent / "benchmarks").glob("*.py")]
    assert len(files) > len(list(ROOT.rglob("*.py")))  # the experiments and benchmarks are there to check
    spelled = {str(p.relative_to(ROOT.parent)): s for p in files
               if p.name != "rundir.py" and (s := layout_spellings(p))}
    assert not spelled, spelled
    assert layout_spellings(ROOT / "pipeline" / "rundir.py")  # the check sees the names where they are spelled


def test_no_function_takes_more_than_seven_parameters():
    """Typed inputs (StageJob, StageInputs, ShardedJob, TranslationJob, ...)
    instead of long parameter lists; ``self`` and ``cls`` do not count."""
    long = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
                count = len(names) + (a.vararg is not None) + (a.kwarg is not None) - (names[:1] in (["self"], ["cls"]))
                if count > 7:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({count})")
    assert not long, long


def test_the_list_of_stages_is_spelled_only_in_the_stage_table():
    """config/stages.py holds one record per stage; no other module of the
    package keeps its own list (a tuple, list, set or mapping naming two
    stages or more) -- the fingerprints, the run directory, the progress
    lines, the stage costs, the card and the selection read the table."""
    from conlst_ray.config.stages import NAMES

    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).as_posix() == "config/stages.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                items = node.elts
            elif isinstance(node, ast.Dict):
                items = [*node.keys, *node.values]
            else:
                continue
            named = {e.value for e in items if isinstance(e, ast.Constant) and e.value in NAMES}
            if len(named) >= 2:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(named)}")
    assert not found, found


def test_cfg_is_annotated_wherever_it_is_a_parameter():
    """A reader (and a type checker) sees which config a function takes: the
    whole ``Config`` or one of its sections."""
    bare = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bare += [f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                         for a in node.args.args + node.args.kwonlyargs if a.arg == "cfg" and a.annotation is None]
    assert not bare, bare


def test_every_training_stage_has_one_registered_algorithm():
    """The worker builds the algorithm its stage names (algorithm/registry.py):
    every training stage of the table has one, named after it."""
    from conlst_ray.algorithm.registry import ALGORITHMS, algorithm_of
    from conlst_ray.config.stages import TRAINED

    for stage in TRAINED:
        assert algorithm_of(stage).name == stage
    assert set(ALGORITHMS) == set(TRAINED)


def test_messages_go_through_logging_not_a_log_parameter():
    """Every module logs under ``conlst_ray`` (one format, the per-language
    tag, ``quiet``); no function takes a ``log`` callable to print with."""
    found = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name}" for path in ROOT.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)
             and "log" in [a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]]]
    assert not found, found


# the calls that take a stage's name, and the variables that hold one
STAGE_TAKERS = {"model", "stage_files", "done_file", "is_done", "begin", "mark_done", "stage_fingerprint", "fit_stage",
                "fit_plain", "prepare_stage_tokens", "stage_card", "damage", "stage", "prior_model", "pseudo_labels",
                "of", "build_algorithm", "algorithm_of", "unit"}
STAGE_VARS = {"stage", "name", "stop_after", "row"}


def stage_spellings(path: Path, names: tuple) -> list[str]:
    """Where a module spells a stage's name as a stage: an argument of a call
    that takes one, a comparison with a variable that holds one, a default."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if called in STAGE_TAKERS:
                given = [*node.args, *(k.value for k in node.keywords)]
                found += [f"{node.lineno}: {called}({a.value!r})" for a in given
                          if isinstance(a, ast.Constant) and a.value in names]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            held = any((s.id if isinstance(s, ast.Name) else s.attr) in STAGE_VARS
                       for s in sides if isinstance(s, (ast.Name, ast.Attribute)))
            found += [f"{node.lineno}: == {s.value!r}" for s in sides
                      if held and isinstance(s, ast.Constant) and s.value in names]
        elif isinstance(node, ast.FunctionDef):
            found += [f"{node.lineno}: default {d.value!r}" for d in [*node.args.defaults, *node.args.kw_defaults]
                      if isinstance(d, ast.Constant) and d.value in names]
    return found


def test_no_stage_name_is_spelled_outside_the_table_and_the_registry():
    """A stage is named through config/stages.py's constants and records
    (``run.model(CONL)``, ``stage == SOURCE``); the algorithm classes name
    theirs once, in ``@register``. A new stage then touches the table, its
    algorithm class and its test."""
    from conlst_ray.config.stages import NAMES

    spelled = {str(p.relative_to(ROOT)): s for p in sorted(ROOT.rglob("*.py"))
               if p.relative_to(ROOT).as_posix() not in ("config/stages.py", "algorithm/registry.py")
               and (s := stage_spellings(p, NAMES))}
    assert not spelled, spelled
    assert stage_spellings(ROOT / "config" / "stages.py", NAMES) == []  # the table names them by value only
    # the check sees a spelling where there is one: the tests name stages as a user does
    assert stage_spellings(ROOT.parent / "tests" / "test_train_stages.py", NAMES)


# the same name on purpose: every command has its own; the Auto-class registration keeps the class name a
# saved config.json names; the API's run(config path, overrides) faces the library's run(cfg)
SAME_NAME_ON_PURPOSE = {"main", "build_parser", "check_arguments", "ConlstForSequenceClassification", "run"}


def test_each_public_name_is_defined_once():
    """A reader who greps a name finds one definition: no two modules of the
    package define the same public function or class."""
    where: dict[str, list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    twice = {name: paths for name, paths in where.items() if len(paths) > 1 and name not in SAME_NAME_ON_PURPOSE}
    assert not twice, twice
