"""The package map in rmt_core/__init__.py holds: imports point down the layers, never in a cycle.

Every import counts, also those inside functions (a lazy import hides a cycle from Python but
not from a reader). The layers, bottom first, are LAYERS below; a module may import from its own
layer or any layer under it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rmt_core"
LAYERS = ("base", "engine", "io", "tracing", "training", "explain", "viz", "studies", "top")
BASE_MODULES = {"rmt_core.errors", "rmt_core.checks", "rmt_core.token_text", "rmt_core._version", "rmt_core.questions",
                "rmt_core.operating_range"}
TOP_MODULES = {"rmt_core", "rmt_core.cli", "rmt_core.__main__"}
TOP_MODULES |= {"rmt_core.cli_compare"}  # the compare / patch commands, registered from cli.py
TOP_MODULES |= {"rmt_core.cli_checkpoints"}  # the load flags every loading command takes, and inspect
TOP_MODULES |= {"rmt_core.demos"}  # demo inputs for front ends, over training/


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    if module in BASE_MODULES:
        return "base"
    if module in TOP_MODULES:
        return "top"
    sub = module.split(".")[1]
    assert sub in LAYERS, f"{module} is in no layer of the map: add it to rmt_core/__init__.py and LAYERS"
    return sub


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "vendor" not in p.parts}


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """rmt_core modules that `module` imports anywhere in its body (resolved to modules)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            # `from pkg import name`: name is a module when one exists by that name
            targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in known else root for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "rmt_core" or t.startswith("rmt_core."))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def test_every_module_sits_in_a_layer_of_the_map():
    for module in all_modules():
        layer_of(module)


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module)):
                upward.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_and_upward_imports(tmp_path):
    """The checks above can fail: a function-level upward import is found and resolved."""
    source = "def f():\n    from ..viz import figures\n    from ..tracing.trace import Trace\n"
    path = tmp_path / "model.py"
    path.write_text(source)
    found = imports_of("rmt_core.engine.model", path, set(all_modules()))  # read as rmt_core/engine/model.py
    assert found == {"rmt_core.viz.figures", "rmt_core.tracing.trace"}
    assert all(LAYERS.index(layer_of(t)) > LAYERS.index("engine") for t in found)


@pytest.mark.parametrize("name", ["load", "save", "trace", "trace_iter", "Trace", "ask", "attribution",
                                  "interventions", "analysis", "series", "figures", "answers",
                                  "RMTModel", "RMTConfig", "DEFAULT_CHECKPOINT", "inspect_checkpoint"])
def test_public_names_stay_at_the_top(name):
    import rmt_core

    assert getattr(rmt_core, name) is not None
    assert name in rmt_core.__all__


def test_moved_model_methods_say_where_they_went():
    from rmt_core import RMTConfig, RMTModel
    from rmt_core.engine.backbones import backbone_from_config, gpt2_config

    model = RMTModel(backbone_from_config(gpt2_config(vocab_size=32, n_layer=1, n_embd=16, n_head=2)),
                     RMTConfig(num_mem_tokens=2, segment_size=4))
    for old, new in (("trace", "rmt_core.trace"), ("save_pretrained", "rmt_core.save")):
        with pytest.raises(AttributeError, match=new.replace(".", r"\.")):
            getattr(model, old)


# ---------------------------------------------------------------------- explain and app
APP = PACKAGE.parent / "app"


def test_explain_does_not_import_the_trainer():
    """explain/ reads what a model can be asked from its card / rmt_core.questions / rmt_core.operating_range,
    never from training/ (no exceptions)."""
    found = {(module, target) for module, targets in import_graph().items() if layer_of(module) == "explain"
             for target in targets if layer_of(target) == "training"}
    assert not found, "\n".join(sorted(f"{m} imports {t}" for m, t in found))


def test_the_moved_card_vocabulary_keeps_its_training_names():
    """The operating range and the fact parser moved to the base; the trainer's names are the same objects."""
    from rmt_core import operating_range, questions
    from rmt_core.training import operating_range as training_range
    from rmt_core.training.tasks import babi

    for name in ("OperatingRange", "read_operating_range", "operating_range_entry", "TASK_TRAINING", "RECALL_TABLES"):
        assert getattr(training_range, name) is getattr(operating_range, name)
    for name in ("parse_facts", "Fact", "ParsedFact", "FACT_RE", "QUESTION_RE", "MOVE_VERBS", "GET_VERBS", "DROP_VERBS",
                 "World", "stated_place"):
        assert getattr(babi, name) is getattr(questions, name)
    found = questions.parse_facts("Noise. Mary travelled to the office. John got the football there.")
    assert [(f.fact.kind, f.fact.actor, f.fact.target) for f in found] == [("move", "Mary", "office"),
                                                                          ("get", "John", "football")]


