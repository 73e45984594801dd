"""The layer rule, read from the source (ast, every import statement, also those inside
functions): `sedd_jax/data`, `sedd_jax/common` and `sedd_jax/metrics` are numpy layers and
import none of jax, flax, optax, orbax, grain -- but `data/loader.py`, the grain wrapper,
imports grain -- nor any sedd_jax module outside those layers; `sedd_torch` imports of
sedd_jax only `sedd_jax.common` and the numpy part of `sedd_jax.data` (not its loader)."""

from __future__ import annotations

import ast
import pathlib

import pytest

from tests.helpers import REPO

JAX_STACK = {"jax", "jaxlib", "flax", "optax", "orbax", "grain"}
NUMPY_LAYERS = ("sedd_jax.data", "sedd_jax.common", "sedd_jax.metrics")
GRAIN_WRAPPER = "sedd_jax.data.loader"
TWIN_MAY_IMPORT = ("sedd_jax.common", "sedd_jax.data")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; `from a import b` names
    a.b where that is a module of this repository, else a."""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full if is_module(full) else base))
    return found


def modules(package: str) -> list[pathlib.Path]:
    return sorted(REPO.joinpath(*package.split(".")).rglob("*.py"))


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def numpy_layer_violations(path: pathlib.Path) -> list[str]:
    this = module_name(path)
    out = []
    for line, name in imports(path):
        top = name.split(".")[0]
        if top in JAX_STACK and not (top == "grain" and this == GRAIN_WRAPPER):
            out.append(f"{this}:{line} imports {name}")
        elif top == "sedd_jax" and not within(name, NUMPY_LAYERS):
            out.append(f"{this}:{line} imports {name}")
    return out


def twin_violations(path: pathlib.Path) -> list[str]:
    out = []
    for line, name in imports(path):
        if name.split(".")[0] != "sedd_jax":
            continue
        if not within(name, TWIN_MAY_IMPORT) or within(name, [GRAIN_WRAPPER]):
            out.append(f"{module_name(path)}:{line} imports {name}")
    return out


# Today's violations, one entry per module: strict xfails, so fixing one fails its test
# until the entry goes.
KNOWN: dict[str, str] = {}


def cases(packages):
    out = []
    for package in packages:
        for path in modules(package):
            name = module_name(path)
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN[name])] if name in KNOWN else []
            out.append(pytest.param(path, id=name, marks=marks))
    return out


def test_import_reader_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    package = tmp_path / "sedd_jax" / "data"
    package.mkdir(parents=True)
    (tmp_path / "sedd_jax" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "fasta.py").write_text("")
    (package / "probe.py").write_text(
        "import numpy as np\n"
        "from . import fasta\n"
        "from .. import models\n"
        "def f():\n"
        "    import optax\n"
        "    from flax import linen\n"
    )
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert imports(package / "probe.py") == [
        (1, "numpy"),
        (2, "sedd_jax.data.fasta"),
        (3, "sedd_jax"),
        (5, "optax"),
        (6, "flax"),
    ]


@pytest.mark.parametrize("path", cases(NUMPY_LAYERS))
def test_numpy_layers_import_no_jax_stack_and_no_jax_layer(path):
    assert numpy_layer_violations(path) == []


@pytest.mark.parametrize("path", cases(["sedd_torch"]))
def test_twin_imports_only_the_numpy_layers_of_sedd_jax(path):
    assert twin_violations(path) == []


def test_every_module_is_read():
    """The packages the rule covers exist and hold the modules it names."""
    names = {module_name(p) for p in modules("sedd_jax")}
    assert {GRAIN_WRAPPER, *NUMPY_LAYERS} <= names
    assert {module_name(p) for p in modules("sedd_torch")} >= set(KNOWN)
