"""Errors raised by the store."""


class StoreError(Exception):
    """Base class of the store's own errors."""


class StoreClosedError(StoreError):
    """The store was used after aclose()."""


class SchemaError(StoreError):
    """The database file cannot be used by this version of runsvc."""
