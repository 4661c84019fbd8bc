"""Processes that start together (the server and a CLI command) migrate one new SQLite file safely."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from infergate.store.store import Store

SCRIPT = """
import sys
from infergate.store.store import Store
store = Store(sys.argv[1])
store.migrate()
store.create_user("user" + sys.argv[2], "free")
store.close()
"""


def test_concurrent_first_migrations_of_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'infergate.db'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, url, str(i)], stderr=subprocess.PIPE, text=True)
        for i in range(6)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(e[-500:] for e in errors if e)
    store = Store(url)
    try:
        assert sorted(u.name for u in store.list_users()) == [f"user{i}" for i in range(6)]
        store.migrate()  # again, on an up-to-date schema: nothing changes, nothing is lost
        assert len(store.list_users()) == 6
    finally:
        store.close()
