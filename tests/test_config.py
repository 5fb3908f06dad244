"""Configuration: the sample file documents every default; env and overrides win in order."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from aiosfu.config import SAMPLE_PATH, Config, load_config


def test_sample_is_the_packaged_file() -> None:
    assert SAMPLE_PATH.name == "config.sample.toml"
    assert SAMPLE_PATH.parent == Path(__file__).resolve().parent.parent / "src" / "aiosfu"
    assert SAMPLE_PATH.is_file()


def test_sample_loads_to_exactly_the_defaults() -> None:
    assert load_config(SAMPLE_PATH, env={}) == Config()


def test_sample_names_every_field_with_its_default() -> None:
    with SAMPLE_PATH.open("rb") as f:
        sample = tomllib.load(f)
    assert set(sample) == set(Config.model_fields)
    defaults = Config().model_dump()
    for name, value in sample.items():
        assert value == defaults[name], name
        assert type(value) is type(defaults[name]), name


def test_every_setting_in_the_sample_is_explained() -> None:
    # Each paragraph of the sample that sets something also says what it is.
    seen = set()
    for paragraph in re.split(r"\n\s*\n", SAMPLE_PATH.read_text()):
        # A section's settings are written as dotted keys: `sfu_node.grpc_port = 50051`.
        names = re.findall(r"^(\w+)(?:\.\w+)?\s*=", paragraph, flags=re.MULTILINE)
        if names:
            assert paragraph.lstrip().startswith("#"), names
            seen.update(names)
    assert seen == set(Config.model_fields)


def test_no_file_means_defaults() -> None:
    assert load_config(env={}) == Config()


def test_env_overrides_defaults_and_file(tmp_path: Path) -> None:
    path = tmp_path / "aiosfu.toml"
    path.write_text('port = 7000\nice_ips = ["10.0.0.1"]\nhost = "0.0.0.0"\n')
    env = {"AIOSFU_PORT": "9000", "AIOSFU_ICE_IPS": '["127.0.0.1"]'}
    config = load_config(path, env=env)
    assert config.port == 9000
    assert config.ice_ips == ["127.0.0.1"]
    assert config.host == "0.0.0.0"  # from the file, no env for it
    assert load_config(path, env={}).port == 7000


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOSFU_PORT", "9000")
    monkeypatch.setenv("AIOSFU_ICE_IPS", '["127.0.0.1"]')
    config = load_config()
    assert config.port == 9000
    assert config.ice_ips == ["127.0.0.1"]


def test_env_values_of_every_shape() -> None:
    env = {
        "AIOSFU_HOST": "::1",
        "AIOSFU_SIGNAL_ID": "123",  # stays a string
        "AIOSFU_SFU_ID": "sfu-9",
        "AIOSFU_KEEPALIVE_TIMEOUT": "2.5",
        "AIOSFU_LOG_LEVEL": "debug",
        "AIOSFU_ICE_SERVERS": '[{"urls": ["stun:stun.example.org:3478"]}]',
    }
    config = load_config(env=env)
    assert config.host == "::1"
    assert config.signal_id == "123"
    assert config.sfu_id == "sfu-9"
    assert config.keepalive_timeout == 2.5
    assert config.log_level == "debug"
    assert config.ice_servers == [{"urls": ["stun:stun.example.org:3478"]}]


def test_overrides_beat_env_and_none_means_not_given() -> None:
    env = {"AIOSFU_PORT": "9000", "AIOSFU_ICE_IPS": '["127.0.0.1"]'}
    config = load_config(env=env, overrides={"port": 9100, "ice_ips": None, "host": None})
    assert config.port == 9100
    assert config.ice_ips == ["127.0.0.1"]
    assert config.host == Config().host


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("port = 8080\nprot = 9000\n")
    with pytest.raises(ValidationError) as info:
        load_config(path, env={})
    assert "prot" in str(info.value)


def test_invalid_values_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        load_config(env={"AIOSFU_PORT": "70000"})
    with pytest.raises(ValidationError):
        load_config(env={}, overrides={"keepalive_timeout": 0})
    path = tmp_path / "bad.toml"
    path.write_text('port = "eighty"\n')
    with pytest.raises(ValidationError):
        load_config(path, env={})
