"""The main job (`make run`): a whole cycle against a real local sandbox process, twice."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchly_pipelines.cli.cycle import run_main_job
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.queue import SyncQueue


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_make_run_syncs_everything_and_a_second_run_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "QBO_BASE_URL": f"http://127.0.0.1:{_free_port()}",
        "QBO_REDIRECT_URI": f"http://127.0.0.1:{_free_port()}/callback",
    }
    settings = Settings.from_env(env, cwd=tmp_path)

    assert run_main_job(settings) == 0
    first = capsys.readouterr().out
    assert "connected:" in first and "OAuth code flow" in first
    assert "customer.create 50, invoice.create 100, item.create 20" in first
    assert "errors:          0 record(s) failed" in first

    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        unmapped = conn.execute(sa.select(sa.func.count()).where(s.invoices.c.qbo_id.is_(None))).scalar()
        linked = conn.execute(sa.select(sa.func.count()).select_from(s.qbo_sync_state)).scalar()
    assert unmapped == 0
    assert linked == 50 + 20 + 100 + 25 + 8, "pushed records and the sandbox demo company's pulled ones"
    assert sum(d["pending"] for d in SyncQueue(engine).depth().values()) == 0

    assert run_main_job(settings) == 0
    second = capsys.readouterr().out
    assert "pushed:          nothing" in second and "connected:" not in second
    assert "customer created" not in second and "item created" not in second