def app_imports() -> dict[str, list[tuple[str, list[str]]]]:
    """Per app module: (imported module, names imported from it) of every import, also inside functions."""
    return {module: found for module, (found, _) in app_uses().items()}


def app_uses() -> dict[str, tuple[list[tuple[str, list[str]]], list[str]]]:
    """Per app module: (its imports as in app_imports, the dotted chains it reads from rmt_core).

    A chain is what the code reaches: ``from rmt_core.explain import answers`` gives
    "rmt_core.explain.answers", ``rmt_core.io.checkpoint.SHIPPED_DIR`` gives that text, and an
    alias is followed (``rmt_answers._x`` after ``from rmt_core.explain import answers as rmt_answers``
    gives "rmt_core.explain.answers._x")."""
    known = set(all_modules())
    result = {}
    for path in sorted(APP.rglob("*.py")):
        module = ".".join(path.relative_to(APP.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found: list[tuple[str, list[str]]] = []
        chains: list[str] = []
        aliases: dict[str, str] = {}  # local name -> the rmt_core module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(alias.name, []) for alias in node.names]
                for alias in node.names:
                    if alias.name.split(".")[0] == "rmt_core":
                        chains.append(alias.name)
                        aliases[alias.asname or "rmt_core"] = alias.name if alias.asname else "rmt_core"
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.module, [alias.name for alias in node.names]))
                if node.module.split(".")[0] == "rmt_core":
                    for alias in node.names:
                        chains.append(f"{node.module}.{alias.name}")
                        if f"{node.module}.{alias.name}" in known:
                            aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and id(node) not in inner:
                parts = []
                while isinstance(node, ast.Attribute):
                    parts.append(node.attr)
                    node = node.value
                if isinstance(node, ast.Name) and node.id in aliases:
                    chains.append(".".join([aliases[node.id], *reversed(parts)]))
        result[module] = (found, chains)
    return result


def private_imports(imports: dict[str, list[tuple[str, list[str]]]]) -> list[str]:
    """`from app.x import _name` in a module other than app.x."""
    return [f"{module} imports {name} from {target}" for module, found in imports.items()
            for target, names in found if target.startswith("app") and target != module
            for name in names if name.startswith("_")]


def test_app_modules_never_import_another_module_s_private_names():
    found = private_imports(app_imports())
    assert not found, "\n".join(found)


def test_the_library_never_imports_the_app_or_streamlit():
    found = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
             if target == "app" or target.startswith(("app.", "streamlit"))]
    assert not found
    for path in PACKAGE.rglob("*.py"):
        if "vendor" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
        assert not [n for n in names if n == "streamlit" or n.startswith(("streamlit.", "app."))], path


def test_the_app_checks_can_fail():
    """Negative control: a view importing another's private name is found; its own are not."""
    assert private_imports({"app.views.papers": [("app.views.tour", ["_tour", "render"])]}) == [
        "app.views.papers imports _tour from app.views.tour"]
    assert private_imports({"app.views.tour": [("app.views.tour", ["_tour"])]}) == []


# The app talks to rmt_core's public API only (issue 24 item 5). The rule: an app module may reach
# (1) `rmt_core` and the names in rmt_core.__all__ (`import rmt_core; rmt_core.trace(...)`,
#     `from rmt_core import demos`), and
# (2) the public modules below and the names in them,
# never a module that is not listed (training/ never is: its data and tasks reach the app through
# rmt_core.demos) and never a private name (one starting with "_") of any rmt_core module.
APP_PUBLIC_MODULES = frozenset({
    "rmt_core.demos", "rmt_core.errors", "rmt_core.token_text",
    "rmt_core.io.checkpoint", "rmt_core.io.documents", "rmt_core.io.hub",
    "rmt_core.tracing.trace",
    "rmt_core.explain", "rmt_core.explain.analysis", "rmt_core.explain.answers", "rmt_core.explain.attribution",
    "rmt_core.explain.interventions", "rmt_core.explain.series", "rmt_core.explain.compare",
    "rmt_core.explain.associative", "rmt_core.explain.capacity", "rmt_core.explain.memory_reach",
    "rmt_core.viz.figures", "rmt_core.viz.comparison", "rmt_core.viz.captions", "rmt_core.viz.paper",
    "rmt_core.viz.render", "rmt_core.viz.bertviz_views", "rmt_core.viz.tour", "rmt_core.viz.export",
    "rmt_core.viz.report", "rmt_core.viz.study",
    "rmt_core.studies.aggregate", "rmt_core.studies.measures", "rmt_core.studies.rows", "rmt_core.studies.runner",
    "rmt_core.studies.source",
})


