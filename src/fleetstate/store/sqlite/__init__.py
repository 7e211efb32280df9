"""The SQLite backend: its connections and threads, the `SqliteStore`, and its migrations."""

from fleetstate.store.sqlite.database import SqliteStore

__all__ = ["SqliteStore"]
