"""How a task's stored status is shown: a due ``scheduled`` row is queued (its timer fired
in the grain, which writes the row's next state with its next flush)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from services.store.control._task_reads import _shown_as, _shown_status

NOW = dt.datetime.now(dt.UTC)


def test_a_scheduled_row_shows_queued_once_due() -> None:
    assert _shown_status("scheduled", NOW - dt.timedelta(seconds=1)) == "queued"
    assert _shown_status("scheduled", NOW + dt.timedelta(hours=1)) == "scheduled"
    assert _shown_status("leased", NOW - dt.timedelta(seconds=1)) == "leased"
    assert _shown_status("queued", NOW + dt.timedelta(hours=1)) == "queued"


def sql(clause: sa.ColumnElement[bool]) -> str:
    return str(clause.compile(dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}))


def test_the_status_filter_matches_what_is_shown() -> None:
    queued = sql(_shown_as("queued", now=NOW))
    assert "tasks.status = 'queued' OR tasks.status = 'scheduled' AND tasks.due_at <=" in queued
    scheduled = sql(_shown_as("scheduled", now=NOW))
    assert "tasks.status = 'scheduled' AND tasks.due_at >" in scheduled
    assert sql(_shown_as("dead", now=NOW)) == "tasks.status = 'dead'"
