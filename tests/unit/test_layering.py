"""The layers of DESIGN.md §2, checked on the source: who may import what.

The platform clients and the request rules know nothing of Kubernetes; the mover knows
nothing of kopf; the controller knows nothing of HTTP or SSH details (it goes through the
request core and the platform package for those).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "odoo_upgrade"

KUBERNETES = ("kopf", "kubernetes", "kubernetes_asyncio")
RULES = [
    ("platform", (*KUBERNETES, "click", "paramiko")),
    ("request", (*KUBERNETES, "click", "httpx", "http.client", "paramiko")),
    ("transfer", (*KUBERNETES, "click")),
    ("database", (*KUBERNETES, "click")),
    ("mover.py", ("kopf", "kubernetes", "kubernetes_asyncio")),
    ("mover_database.py", ("kopf", "kubernetes", "kubernetes_asyncio")),
    ("run_database.py", (*KUBERNETES, "httpx", "paramiko")),
    ("controller", ("httpx", "http.client", "paramiko", "aiohttp")),
]


def modules(part: str) -> Iterator[Path]:
    path = PACKAGE / part
    yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imported(path: Path) -> Iterator[str]:
    """Every module name an import statement in `path` names (also inside functions)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def forbidden_in(name: str, banned: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


@pytest.mark.parametrize(("part", "banned"), RULES, ids=[r[0] for r in RULES])
def test_each_layer_imports_only_what_it_may(part: str, banned: tuple[str, ...]) -> None:
    offences = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in modules(part)
        for name in imported(path)
        if forbidden_in(name, banned)
    ]
    assert offences == []


def test_the_rules_are_checked_on_real_files() -> None:
    # A rule over an empty or renamed part would pass without checking anything.
    for part, _ in RULES:
        assert list(modules(part)), part
    assert any("kopf" in imported(p) for p in modules("controller"))
    assert any("httpx" in imported(p) for p in modules("platform"))
