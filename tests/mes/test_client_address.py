"""The client address the audit records and the rate limits count is the peer's, not a header's.

uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default: any process on the box could
then pick the address of its failed logins and escape the per-address limit. The MES believes
the header only from the reverse proxy named in ``forwarded_allow_ips``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from microfactory.mes.settings import MesSettings
from tests.mes.live import LiveMes

API = "/api/v1"
FORGED = {"X-Forwarded-For": "10.9.9.9"}


def _failed_login_addresses(settings: MesSettings, forwarded_allow_ips: str | None) -> set[str]:
    mes = LiveMes(settings, forwarded_allow_ips=forwarded_allow_ips)
    try:
        with httpx.Client(base_url=mes.url, timeout=10) as http:
            body = {"username": "manager", "password": "wrong"}
            assert http.post(f"{API}/auth/token", json=body, headers=FORGED).status_code == 401
            rows = http.get(f"{API}/audit?entity=auth", auth=("manager", "manager")).json()
        return {row["address"] for row in rows["items"]}
    finally:
        mes.close()


@pytest.mark.integration
def test_a_forwarded_for_header_is_not_believed_without_a_proxy(tmp_path: Path) -> None:
    settings = MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}", site="demo", demo=True)
    _seed(settings)
    assert _failed_login_addresses(settings, None) == {"127.0.0.1"}


@pytest.mark.integration
def test_the_reverse_proxy_named_in_the_settings_gives_the_address(tmp_path: Path) -> None:
    settings = MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}", site="demo", demo=True)
    _seed(settings)
    assert _failed_login_addresses(settings, "127.0.0.1") == {"10.9.9.9"}


def _seed(settings: MesSettings) -> None:
    from microfactory.mes import db
    from microfactory.mes.seed import seed_demo

    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    with db.session_scope(db.session_factory(engine)) as session:
        seed_demo(session)
    engine.dispose()
