"""The house rules that keep interp/ one piece: no import circle, no module reaching into another's
underscore names, TransformerLens internals behind interp/bridge.py alone (with its version check),
hook names spelled only by interp/hooks.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from interp.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "interp"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(path: Path, modules: dict[str, Path]) -> tuple[set[str], list[str]]:
    """(the interp modules `path` imports at run time, the underscore names it imports from others);
    imports under `if TYPE_CHECKING:` are left out (they never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(block)}  # fmt: skip
    out, private = set(), []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("interp"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in modules else node.module)
                if alias.name.startswith("_"):
                    private.append(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("interp")}
    return out, private


def test_no_import_circle_and_no_private_imports():
    modules = _modules()
    graph, private = {}, {}
    for name, path in modules.items():
        deps, priv = _imports(path, modules)
        graph[name] = {d for d in deps if d in modules and d != name and not name.startswith(d + ".")}
        if priv:
            private[name] = priv
    assert not private, f"modules import other modules' underscore names: {private}"
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(v: str, stack: list[str]) -> None:
        state[v] = 1
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(w):] + [v, w]))
            if w not in state:
                visit(w, stack + [v])
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v, [])


def test_transformer_lens_internals_and_hook_names_live_in_one_module_each():
    private = re.compile(r"_bridge_builder|_original_component|_suppress_next_hook_in|_fired_hook_out|"
                         r"object\.__setattr__|transformer_lens\.model_bridge\.sources")  # fmt: skip
    hand_spelled = re.compile(r"""["']blocks\.|f["']blocks\.|["']ln_final\.hook""")
    for path in list(PACKAGE.rglob("*.py")) + list((ROOT / "apps").rglob("*.py")):
        text = path.read_text()
        if path.name != "bridge.py" or path.parent != PACKAGE:
            assert not private.search(text), f"{path.relative_to(ROOT)} reaches a TransformerLens internal"
        if path != PACKAGE / "hooks.py":
            code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
            assert not hand_spelled.search(code), f"{path.relative_to(ROOT)} spells a hook name by hand"


@pytest.mark.parametrize("found", ["4.4.0", "4.10.1", "3.5.0", "5.0.0.dev1"])
def test_an_unsupported_transformer_lens_is_one_line_naming_the_range(found):
    from interp.bridge import check_version

    with pytest.raises(WorkbenchError, match=r"TransformerLens .* is installed; the workbench supports >=4\.3,<4\.4"):
        check_version(found)
    check_version("4.3.0")
    check_version("4.3.7")
