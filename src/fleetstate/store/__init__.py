"""The database: SQLite in WAL mode, one writer path with group commit, readers apart."""

from fleetstate.store.database import Connection, Store, WriteJob

__all__ = ["Connection", "Store", "WriteJob"]
