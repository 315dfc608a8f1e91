"""Settings: command-line flags > RUNSVC_* environment variables > TOML config file > defaults.

Every setting is a field of `Settings` below; its metadata carries the help text and the parser that
turns a flag, an environment variable or a TOML value into the field's type. The CLI builds `serve
--help` from the same fields, so the list there is always complete.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .names import NAME_RULE, is_name

ENV_PREFIX = "RUNSVC_"


class SettingsError(Exception):
    """A setting has a value runsvc cannot use. The message is one line for the user."""


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError("expected an integer")


def _parse_float(value: Any) -> float:
    """A finite number: every float setting is a duration, size or rate, where inf or nan (which float()
    and TOML both accept) would only fail later, deep inside the server, or silently pass a bound check."""
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        raise ValueError("expected a number")
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise ValueError("expected true or false")


def _parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _parse_path(value: Any) -> Path:
    return Path(_parse_str(value))


def _parse_labels(value: Any) -> tuple[str, ...]:
    """A comma-separated string (flag, environment) or a TOML list of strings."""
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise ValueError("expected comma-separated labels")
    for item in items:
        if not is_name(item):
            raise ValueError(f"expected labels of {NAME_RULE}")
    return tuple(dict.fromkeys(items))


def _parse_hosts(value: Any) -> tuple[str, ...]:
    """Host names (or IP addresses) as a comma-separated string or a TOML list; lowercased."""
    if isinstance(value, str):
        items = [item.strip().lower() for item in value.split(",") if item.strip()]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip().lower() for item in value if item.strip()]
    else:
        raise ValueError("expected comma-separated host names")
    for item in items:
        if any(char in item for char in "/@ ") or item.count(":") == 1:
            raise ValueError("expected host names without scheme, path or port")
    return tuple(dict.fromkeys(item.strip("[]") for item in items))


def _parse_level(value: Any) -> str:
    level = _parse_str(value).lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("expected one of debug, info, warning, error")
    return level


def _at_least(minimum: float) -> Callable[[Any, attrs.Attribute, Any], None]:
    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value < minimum:
            raise SettingsError(f"{attribute.name} must be >= {minimum}, got {value}")

    return check


def _at_most(maximum: float) -> Callable[[Any, attrs.Attribute, Any], None]:
    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value > maximum:
            raise SettingsError(f"{attribute.name} must be <= {maximum}, got {value}")

    return check


def _port(_instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise SettingsError(f"{attribute.name} must be between 0 and 65535, got {value}")


def _non_empty(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value:
        raise SettingsError(f"{attribute.name} must not be empty")


def _database_url(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
    # The URL's syntax is psycopg's to judge, when the store opens it; this catches the wrong kind of URL
    # before anything starts. Never echo the value: it may hold a password.
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"{attribute.name} must start with postgresql:// (or be empty for SQLite)")


def _setting(default: Any, help: str, parse: Callable[[Any], Any], *validators: Any) -> Any:
    kwargs: dict[str, Any] = {"metadata": {"help": help, "parse": parse}, "validator": list(validators)}
    if callable(default):
        kwargs["factory"] = default
    else:
        kwargs["default"] = default
    return attrs.field(**kwargs)


MiB = 1024 * 1024


@attrs.frozen(kw_only=True)
class Settings:
    host: str = _setting("127.0.0.1", "address to listen on", _parse_str, _non_empty)
    port: int = _setting(8080, "port to listen on (0 picks a free one)", _parse_int, _port)
    data_dir: Path = _setting(
        lambda: Path("./runsvc-data"), "directory for the database and run directories", _parse_path
    )
    log_level: str = _setting("info", "debug, info, warning or error", _parse_level)
    public_origin: str = _setting(
        "", "origin browsers use to reach the server, e.g. https://runs.example.com "
        "(default: taken from the request's Host header)", _parse_str
    )
    allowed_hosts: tuple[str, ...] = _setting(
        (), "host names (or addresses) requests may name in their Host header, comma-separated; others get "
        "400 (empty: any; /metrics is open on loopback only to a loopback Host either way)", _parse_hosts,
    )
    cookie_secure: bool = _setting(
        False, "mark the login cookies (runsvc_session, runsvc_logged_in) Secure (serve over HTTPS)", _parse_bool
    )
    session_ttl_s: float = _setting(
        7 * 86400.0, "session lifetime, seconds (at most 10 years)", _parse_float, _at_least(1),
        _at_most(10 * 365 * 86400),
    )
    max_body_bytes: int = _setting(MiB, "largest accepted request body, bytes", _parse_int, _at_least(1))
    max_concurrent_runs: int = _setting(
        lambda: os.cpu_count() or 1, "runs executing at once (default: number of CPUs)", _parse_int,
        _at_least(1),
    )
    kill_grace_s: float = _setting(
        10.0, "seconds between SIGTERM and SIGKILL when stopping a run", _parse_float, _at_least(0)
    )
    drain_s: float = _setting(
        10.0, "on shutdown, seconds running runs get to finish before they are stopped", _parse_float,
        _at_least(0),
    )
    scheduler_safety_net_s: float = _setting(
        60.0, "longest the idle scheduler sleeps without a wakeup, seconds", _parse_float, _at_least(0.01)
    )
    output_cap_bytes: int = _setting(
        256 * MiB, "stored output per run, bytes; later output is dropped", _parse_int, _at_least(0)
    )
    bus_capacity: int = _setting(
        1024, "batches buffered per live subscriber before it resyncs from the database", _parse_int,
        _at_least(1),
    )
    bus_max_events: int = _setting(
        10_000, "events buffered per live subscriber before it resyncs from the database (bounds memory)",
        _parse_int, _at_least(1),
    )
    bus_idle_ttl_s: float = _setting(
        600.0, "seconds a run's bus entry lives without subscribers", _parse_float, _at_least(0)
    )
    bus_tick_s: float = _setting(
        0.02, "live output of a run goes to its watchers at most once per this many seconds (0: per commit)",
        _parse_float, _at_least(0),
    )
    commit_interval_s: float = _setting(
        0.005, "shortest time between two group commits of run events, seconds (0: commit as soon as the "
        "writer is free)", _parse_float, _at_least(0), _at_most(1),
    )
    output_interval_s: float = _setting(
        0.02,
        "while a run keeps printing, its output is read and committed at most once per this many seconds; "
        "each line waits at most this long (0: read as it comes)",
        _parse_float,
        _at_least(0),
        _at_most(1),
    )
    bus_tick_max_s: float = _setting(
        0.04, "longest tick of a run with many watchers, seconds (at or below bus_tick_s: a fixed tick)",
        _parse_float, _at_least(0),
    )
    bus_frames_per_s: float = _setting(
        2_500.0, "frames per second a run's watchers get together before its tick grows towards "
        "bus_tick_max_s (a frame the bus writes straight into a run-event socket counts a quarter)",
        _parse_float, _at_least(1),
    )
    ws_ping_interval_s: float = _setting(
        20.0, "seconds between WebSocket pings", _parse_float, _at_least(0.01)
    )
    ws_ping_timeout_s: float = _setting(
        20.0, "seconds a WebSocket peer has to answer a ping", _parse_float, _at_least(0.01)
    )
    max_websockets_per_user: int = _setting(
        64, "open run-event and runs-feed WebSockets one user may hold together; more are closed with 1013",
        _parse_int, _at_least(1),
    )
    max_websockets: int = _setting(
        0, "open WebSockets in all (0: the open-file limit minus fd_reserve, which also bounds any other "
        "value); more are closed with 1013", _parse_int, _at_least(0),
    )
    fd_reserve: int = _setting(
        256, "file descriptors kept free of WebSockets for runs, the database and HTTP requests",
        _parse_int, _at_least(0),
    )
    login_queue: int = _setting(
        64, "logins waiting for a password check at once; more are answered 503 with Retry-After",
        _parse_int, _at_least(1),
    )
    logins_per_client: int = _setting(
        4, "logins one client address may have in progress at once; more are answered 429 with Retry-After",
        _parse_int, _at_least(1),
    )
    maintenance_interval_s: float = _setting(
        300.0, "seconds between removals of expired sessions, tokens and throttle rows", _parse_float,
        _at_least(0.01),
    )
    throttle_retention_s: float = _setting(
        86400.0, "seconds a login-throttle row is kept after its last failure", _parse_float,
        _at_least(0),
    )
    prune_interval_s: float = _setting(
        600.0, "seconds between retention passes", _parse_float, _at_least(0.01)
    )
    retention_days: float = _setting(
        30.0, "days finished runs are kept (0 keeps them forever)", _parse_float, _at_least(0)
    )
    prune_batch_events: int = _setting(
        10_000, "events deleted per retention transaction", _parse_int, _at_least(1)
    )
    agent_lease_s: float = _setting(
        60.0, "seconds an agent may stay silent before its runs end interrupted (agent lost)", _parse_float,
        _at_least(0.1),
    )
    local_labels: tuple[str, ...] = _setting(
        ("local",), "labels of the local executor, comma-separated", _parse_labels
    )
    local_executor: bool = _setting(True, "run runs on this machine too (false: agents only)", _parse_bool)
    database_url: str = _setting(
        "", "PostgreSQL database to use (postgresql://user:password@host:port/dbname, PostgreSQL 13 or newer); "
        "empty: SQLite in the data dir", _parse_str, _database_url,
    )
    db_readers: int = _setting(4, "reader connections to the database", _parse_int, _at_least(1))
    db_busy_timeout_s: float = _setting(
        5.0, "seconds a write waits for another process's lock on the database before it counts as a "
        "fault (and is retried)", _parse_float, _at_least(0), _at_most(3600),
    )
    db_read_timeout_s: float = _setting(
        30.0, "longest a database read may take before it is interrupted (503)", _parse_float,
        _at_least(0.01),
    )
    work_dir: Path = _setting(
        lambda: Path(tempfile.gettempdir()) / f"runsvc-work-{os.geteuid()}",
        "directory under which runs get their working directories (<system temp dir>/runsvc-work-<uid> "
        "by default); never inside the data dir", _parse_path,
    )
    secret_key_file: str = _setting(
        "", "file holding the 32-byte key that encrypts secrets and webhook signing secrets (made 0600 on the "
        "first start; back it up "
        "apart from the database; replicas share one) (default: <data-dir>/secret.key)", _parse_str,
    )
    run_as_user: str = _setting(
        "", "run every local run as this user and its groups (the server must run as root); "
        "empty: runs run as the server's user", _parse_str,
    )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "runsvc.db"

    @property
    def secret_key_path(self) -> Path:
        return Path(self.secret_key_file) if self.secret_key_file else self.data_dir / "secret.key"


SETTINGS_FIELDS: tuple[attrs.Attribute, ...] = attrs.fields(Settings)
_FIELDS_BY_NAME = {field.name: field for field in SETTINGS_FIELDS}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def default_value(name: str) -> Any:
    field = _FIELDS_BY_NAME[name]
    default: Any = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory()
    return default


def _convert(name: str, value: Any, source: str) -> Any:
    try:
        return _FIELDS_BY_NAME[name].metadata["parse"](value)
    except ValueError as exc:
        reason = str(exc) if "expected" in str(exc) else "not a valid value"
        raise SettingsError(f"invalid {name} from {source}: {value!r} ({reason})") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(table) - set(_FIELDS_BY_NAME))
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r} in config file {path}")
    return table


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the four sources; raise SettingsError with one clear line on any bad value.

    `flags` maps setting names to the raw strings given on the command line (absent = not given).
    """
    flags = flags or {}
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if config_file is not None:
        for name, raw in _read_toml(config_file).items():
            values[name] = _convert(name, raw, f"config file {config_file}")
    for name in _FIELDS_BY_NAME:
        if env_name(name) in environ:
            values[name] = _convert(name, environ[env_name(name)], env_name(name))
    for name, raw in flags.items():
        if raw is not None:
            values[name] = _convert(name, raw, flag_name(name))
    return Settings(**values)


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory if needed (mode 0700, and narrowed to it if it exists); refuse one
    runsvc cannot use."""
    path = settings.data_dir
    if path.exists() and not path.is_dir():
        raise SettingsError(f"data dir {path} is not a directory")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise SettingsError(f"cannot create data dir {path}: {exc.strerror}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise SettingsError(f"data dir {path} is not readable and writable by this user")


def server_id(settings: Settings) -> str:
    """A short name of this data dir, stable across restarts: tags the runs' processes and names this
    server's directory under the shared work dir."""
    return hashlib.sha256(os.fsencode(os.path.realpath(settings.data_dir))).hexdigest()[:16]


