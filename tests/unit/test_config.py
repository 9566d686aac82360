"""Config: presets, validation, environment, TOML, and the generated reference."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from p2pcluster import Config, ConfigError
from p2pcluster._config import render_markdown

DOCS = Path(__file__).parents[2] / "docs" / "config.md"


def test_every_field_is_documented_with_its_trade_off_and_unit() -> None:
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        doc = f.metadata["doc"]
        assert len(doc) > 60, f"{f.name}: say what it trades off"
        if hints[f.name] is float:
            assert f.metadata["unit"] == "s", f"{f.name}: times are float seconds"


def test_docs_config_md_is_current() -> None:
    assert DOCS.read_text() == render_markdown(), (
        "docs/config.md is stale: run `python scripts/gen_config_docs.py`"
    )


def test_presets() -> None:
    assert Config.lan() == Config()
    local = Config.local()
    assert local.bind_address == "127.0.0.1"
    assert local.handshake_timeout < Config.lan().handshake_timeout
    assert Config.local(port=0).port == 0


@pytest.mark.parametrize("change", [
    {"cluster": ""}, {"cluster": "x" * 64}, {"port": 70000}, {"max_datagram_size": 1401},
    {"max_datagram_size": 100}, {"max_frame_size": 10}, {"replay_window": 0.0},
    {"replay_cache_size": 5}, {"handshake_timeout": -1.0}, {"stream_cipher": "aes"},
])
def test_invalid_values_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Config(**change)  # type: ignore[arg-type]


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().port = 1  # type: ignore[misc]


def test_environment() -> None:
    env = {"P2PCLUSTER_CLUSTER": "lab", "P2PCLUSTER_PORT": "8000",
           "P2PCLUSTER_REPLAY_WINDOW": "12.5", "P2PCLUSTER_SECRET_FILE": "none",
           "P2PCLUSTER_UNRELATED": "ignored"}
    config = Config.load(environ=env)
    assert (config.cluster, config.port, config.replay_window, config.secret_file) == (
        "lab", 8000, 12.5, None)
    with pytest.raises(ConfigError, match="P2PCLUSTER_PORT='many'"):
        Config.load(environ={"P2PCLUSTER_PORT": "many"})


def test_lists_from_environment_and_toml(tmp_path: Path) -> None:
    config = Config.load(environ={"P2PCLUSTER_SEEDS": "10.0.0.1:7946, lab2 ,",
                                  "P2PCLUSTER_MDNS": "off", "P2PCLUSTER_WORKERS": "3"})
    assert config.seeds == ("10.0.0.1:7946", "lab2")
    assert config.mdns is False and config.workers == 3
    path = tmp_path / "c.toml"
    path.write_text('seeds = ["a:1", "b"]\ntags = ["gpu"]\n')
    assert Config.load(toml=path, environ={}).tags == ("gpu",)
    path.write_text('seeds = "a:1"\n')
    with pytest.raises(ConfigError, match="list of strings"):
        Config.load(toml=path, environ={})


def test_toml_then_env_then_arguments(tmp_path: Path) -> None:
    path = tmp_path / "p2p.toml"
    path.write_text('[p2pcluster]\ncluster = "lab"\nport = 9000\nhandshake_timeout = 3\n')
    config = Config.load(toml=path, environ={"P2PCLUSTER_PORT": "9001"}, replay_window=5.0)
    assert (config.cluster, config.port, config.handshake_timeout, config.replay_window) == (
        "lab", 9001, 3.0, 5.0)
    top = tmp_path / "top.toml"
    top.write_text('cluster = "top"\n')
    assert Config.load(toml=top, environ={}).cluster == "top"
    assert Config.load(preset="local", environ={}).bind_address == "127.0.0.1"


@pytest.mark.parametrize(("text", "match"), [
    ('prot = 1\n', "unknown keys \\['prot'\\]"),
    ('port = "x"\n', "must be int"),
    ('port = [\n', "cannot read"),
])
def test_bad_toml(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        Config.load(toml=path, environ={})


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="preset"):
        Config.load(preset="wan", environ={})
