"""Worker settings from the environment, among them the publish window of the pipelined replies."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from workers.sdk import WorkerSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RECKON_CHUNK_SIZE", "RECKON_PUBLISH_WINDOW"):
        monkeypatch.delenv(name, raising=False)
    settings = WorkerSettings()

    assert (settings.chunk_size, settings.publish_window) == (500, 16)


def test_the_environment_sets_chunk_size_and_publish_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECKON_CHUNK_SIZE", "100")
    monkeypatch.setenv("RECKON_PUBLISH_WINDOW", "4")

    assert (WorkerSettings().chunk_size, WorkerSettings().publish_window) == (100, 4)


def test_a_publish_window_below_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECKON_PUBLISH_WINDOW", "0")

    with pytest.raises(ValidationError, match="publish_window"):
        WorkerSettings()
