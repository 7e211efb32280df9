"""The SQLite backend: its statements live in `queries/`, one module per aggregate."""
