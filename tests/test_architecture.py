"""Imports point one way: images, cache, models -> activations -> objectives/param/transforms -> render ->
data -> units, analysis -> atlas/microscope/features/circuits/text -> views -> serve/cli. A module never imports from
a layer above its own, views only draw, and no package imports another's private names."""

import ast
from pathlib import Path

import luminate

RANKS = [
    ("luminate.images", 0), ("luminate.cache", 0), ("luminate.runtime", 0), ("luminate.progress", 0),
    ("luminate.models", 1),
    ("luminate.activations", 2), ("luminate.overrides", 2), ("luminate.fold", 2), ("luminate.fuse", 2),
    ("luminate.objectives", 3), ("luminate.param", 3), ("luminate.transforms", 3), ("luminate.priors", 3),
    ("luminate.render", 4), ("luminate.dream", 4),
    ("luminate.recipes", 5), ("luminate.analysis", 5), ("luminate.atlas", 5), ("luminate.microscope", 5),
    ("luminate.text", 5), ("luminate.features", 5), ("luminate.circuits", 5),
    ("luminate.parallel", 5), ("luminate.lucid", 5), ("luminate.lucent", 5), ("luminate.data", 5),
    ("luminate.units", 5),
    ("luminate.views", 6),
    ("luminate.cli", 7), ("luminate.__main__", 7), ("luminate.serve", 7),
]

#: What views must not import (outside ``if TYPE_CHECKING:``): anything that computes gradients or renders.
GRADIENT_CODE = ("torch.autograd", "luminate.render", "luminate.overrides", "luminate.objectives", "luminate.param",
                 "luminate.transforms", "luminate.activations", "luminate.recipes", "luminate.analysis",
                 "luminate.atlas.icons", "luminate.atlas.atlas", "luminate.atlas.collect", "luminate.microscope.render")

ROOT = Path(luminate.__file__).parent


def rank(module: str) -> int | None:
    best = None
    for prefix, r in RANKS:
        if module == prefix or module.startswith(prefix + "."):
            best = r
    return best


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (``from .base import x`` inside ``luminate.param.spatial`` is
    ``luminate.param.base``)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child))
    return inside


