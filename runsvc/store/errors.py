"""Errors raised by the store."""


class StoreError(Exception):
    """Base class of the store's own errors."""


class StoreClosedError(StoreError):
    """The store was used after aclose()."""


class SchemaError(StoreError):
    """The database file cannot be used by this version of runsvc."""


class DatabaseSettingError(StoreError):
    """The database setting cannot work: a malformed URL, a wrong password, no such database, a server too
    old. Fixing the setting is the only cure (`serve` exits with status 2)."""


class DatabaseInUse(StoreError):
    """Another runsvc server holds the database (one server per PostgreSQL database until replicas)."""


class DatabaseUnreachable(StoreError):
    """The database server did not answer; it may later (`serve` exits with status 1)."""
