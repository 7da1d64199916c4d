"""The layers of DESIGN.md as a contract: every package imports only lower floors, and no
two packages import each other, whatever the import's form.

Read from the source with ast (not by importing it): `import podnet.x`, `from podnet import
x`, relative imports, imports inside functions and `importlib.import_module("podnet.x")`
with a literal (or an f-string's literal head) all count. import-linter would miss the last
one, and would be one more tool to install; this is forty lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "podnet"

# Top to bottom. Packages on one floor may import each other one way only (no cycle).
FLOORS: list[set[str]] = [
    {"cli", "__main__"},
    {"agent"},
    {"cni", "dns", "services", "policy", "observe", "docker", "ingress", "cluster"},  # the front doors
    {"api"},
    {"drivers", "firewall", "runtime"},
    {"ipam"},
    {"dataplane"},
    {"store", "model"},
    {"errors", "config", "util", "__init__"},
]
FLOOR_OF = {package: level for level, floor in enumerate(FLOORS) for package in floor}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """podnet.api.pods -> api; podnet (its __init__) -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _literal_head(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def imported(path: Path, module: str | None = None) -> set[str]:
    """The podnet modules (or packages) this file imports, in any form."""
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from podnet import api`: the name may be a module
                candidate = SRC.parent / Path(*f"{target}.{alias.name}".split("."))
                if candidate.with_suffix(".py").exists() or candidate.is_dir():
                    found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Call) and node.args and (
            getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) == "import_module"
        ):
            head = _literal_head(node.args[0])
            if head:
                found.add(head.rstrip("."))
    return {name for name in found if name == "podnet" or name.startswith("podnet.")}


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(from package, to package) -> the files that make that edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        source = package_of(module_name(path))
        for target in imported(path):
            dest = package_of(target)
            if target == "podnet" and source != "__init__":
                continue  # `from podnet import x` is counted as podnet.x above
            if dest != source:
                files = edges.setdefault((source, dest), [])
                if str(path.relative_to(SRC.parent)) not in files:
                    files.append(str(path.relative_to(SRC.parent)))
    return edges


def test_every_package_has_a_floor() -> None:
    packages = {package_of(module_name(p)) for p in SRC.rglob("*.py")}
    assert packages <= set(FLOOR_OF), f"give these packages a floor in FLOORS: {sorted(packages - set(FLOOR_OF))}"


def test_imports_go_down() -> None:
    upward = [f"{a} -> {b} ({', '.join(files)})" for (a, b), files in package_edges().items()
              if FLOOR_OF.get(b, -1) < FLOOR_OF.get(a, -1)]
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in package_edges():
        graph.setdefault(a, set()).add(b)
    cycles = [f"{a} <-> {b}" for a in graph for b in graph[a] if a < b and a in graph.get(b, set())]
    assert not cycles, "packages that import each other: " + ", ".join(cycles)

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(node):] + [node]))
        for nxt in graph.get(node, ()):
            visit(nxt, trail + [node])

    for start in graph:
        visit(start, [])


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    """The parser itself: a check that cannot see an import cannot fail on it."""
    probe = tmp_path / "probe.py"
    probe.write_text("from podnet import agent\nfrom ..dns import records\nimport podnet.cli.main\n"
                     "def f():\n    import importlib\n    importlib.import_module('podnet.services.controller')\n"
                     "    importlib.import_module(f'podnet.cni.{f}')\n")
    assert imported(probe, "podnet.api.probe") >= {"podnet.agent", "podnet.dns.records", "podnet.cli.main",
                                                    "podnet.services.controller", "podnet.cni"}


def _module_aliases(tree: ast.Module) -> set[str]:
    """Names this file binds to podnet modules (`from podnet.dataplane import netlink`, `import podnet.x as y`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("podnet"):
            for alias in node.names:
                candidate = SRC.parent / Path(*f"{node.module}.{alias.name}".split("."))
                if candidate.with_suffix(".py").exists() or candidate.is_dir():
                    names.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            names.update(a.asname for a in node.names if a.name.startswith("podnet") and a.asname)
    return names


def test_kernel_calls_live_in_dataplane() -> None:
    """pyroute2 is imported, and nft, conntrack and tc are run, only inside dataplane/."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if package_of(module_name(path)) == "dataplane":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n == "pyroute2" or n.startswith("pyroute2.") for n in names):
                    found.append(f"{path.relative_to(SRC.parent)}:{node.lineno} imports pyroute2")
            elif isinstance(node, ast.Constant) and node.value in ("nft", "conntrack", "tc"):
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno} names the {node.value} binary")
    assert not found, "kernel calls outside dataplane/:\n" + "\n".join(found)


def test_no_module_reaches_into_another_modules_private_names() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC.parent))
        tree = ast.parse(path.read_text(), str(path))
        modules = _module_aliases(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{rel}:{node.lineno} {node.value.id}.{node.attr}")
    assert not found, "private names used from another module:\n" + "\n".join(found)