def non_public_uses(chains: dict[str, list[str]], known: set[str], top_names: set[str]) -> list[str]:
    """What of `chains` (per app module, the dotted rmt_core chains it reaches) breaks the rule above.

    A chain's module is its longest prefix that is an rmt_core module (`known`); the name after it
    must not be private, and right after `rmt_core` it must be one of `top_names` (rmt_core.__all__)."""
    broken = []
    for module, found in chains.items():
        for chain in found:
            parts = chain.split(".")
            cut = max(i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in known | {"rmt_core"})
            target, rest = ".".join(parts[:cut]), parts[cut:]
            if target != "rmt_core" and target not in APP_PUBLIC_MODULES:
                broken.append(f"{module} uses {chain}: {target} is not a public module of rmt_core")
            elif rest and rest[0].startswith("_") and not rest[0].startswith("__"):
                broken.append(f"{module} uses {chain}: {rest[0]} is private")
            elif target == "rmt_core" and rest and rest[0] not in top_names:
                broken.append(f"{module} uses {chain}: {rest[0]} is not in rmt_core.__all__")
    return broken


def test_the_public_modules_exist_and_hold_no_trainer():
    known = set(all_modules())
    assert APP_PUBLIC_MODULES <= known, sorted(APP_PUBLIC_MODULES - known)
    assert not [m for m in APP_PUBLIC_MODULES if layer_of(m) == "training"]


def test_the_app_uses_only_rmt_core_s_public_api():
    import rmt_core

    chains = {module: found for module, (_, found) in app_uses().items()}
    assert sum(map(len, chains.values())) > 50  # the walk sees the app's uses (not vacuous)
    broken = non_public_uses(chains, set(all_modules()), set(rmt_core.__all__))
    assert not broken, "\n".join(broken)


def test_the_app_public_api_check_can_fail(tmp_path):
    """Negative control: a training import, an unlisted module, a private name (also through an alias
    or an attribute chain) and a name outside rmt_core.__all__ are each found; public uses are not."""
    import rmt_core

    known, top = set(all_modules()), set(rmt_core.__all__)
    bad = {"app.sidebar": ["rmt_core.training.evaluation.ALGORITHMIC_TASKS"],
           "app.views.papers": ["rmt_core.training.tasks.algorithmic.make_task_batch"],
           "app.services": ["rmt_core.engine.backbones.gpt2_config", "rmt_core.explain.answers._site_logprobs",
                            "rmt_core._LAZY", "rmt_core.RMTOutputs"]}
    assert len(non_public_uses(bad, known, top)) == 6
    good = {"app.x": ["rmt_core.trace", "rmt_core.demos.make_task_batch", "rmt_core.io.checkpoint.SHIPPED_DIR",
                      "rmt_core.explain.answers.split_question", "rmt_core.explain.answers.__name__"]}
    assert non_public_uses(good, known, top) == []
    # the walk of a module's source finds imports, attribute chains and aliases
    source = ("import rmt_core\nfrom rmt_core.explain import answers as a\n"
              "def f():\n    from rmt_core.training.tasks import babi\n    return a._x, rmt_core.training.corpus.load_corpus\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "probe.py").write_text(source)
    global APP
    saved, APP = APP, tmp_path / "app"
    try:
        chains = {m: found for m, (_, found) in app_uses().items()}
    finally:
        APP = saved
    assert sorted(non_public_uses(chains, known, top)) == [
        "app.probe uses rmt_core.explain.answers._x: _x is private",
        "app.probe uses rmt_core.training.corpus.load_corpus: rmt_core.training.corpus is not a public module of rmt_core",
        "app.probe uses rmt_core.training.tasks.babi: rmt_core.training.tasks.babi is not a public module of rmt_core"]
