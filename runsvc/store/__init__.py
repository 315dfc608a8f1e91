"""SQLite storage: connections, migrations, and one module per table family."""

from .core import Store, StoreStatistics, open_store
from .errors import SchemaError, StoreClosedError, StoreError
from .migrations import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "SchemaError",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreStatistics",
    "open_store",
]
