"""The database port (`Store`, `Connection`) and its backends: SQLite in `sqlite/`.

The query modules in `queries/` are backend-neutral (docs/store.md); the composition root picks
the backend (`SqliteStore`), everything else depends on the port.
"""

from fleetstate.store.connection import Connection, WriteJob
from fleetstate.store.port import Store

__all__ = ["Connection", "Store", "WriteJob"]
