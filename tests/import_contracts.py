"""A custom import-linter contract (configured in pyproject's ``[tool.importlinter]``).

`SqlQueryApiContract` keeps SQL in the repositories: only the modules matching `allowed` may
import SQLAlchemy's query constructs (``select``, ``update``, ``func``... from ``sqlalchemy``,
``sqlalchemy.sql`` or a dialect). Importing types (``Session``, ``Engine``, ``RowMapping``) and
exceptions stays allowed everywhere. import-linter's built-in contracts see only module names
(``sqlalchemy``), not the names imported from it, hence this contract: it reads each module's
``import`` statements with `ast`.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
from typing import Any, cast

from importlinter import Contract, ContractCheck, fields, output

# SQLAlchemy's statement and expression constructors
QUERY_NAMES = frozenset(
    {
        "select", "insert", "update", "delete", "text", "func", "case", "cast", "exists",
        "and_", "or_", "not_", "bindparam", "literal", "literal_column", "column", "table",
        "union", "union_all", "join", "outerjoin", "values", "tuple_", "null", "true", "false",
        "Select", "Insert", "Update", "Delete", "TextClause",
    }
)  # fmt: skip


def _query_imports(path: str) -> list[tuple[int, str]]:
    """(line, what) for each import of SQLAlchemy's query API in the file at `path`."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            module = node.module or ""
            whole = module.startswith(("sqlalchemy.sql", "sqlalchemy.dialects"))
            for alias in node.names:
                if alias.name in QUERY_NAMES or (whole and alias.name != "*"):
                    found.append((node.lineno, f"from {module} import {alias.name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sqlalchemy" or alias.name.startswith("sqlalchemy.sql"):
                    found.append((node.lineno, f"import {alias.name}"))  # the whole API
    return found


class SqlQueryApiContract(Contract):
    """Only `allowed` modules (glob patterns) of `packages` import SQLAlchemy's query API."""

    packages = fields.ListField(subfield=fields.StringField())
    allowed = fields.ListField(subfield=fields.StringField())

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        # the fields hold the parsed lists once the contract is built
        roots = tuple(cast(list[str], self.packages))
        patterns = cast(list[str], self.allowed)
        violations = []
        for module in sorted(graph.modules):
            if not module.startswith(roots) or any(fnmatch.fnmatch(module, p) for p in patterns):
                continue
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
                continue
            violations += [(module, line, what) for line, what in _query_imports(spec.origin)]
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for module, line, what in check.metadata["violations"]:
            output.print_error(f"{module}:{line}: {what} (SQL belongs in a repository module)")
        output.new_line()
