"""The package's shape, read from the source with ``ast``: every import (also the ones inside
functions), relative ones resolved. No import circle; nothing outside the face (``cli/``)
imports the face, except the process entry points above it; no module longer than 350 lines.
README.md, section Development, says what may import what."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "composeguard"
FACE = "composeguard.cli"
ENTRY_POINTS = {"composeguard.entry", "composeguard.__main__"}  # they start the face
MAX_LINES = 350


@functools.cache
def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package by its __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports: ``from a import b`` is the module a.b when
    there is one, else a itself."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str]:
    """One import circle of ``g`` (its modules in order, the first again at the end), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        path.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                return [*path[path.index(d) :], d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return []

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


def in_face(m: str) -> bool:
    return m == FACE or m.startswith(FACE + ".")


def test_the_graph_is_read_from_the_source() -> None:
    g = graph()
    assert "composeguard.upgrade.transaction" in g["composeguard.upgrade.preflight"]
    assert "composeguard.execute" in g["composeguard.compose.docker"]  # from composeguard import execute
    assert "composeguard.cli.runner" in g["composeguard.entry"]  # imported inside a function


def test_no_import_circle() -> None:
    cycle = find_cycle(graph())
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_packages_import_nothing_of_their_own() -> None:
    """Importing a module runs its packages' __init__.py first: import-free, they add no edge."""
    g = graph()
    heavy = {m: sorted(g[m]) for m, p in modules().items() if p.name == "__init__.py" and g[m]}
    assert not heavy


def test_nothing_below_the_face_imports_it() -> None:
    g = graph()
    wrong = sorted(
        f"{m} imports {d}"
        for m, deps in g.items()
        if not in_face(m) and m not in ENTRY_POINTS
        for d in deps
        if in_face(d)
    )
    assert not wrong, "; ".join(wrong)


def test_no_module_is_too_long() -> None:
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in modules().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"longer than {MAX_LINES} lines: {long}"


def imported_modules(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted module, for the package's modules bound by ``from x import y`` (or
    ``import a.b as c``) at the top of a module."""
    known = modules()
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if f"{node.module}.{a.name}" in known:
                    out[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            out.update({a.asname: a.name for a in node.names if a.asname and a.name in known})
    return out


def test_no_local_name_hides_an_imported_module() -> None:
    """A function's local ``images = {}`` hides the module ``images`` for the whole function:
    after a split that turned ``docker.image_info`` into ``images.image_info``, every guarded
    ``up`` failed with an AttributeError the unit tests' fakes never reached."""
    hidden = []
    for path in modules().values():
        tree = parsed(path)
        mods = imported_modules(tree)
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
                local = {a.arg for a in args} | {
                    n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
                }
                hidden += [f"{path.name}:{fn.lineno} {name}" for name in sorted(local & mods.keys())]
    assert not hidden, hidden


def test_every_attribute_read_off_a_module_is_there() -> None:
    """``module.name`` for the package's own modules: the name exists (moves and renames of
    step 16 leave no reference behind where only a lab run would find it)."""
    import importlib

    missing = []
    for path in modules().values():
        tree = parsed(path)
        mods = imported_modules(tree)
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in mods:
                if not hasattr(importlib.import_module(mods[n.value.id]), n.attr):
                    missing.append(f"{path.name}:{n.lineno} {mods[n.value.id]}.{n.attr}")
    assert not missing, missing
