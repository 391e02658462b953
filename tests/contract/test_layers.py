"""Layers depend downward only: core -> data/models -> eval -> lightning -> methods -> cli (and the other
entry points). Checked on the source (every ``import``, also inside functions), so a lazy import cannot
hide an upward dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "iis"
# first package below iis -> layer; equal layers may not import each other (data and models are siblings)
LAYERS = {"core": 0, "data": 1, "models": 1, "convert": 2, "runtime": 2, "export": 2, "eval": 3, "lightning": 4,
          "methods": 5, "api": 6, "serve": 7, "cli": 8}
LIGHTNING = ("lightning", "pytorch_lightning")


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # `from iis.methods import simpleclick` imports iis.methods.simpleclick
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names if name.startswith("iis")]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                out.append((node.lineno, node.args[0].value))
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "iis" else None


def _violations():
    found = []
    for path, module in _modules():
        own = _layer(module)
        if own is None:  # iis/__init__.py: the top; it wires registration lazily (iis.models.registry.add_loader)
            continue
        assert own in LAYERS, f"{module}: package iis.{own} has no layer in LAYERS"
        for line, name in _imports(path, module):
            where = f"{path.relative_to(PKG.parent)}:{line} imports {name}"
            if name.split(".")[0] in LIGHTNING and LAYERS[own] < LAYERS["lightning"]:
                found.append(f"{where} (Lightning above iis.{own})")
            other = _layer(name)
            if other is None or other not in LAYERS:
                continue
            if LAYERS[other] > LAYERS[own] or (LAYERS[other] == LAYERS[own] and other != own):
                found.append(f"{where} (iis.{own} may not depend on iis.{other})")
            # one method = one folder: a method never imports another one (shared parts live in iis.models)
            mine, theirs = module.split("."), name.split(".")
            if own == other == "methods" and len(mine) > 2 and len(theirs) > 2 and mine[2] != theirs[2]:
                found.append(f"{where} (method {mine[2]} imports method {theirs[2]})")
    return found


def test_layers_depend_downward_only():
    found = _violations()
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source, bad", [
    ("from iis.methods.simpleclick.model import SimpleClickEncoder\n", "iis.models may not depend on iis.methods"),
    ("def f():\n    import lightning\n", "Lightning above iis.models"),
    ("import importlib\nimportlib.import_module('iis.methods')\n", "iis.models may not depend on iis.methods"),
    ("from ..lightning.module import IISModule\n", "iis.models may not depend on iis.lightning"),
])
def test_the_checker_sees_upward_imports(tmp_path, monkeypatch, source, bad):
    """The check itself can fail: a models file with an upward import is reported."""
    fake = tmp_path / "iis"
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "models" / "__init__.py").write_text("")
    (fake / "models" / "bad.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    assert any(bad in v for v in _violations()), _violations()


def test_core_and_models_import_without_lightning_or_methods():
    code = ("import sys, iis.core, iis.models, iis.models.registry, iis.eval.loading\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning') "
            "or m.startswith('iis.methods') or m.startswith('iis.lightning'))\n"
            "assert not bad, bad\n"
            "from iis.models.registry import list_models\n"
            "assert 'simpleclick_vit_base' in list_models()  # registration still finds every method\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=PKG.parent, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
