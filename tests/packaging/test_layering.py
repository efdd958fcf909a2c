"""Imports run down the layers written in docs/layout.md: every import of dvlt_core and
dvlt_ros (function-level ones too), read with ``ast``, goes to a strictly lower layer or stays
in its own folder; dvlt_core never imports dvlt_ros."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("dvlt_core", "dvlt_ros")


def declared_layers() -> dict[str, int]:
    """unit (``dvlt_core.io``) -> rank, from the ``layers`` block of docs/layout.md; every
    dvlt_ros layer ranks above every dvlt_core one."""
    text = (REPO / "docs" / "layout.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S).group(1)
    ranks: dict[str, int] = {}
    base = 0
    for line in block.strip().splitlines():
        package, _, order = line.partition(":")
        layers = [layer.split() for layer in order.split("<")]
        for rank, names in enumerate(layers):
            ranks.update({f"{package.strip()}.{name}": base + rank for name in names})
        base += len(layers)
    return ranks


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in PACKAGES and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules (or module members) ``path`` imports."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[: len(package) - node.level + 1]] if node.level else [])
            module = ".".join(filter(None, [base, node.module or ""]))
            names |= {f"{module}.{alias.name}" for alias in node.names} | {module}
    return names


def _violations() -> list[tuple[str, str, str]]:
    ranks = declared_layers()
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            unit = _unit(_module_name(path))
            if unit is None:
                continue
            assert unit in ranks, f"{rel}: {unit} is not placed in docs/layout.md's layers"
            for name in _imports(path):
                target = _unit(name) or name
                if package == "dvlt_core" and target.split(".")[0] == "dvlt_ros":
                    found.append((rel, target, "dvlt_core never imports dvlt_ros"))
                elif target in ranks and target != unit and ranks[target] >= ranks[unit]:
                    found.append((rel, target, f"{target} is not below {unit}"))
    return sorted(set(found))


def test_imports_run_down_the_declared_layers():
    found = _violations()
    assert not found, "imports up the layers (docs/layout.md):\n" + "\n".join(
        f"{rel} imports {target}: {why}" for rel, target, why in found)


def test_every_top_level_module_and_folder_is_placed():
    ranks = declared_layers()
    for package in PACKAGES:
        units = {f"{package}.{p.stem}" for p in (REPO / package).iterdir()
                 if (p.suffix == ".py" and p.stem != "__init__")
                 or (p.is_dir() and (p / "__init__.py").is_file())}
        placed = {u for u in ranks if u.startswith(f"{package}.")}
        assert units - {f"{package}.resource"} == placed, (units ^ placed)
