"""The custom import-linter contract (tests/import_contracts.py) finds SQL outside repositories."""

from __future__ import annotations

from pathlib import Path

from tests.import_contracts import _query_imports


def test_query_constructs_are_found_types_and_exceptions_are_not(tmp_path: Path) -> None:
    module = tmp_path / "endpoint.py"
    module.write_text(
        "from sqlalchemy import Engine, RowMapping\n"
        "from sqlalchemy.exc import IntegrityError\n"
        "from sqlalchemy.orm import Session\n"
        "from sqlalchemy import (\n    func,\n    select,\n)\n"
        "from sqlalchemy.dialects.postgresql import insert\n"
        "import sqlalchemy as sa\n"
    )
    assert _query_imports(str(module)) == [
        (4, "from sqlalchemy import func"),
        (4, "from sqlalchemy import select"),
        (8, "from sqlalchemy.dialects.postgresql import insert"),
        (9, "import sqlalchemy"),
    ]


def test_the_repositories_hold_the_sql_the_contract_allows() -> None:
    """A repository module does import the query API: the contract has something to allow."""
    repo = Path(__file__).resolve().parent.parent / "service" / "worker" / "repository.py"
    assert any("select" in what for _, what in _query_imports(str(repo)))
