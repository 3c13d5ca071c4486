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
BASE_MODULES = {"rmt_core.errors", "rmt_core.checks", "rmt_core.token_text", "rmt_core._version"}
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
