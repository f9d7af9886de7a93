"""The package boundaries (ARCHITECTURE.md "Layout", issue #10), checked on the source: every
module's imports are read with ``ast`` -- at the top, inside functions, under
``TYPE_CHECKING`` -- so a boundary cannot be crossed by a lazy or type-only import either.

- No SV2 role package imports another: the JD server (``sv2.jds``), the JD client
  (``sv2.jdc``), the Template Distribution client and provider (``sv2.tdp``) and the pool's
  Mining Protocol server (``sv2.mining``) share only what sits below them in ``sv2``.
- The payout domain stands alone: no module of ``payouts`` imports ``sv2`` or ``api``, except
  the layer on top, the ``payouts`` CLI (``payouts.cli``) and the composition root of
  ``payouts serve`` (``payouts.served``), which alone wire the domain, the protocol and the API
  together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROLE_PACKAGES = ("sv2.jds", "sv2.jdc", "sv2.tdp", "sv2.mining")


def module_name(path: Path) -> str:
    """``sv2/jds/server.py`` -> ``sv2.jds.server``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(package: str) -> Iterator[tuple[str, Path]]:
    """Every module of ``package`` (dotted), with its file."""
    base = ROOT.joinpath(*package.split("."))
    for path in sorted(base.rglob("*.py")):
        yield module_name(path), path


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """The dotted names every ``import`` / ``from ... import`` in ``source`` can load,
    wherever the statement stands; relative imports are resolved against ``module``. For
    ``from a.b import c`` both ``a.b`` and ``a.b.c`` are listed (``c`` may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def role_of(name: str) -> str | None:
    return next((p for p in ROLE_PACKAGES if within(name, p)), None)


def role_violations(package: str) -> list[str]:
    """``module -> imported`` for every import of another role package by a module of the
    role package ``package``."""
    out = []
    for module, path in modules_under(package):
        names = imported_modules(
            path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
        )
        for name in sorted(names):
            other = role_of(name)
            if other is not None and other != package:
                out.append(f"{module} -> {name}")
    return out


TOP_LAYER = ("payouts.cli", "payouts.served", "payouts.cluster_member", "payouts.__main__")


def domain_violations() -> list[str]:
    """``module -> imported`` for every import of ``sv2`` or ``api`` by a domain module."""
    out = []
    for module, path in modules_under("payouts"):
        if any(within(module, top) for top in TOP_LAYER):
            continue
        names = imported_modules(
            path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
        )
        out += [f"{module} -> {n}" for n in sorted(names)
                if within(n, "sv2") or within(n, "api")]
    return out


def test_the_payout_domain_imports_neither_sv2_nor_api() -> None:
    domain = [m for m, _ in modules_under("payouts")
              if not any(within(m, top) for top in TOP_LAYER)]
    # the packages ARCHITECTURE.md names, all read
    for pkg in ("accounting", "distribution", "settlement", "tx", "crypto", "store", "node"):
        assert any(within(m, f"payouts.{pkg}") for m in domain), pkg
    assert domain_violations() == []


def test_the_domain_check_would_see_a_violation(tmp_path: Path) -> None:
    """The check is not vacuous: an import of sv2 in a domain-shaped source is reported."""
    names = imported_modules("def f():\n    from sv2.jds import server\n",
                             "payouts.settlement.runner")
    assert any(within(n, "sv2") for n in names)


@pytest.mark.parametrize(
    "package", [p for p in ROLE_PACKAGES if ROOT.joinpath(*p.split(".")).is_dir()]
)
def test_no_role_package_imports_another(package: str) -> None:
    assert list(modules_under(package)), f"{package} has no modules"
    assert role_violations(package) == []


def test_the_import_reader_sees_every_kind_of_import() -> None:
    """What the boundary test relies on: lazy, type-only and relative imports are all seen."""
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
import sv2.session
if TYPE_CHECKING:
    from sv2.jdc.session import JdcSession
def late() -> None:
    import sv2.tdp.client
    from .. import jdc
    from ..jds import server
"""
    names = imported_modules(source, "sv2.mining.server")
    assert {"sv2.session", "sv2.jdc.session", "sv2.tdp.client", "sv2.jdc", "sv2.jds"} <= names
    assert "sv2.jds.server" in names
    assert {role_of(n) for n in names} >= {"sv2.jdc", "sv2.tdp", "sv2.jds"}
    assert imported_modules("from . import steps", "sv2.jds", is_package=True) == {
        "sv2.jds",
        "sv2.jds.steps",
    }