def imported_modules(path: Path, runtime_only: bool = False, module_level: bool = False) -> set[str]:
    """Every ``luminate`` (and ``torch.autograd``) module a file imports, relative imports resolved; names imported
    from a module count as ``module.name`` too (they may be submodules)."""
    tree = ast.parse(path.read_text())
    module = module_name(path)
    skip = _type_checking_nodes(tree) if runtime_only else set()
    names = set()
    for node in (tree.body if module_level else ast.walk(tree)):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            names.add(source)
            names.update(f"{source}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith(("luminate", "torch.autograd"))}


def test_relative_imports_are_resolved():
    # luminate/param/ imports its modules relatively; they must reach the checks above
    assert "luminate.param.base" in imported_modules(ROOT / "param" / "__init__.py")
    tree = ast.parse("from .base import Parameterization\nfrom .. import images\nfrom . import color\n")
    nodes = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert [_absolute(n, "luminate.param.spatial", False) for n in nodes] == [
        "luminate.param.base", "luminate", "luminate.param"]
    assert _absolute(nodes[2], "luminate.param", True) == "luminate.param"


def test_every_module_has_a_layer():
    """A new module must be placed in RANKS, or the import check silently skips it."""
    unplaced = sorted(module_name(p) for p in ROOT.rglob("*.py")
                      if module_name(p) != "luminate" and rank(module_name(p)) is None)
    assert not unplaced, f"modules with no layer in RANKS: {unplaced}"


def test_imports_point_one_way():
    violations = []
    for path in ROOT.rglob("*.py"):
        module = module_name(path)
        own = rank(module)
        if own is None:
            continue
        for imported in imported_modules(path):
            other = rank(imported)
            if other is not None and other > own:
                violations.append(f"{module} (layer {own}) imports {imported} (layer {other})")
    assert not violations, "\n".join(violations)


def test_views_only_draw():
    """Views turn results into HTML: they import nothing that computes gradients or renders, and call no
    backward pass."""
    violations = []
    for path in (ROOT / "views").rglob("*.py"):
        for imported in imported_modules(path, runtime_only=True):
            if any(imported == bad or imported.startswith(bad + ".") for bad in GRADIENT_CODE):
                violations.append(f"{module_name(path)} imports {imported}")
        text = path.read_text()
        for call in (".backward(", "torch.enable_grad", "requires_grad_(", "autograd.grad("):
            if call in text:
                violations.append(f"{module_name(path)} calls {call}")
    assert not violations, "\n".join(violations)


#: Inside the pipeline floor (layer 5) a finer order, lowest first: the data package (inputs, store, passes),
#: attribution targets and what Captum lacks; then units (directions rendered one way, examples) and the analyses;
#: then the atlas and recipes; then the Microscope, features, circuits, the text Microscope and the process runner;
#: then the Lucid and Lucent shims. Checked for module-level imports (an import inside a function is a deliberate
#: late binding).
FLOOR_RANKS = [
    ("luminate.data", 0), ("luminate.analysis.targets", 0), ("luminate.analysis.lucid_attribution", 0),
    ("luminate.units", 1), ("luminate.analysis", 1),
    ("luminate.atlas", 2), ("luminate.recipes", 2),
    ("luminate.microscope", 3), ("luminate.features", 3), ("luminate.circuits", 3), ("luminate.text", 3),
    ("luminate.parallel", 3),
    ("luminate.lucid", 4), ("luminate.lucent", 4),
]

#: Private names one package imports from another, each with its reason. Keep it small: give the name a public
#: spelling instead of adding to it.
PRIVATE_IMPORTS_ALLOWED: set[str] = set()


def floor_rank(module: str) -> int | None:
    best, length = None, -1
    for prefix, r in FLOOR_RANKS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
            best, length = r, len(prefix)
    return best


def module_level_imports(path: Path) -> set[str]:
    """The ``luminate`` modules a file imports at module level (not inside functions or classes)."""
    return imported_modules(path, module_level=True)


def test_the_analysis_floor_is_ordered_too():
    violations = []
    for path in ROOT.rglob("*.py"):
        module = module_name(path)
        own = floor_rank(module)
        if rank(module) != 5 or own is None:
            continue
        for imported in module_level_imports(path):
            other = floor_rank(imported)
            if rank(imported) == 5 and other is not None and other > own:
                violations.append(f"{module} (floor {own}) imports {imported} (floor {other})")
    assert not violations, "\n".join(violations)
    assert floor_rank("luminate.analysis.lucid_attribution") < floor_rank("luminate.atlas.collect")


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_private_names_across_packages():
    """``from luminate.atlas.store import _atomic_write`` inside luminate.microscope reaches into another package's
    internals: make the name public, or justify it in PRIVATE_IMPORTS_ALLOWED."""
    found = set()
    for path in ROOT.rglob("*.py"):
        module = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node, module, path.name == "__init__.py")
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.endswith("__")
                    if source.startswith("luminate") and private and _package(source) != _package(module):
                        found.add(f"{module} imports {source}.{alias.name}")
    assert not found - PRIVATE_IMPORTS_ALLOWED, "\n".join(sorted(found - PRIVATE_IMPORTS_ALLOWED))
    stale = PRIVATE_IMPORTS_ALLOWED - found
    assert not stale, f"allowed but no longer imported (remove from the list): {sorted(stale)}"


def test_the_new_floors_are_checked():
    """Every subpackage (data, units, circuits, lucent as they come) has a layer and a place in the pipeline floor,
    and the private-import allowlist stays empty."""
    for package in ("luminate.data", "luminate.units", "luminate.circuits", "luminate.lucent", "luminate.text"):
        assert rank(package) == 5 and floor_rank(package) is not None, package
    assert floor_rank("luminate.data.store") < floor_rank("luminate.units.render") < floor_rank("luminate.atlas.icons")
    assert floor_rank("luminate.units.examples") < floor_rank("luminate.microscope.site")
    for path in ROOT.iterdir():
        if path.is_dir() and (path / "__init__.py").is_file():
            assert rank(f"luminate.{path.name}") is not None, f"luminate.{path.name} has no layer in RANKS"
    assert not PRIVATE_IMPORTS_ALLOWED


def test_pipelines_resolve_after_a_bare_import():
    """``import luminate`` then ``luminate.features`` (and the other pipelines) resolve lazily; unknown names raise
    AttributeError."""
    import subprocess
    import sys

    code = ("import luminate, sys\n"
            "for name in ('features', 'microscope', 'text', 'serve', 'data', 'units', 'atlas', 'analysis'):\n"
            "    assert getattr(luminate, name).__name__ == 'luminate.' + name, name\n"
            "assert callable(luminate.features.learn)\n"
            "try:\n    luminate.no_such_pipeline\nexcept AttributeError:\n    pass\nelse:\n    sys.exit('no error')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
