"""The package layering: sim -> tokenizers_mm -> vla core -> training methods -> evaluation ->
studies -> CLI. A module may import from its own layer or below, never above (issue "Seams")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("sim", "metrics", "tokenizers_mm", "vla_core", "methods", "evaluation", "studies", "cli")
KNOWN_BACK_EDGES: set = set()
"""Back-edges that exist today; the test fails on any other, and on one of these once it is gone."""


def layer(module: str) -> str | None:
    parts = module.split(".")
    top = parts[0]
    if parts[-1] == "metrics" and top in ("sim", "benchmarks"):
        return "metrics"
    if top in ("sim", "tokenizers_mm"):
        return top
    if top in ("methods", "offline_rl"):
        return "methods"
    if top == "benchmarks":
        return "evaluation" if len(parts) > 1 and parts[1] == "reports" else "studies"
    if top == "app":
        return "cli"
    if top == "vla":
        return "vla_core"
    return None


def imports(path: Path, module: str) -> list[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.append(node.module)
    return out


def test_no_module_imports_from_a_higher_layer():
    found = set()
    for top in ("sim", "tokenizers_mm", "vla", "methods", "offline_rl", "benchmarks", "app"):
        for path in sorted((ROOT / top).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            own = layer(module)
            for name in imports(path, module):
                other = layer(name)
                if own and other and LAYERS.index(other) > LAYERS.index(own):
                    found.add((module, name))
    assert found == KNOWN_BACK_EDGES, f"new back-edges: {sorted(found - KNOWN_BACK_EDGES)}; " \
                                      f"gone (remove from KNOWN_BACK_EDGES): {sorted(KNOWN_BACK_EDGES - found)}"
