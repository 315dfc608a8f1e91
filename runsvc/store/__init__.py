"""Storage on SQLite or PostgreSQL: connections, migrations, and one module per table family."""

from .core import Store, StoreStatistics, open_store
from .errors import DatabaseInUse, DatabaseSettingError, DatabaseUnreachable, SchemaError, StoreClosedError, StoreError
from .faults import ReadTimedOut, StoreUnavailable, is_transient
from .migrations import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseInUse",
    "DatabaseSettingError",
    "DatabaseUnreachable",
    "ReadTimedOut",
    "SchemaError",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreStatistics",
    "StoreUnavailable",
    "is_transient",
    "open_store",
]
