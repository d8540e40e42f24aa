"""Imports point one way: images, models -> activations -> objectives/param/transforms -> render ->
analysis/atlas/recipes -> views -> cli. A module never imports from a layer above its own."""

import ast
from pathlib import Path

import luminate

RANKS = [
    ("luminate.images", 0), ("luminate.cache", 0),
    ("luminate.models", 1),
    ("luminate.activations", 2), ("luminate.overrides", 2),
    ("luminate.objectives", 3), ("luminate.param", 3), ("luminate.transforms", 3),
    ("luminate.render", 4),
    ("luminate.recipes", 5), ("luminate.analysis", 5), ("luminate.atlas", 5),
    ("luminate.views", 6),
    ("luminate.cli", 7), ("luminate.__main__", 7),
]


def rank(module: str) -> int | None:
    best = None
    for prefix, r in RANKS:
        if module == prefix or module.startswith(prefix + "."):
            best = r
    return best


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("luminate")}


def test_imports_point_one_way():
    root = Path(luminate.__file__).parent
    violations = []
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        own = rank(module)
        if own is None:
            continue
        for imported in imported_modules(path):
            other = rank(imported)
            if other is not None and other > own:
                violations.append(f"{module} (layer {own}) imports {imported} (layer {other})")
    assert not violations, "\n".join(violations)
