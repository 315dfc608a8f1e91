"""Non-finite numbers in float settings: a usage error from every source, through the real CLI entry."""

from __future__ import annotations

import sys

import pytest
import trio

from runsvc.config import SettingsError, load_settings
from tests.helpers import child_env


async def serve(tmp_path, *args: str, **env: str) -> trio.CompletedProcess:
    """`python -m runsvc serve` on a fresh data dir; a server that starts anyway is killed at the deadline."""
    command = [sys.executable, "-m", "runsvc", "serve", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(tmp_path / "data"), *args]
    with trio.fail_after(30):
        return await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, cwd=tmp_path, env=child_env(**env)
        )


@pytest.mark.parametrize(("source", "value"), [("flag", "inf"), ("env", "nan"), ("toml", "nan"), ("toml", "inf")])
async def test_non_finite_float_setting_is_a_usage_error(tmp_path, source, value):
    """`inf`/`nan` for a float setting, from a flag, RUNSVC_* or the TOML file, exits 2 with one error line."""
    args: list[str] = []
    env: dict[str, str] = {}
    if source == "flag":
        args = ["--ws-ping-interval-s", value]
    elif source == "env":
        env = {"RUNSVC_WS_PING_INTERVAL_S": value}
    else:
        config = tmp_path / "runsvc.toml"
        config.write_text(f"ws_ping_interval_s = {value}\n")  # TOML's own inf/nan literals: floats
        args = ["--config", str(config)]
    result = await serve(tmp_path, *args, **env)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert len(errors) == 1, stderr
    assert "ws_ping_interval_s" in errors[0] and "finite" in errors[0], stderr


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "NaN", "1e400", "-1e400", float("inf"), float("nan")])
def test_parse_refuses_non_finite_numbers(value):
    """Every spelling of a non-finite number (and one that overflows to infinity) is refused by name."""
    with pytest.raises(SettingsError, match=r"invalid retention_days from --retention-days: .* \(expected a finite"):
        load_settings({"retention_days": value}, environ={})


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_environment_refuses_non_finite_numbers(value):
    """RUNSVC_* values are parsed the same way: a non-finite number names the variable."""
    with pytest.raises(SettingsError, match=r"invalid kill_grace_s from RUNSVC_KILL_GRACE_S: .* \(expected a finite"):
        load_settings({}, environ={"RUNSVC_KILL_GRACE_S": value})