def server_work_dir(settings: Settings) -> Path:
    """Where this server's runs get their working directories: `<work_dir>/<server id>/<run id>`."""
    return settings.work_dir / server_id(settings)


def prepare_work_dir(settings: Settings) -> Path:
    """Create the work dir and this server's directory in it (each 0711: runs of `run_as_user` can pass
    through but not list them); refuse a work dir inside the data dir or owned by another user (who
    could swap run directories under us)."""
    return prepare_run_root(settings.work_dir, server_work_dir(settings), settings.data_dir,
                            private_name="data dir", owner_name="this server's user")


def prepare_run_root(root: Path, own: Path, private_dir: Path, *, private_name: str, owner_name: str) -> Path:
    """Create `root` and `own` (a directory in it) 0711 and return `own`; refuse a root inside
    `private_dir` (what runs must not reach: the server's data dir, an agent's state dir) or a directory
    owned by another user than this process's. Shared by the server and the agent (SPEC §14)."""
    root = root.absolute()
    data = private_dir.absolute()
    real_root, real_data = os.path.realpath(root), os.path.realpath(data)
    if real_root == real_data or real_root.startswith(real_data + os.sep):
        raise SettingsError(f"work dir {root} must not be inside the {private_name} {data}")
    for path in (root, own.absolute()):
        try:
            path.mkdir(mode=0o711, parents=path is root, exist_ok=True)
            info = os.lstat(path)
        except OSError as exc:
            raise SettingsError(f"cannot create work dir {path}: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise SettingsError(f"work dir {path} is not a directory")
        if info.st_uid != os.geteuid():
            raise SettingsError(f"work dir {path} is owned by uid {info.st_uid}, not by {owner_name}")
        try:
            os.chmod(path, 0o711)
        except OSError as exc:
            raise SettingsError(f"cannot set the mode of work dir {path}: {exc.strerror}") from None
    return own
