"""MES fixtures: one PostgreSQL server per session, a fresh database (SQLite or PostgreSQL) per
test, and the MES app built by its real factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from microfactory.mes import db
from microfactory.mes.api.app import create_app
from microfactory.mes.seed import seed_demo
from microfactory.mes.settings import MesSettings
from tests.helpers.markers import starts_server
from tests.helpers.postgres import PostgresServer, find_pg_bin

QUICK_RUN = "not integration"  # the -m expression of the quick run of the pure tests


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The quick run does not even import the API fuzzing module: it is integration through and
    through, and builds its hundred-odd cases from the OpenAPI schema at import (seconds)."""
    if collection_path.name == "test_schemathesis.py" and config.getoption("markexpr") == QUICK_RUN:
        return True
    return None


@pytest.fixture(scope="session")
@starts_server("PostgreSQL")
def postgres() -> Iterator[PostgresServer]:
    if find_pg_bin() is None:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
    with PostgresServer() as server:
        yield server


# SQLite needs no server: that half is a pure test; the PostgreSQL half is integration (the
# fixture is fetched by name below, which the collection check cannot see, hence the mark).
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite (the default) and PostgreSQL (by URL)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mes.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mes.sqlite'}"


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeClient]:
    """Build a seeded MES app on a database URL and return a client (closed after the test).

    Its state directory (the generated token key) is a temporary one: with PostgreSQL it would
    otherwise be ./data of the checkout."""
    clients: list[TestClient] = []

    def make(url: str, **settings: object) -> TestClient:
        values: dict[str, object] = {"db_url": url, "demo": True, "site": "demo"}
        values["state_dir"] = tmp_path_factory.mktemp("mes-state")
        values.update(settings)
        app = create_app(MesSettings.model_validate(values))
        with db.session_scope(app.state.runtime.sessions) as session:
            seed_demo(session)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


OPERATOR = ("operator", "operator")
MANAGER = ("manager", "manager")
ADMIN = ("admin", "admin")
