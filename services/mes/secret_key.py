"""The HMAC key of the bearer tokens: given, or generated once and kept in the state directory.

A key made fresh at every start would log everyone out at each restart; a key in the source or
an empty one lets anyone forge an admin token offline. So when ``secret_key`` is unset the MES
makes a random one on first start and reads it back on every later start (file mode 0600).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url

from microfactory.mes.settings import MIN_SECRET_KEY_BYTES, MesSettings

log = logging.getLogger(__name__)

KEY_FILE = "secret_key"


def state_dir(settings: MesSettings) -> Path | None:
    """The configured folder; else the SQLite file's; None for an in-memory database."""
    if settings.state_dir is not None:
        return settings.state_dir
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return None  # nothing of this MES outlives the process: neither may its key
        return Path(url.database).parent
    return Path("data")


def resolve_secret_key(settings: MesSettings) -> str:
    """The configured key, else the one in ``<state_dir>/secret_key`` (created if missing)."""
    if settings.secret_key is not None:
        return settings.secret_key
    folder = state_dir(settings)
    if folder is None:
        log.info("in-memory database: bearer tokens signed with a key of this process only")
        return secrets.token_urlsafe(48)
    return _read_or_create(folder / KEY_FILE)


def _read_or_create(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    else:
        if len(key.encode()) < MIN_SECRET_KEY_BYTES:
            raise ValueError(
                f"{path}: secret key shorter than {MIN_SECRET_KEY_BYTES} bytes; delete the file "
                "to have a new one generated (every issued token becomes invalid)"
            )
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # written aside, then linked into place: a second MES starting at the same moment either
    # wins the link or reads the whole key the first one wrote, never a half-written file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        return _read_or_create(path)
    finally:
        tmp.unlink()
    log.info("generated the bearer-token key in %s (mode 0600)", path)
    return key
