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
BASE_MODULES = {"rmt_core.errors", "rmt_core.checks", "rmt_core.token_text", "rmt_core._version", "rmt_core.questions"}
TOP_MODULES = {"rmt_core", "rmt_core.cli", "rmt_core.__main__"}
TOP_MODULES |= {"rmt_core.cli_compare"}  # the compare / patch commands, registered from cli.py


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


# explain -> training imports still to move below explain (issue 24 item 5): the operating-range
# table and the fact parser, added by the answer warnings. No other may be added.
EXPLAIN_TO_TRAINING_LEFT = {
    ("rmt_core.explain.answers", "rmt_core.training.operating_range"),
    ("rmt_core.explain.answer_warnings", "rmt_core.training.operating_range"),
    ("rmt_core.explain.answer_warnings", "rmt_core.training.tasks.babi"),
}


def test_explain_does_not_import_the_trainer():
    """explain/ reads what a model can be asked from its card / rmt_core.questions, not from training/."""
    found = {(module, target) for module, targets in import_graph().items() if layer_of(module) == "explain"
             for target in targets if layer_of(target) == "training"}
    assert found <= EXPLAIN_TO_TRAINING_LEFT, "\n".join(sorted(f"{m} imports {t}" for m, t in found - EXPLAIN_TO_TRAINING_LEFT))


def app_imports() -> dict[str, list[tuple[str, list[str]]]]:
    """Per app module: (imported module, names imported from it) of every import, also inside functions."""
    result = {}
    for path in sorted(APP.rglob("*.py")):
        module = ".".join(path.relative_to(APP.parent).with_suffix("").parts)
        found = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.module, [alias.name for alias in node.names]))
        result[module] = found
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
