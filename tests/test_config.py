"""Settings: precedence of the four sources, and a clear error for each kind of bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from runsvc.config import Settings, SettingsError, load_settings, prepare_data_dir


def test_defaults():
    """With no source, every setting has its documented default."""
    settings = load_settings({}, environ={})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.data_dir == Path("./runsvc-data")
    assert settings.database_path == Path("./runsvc-data/runsvc.db")
    assert settings.max_concurrent_runs >= 1
    assert settings.drain_s == 10.0


def test_precedence_flags_over_env_over_toml_over_defaults(tmp_path):
    """A flag beats RUNSVC_*, which beats the TOML file, which beats the default."""
    config = tmp_path / "runsvc.toml"
    config.write_text('port = 7001\nhost = "10.0.0.1"\nlog_level = "debug"\nkill_grace_s = 3\n')
    environ = {"RUNSVC_PORT": "7002", "RUNSVC_HOST": "10.0.0.2"}
    settings = load_settings({"port": "7003"}, environ=environ, config_file=config)
    assert settings.port == 7003  # flag
    assert settings.host == "10.0.0.2"  # env
    assert settings.log_level == "debug"  # toml
    assert settings.kill_grace_s == 3.0  # toml, int accepted for a float
    assert settings.drain_s == 10.0  # default


@pytest.mark.parametrize(
    ("flags", "environ", "toml", "message"),
    [
        ({"port": "70000"}, {}, None, "port must be between 0 and 65535, got 70000"),
        ({"port": "eighty"}, {}, None, "invalid port from --port: 'eighty' (not a valid value)"),
        ({}, {"RUNSVC_PORT": "-1"}, None, "port must be between 0 and 65535, got -1"),
        ({}, {"RUNSVC_COOKIE_SECURE": "maybe"}, None, "invalid cookie_secure from RUNSVC_COOKIE_SECURE"),
        ({}, {}, "colour = 'blue'\n", "unknown setting 'colour' in config file"),
        ({}, {}, "port = 'x'\n", "invalid port from config file"),
        ({}, {}, "port = \n", "is not valid TOML"),
        ({"max_concurrent_runs": "0"}, {}, None, "max_concurrent_runs must be >= 1, got 0"),
        ({"log_level": "loud"}, {}, None, "expected one of debug, info, warning, error"),
    ],
)
def test_invalid_settings_are_one_clear_error(tmp_path, flags, environ, toml, message):
    """Each kind of bad value raises SettingsError with a message naming the setting."""
    config = None
    if toml is not None:
        config = tmp_path / "c.toml"
        config.write_text(toml)
    with pytest.raises(SettingsError) as info:
        load_settings(flags, environ=environ, config_file=config)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    """A config file that cannot be read is named in the error."""
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings({}, environ={}, config_file=tmp_path / "nope.toml")


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    """A data dir path that is a regular file cannot be used."""
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(SettingsError, match="is not a directory"):
        prepare_data_dir(Settings(data_dir=target))
    with pytest.raises(SettingsError, match="cannot create data dir"):
        prepare_data_dir(Settings(data_dir=target / "below"))


def test_data_dir_is_created(tmp_path):
    """A missing data dir is created, parents included."""
    prepare_data_dir(Settings(data_dir=tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()


def test_session_ttl_is_bounded():
    """A session lifetime past 10 years is refused (an expiry date must stay computable)."""
    with pytest.raises(SettingsError, match="session_ttl_s must be <= 315360000"):
        load_settings({"session_ttl_s": "1e12"}, environ={})
