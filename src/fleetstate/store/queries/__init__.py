"""Every SQL statement of fleetstate, one module per aggregate; nothing outside `store/` holds SQL.

Each function takes a `Connection` (a write job's or a read's) and returns plain values or
msgspec Structs: a `sqlite3.Row` never leaves a query module. Domain modules keep their rules and
call these functions by name.

The statements are written once, as module-level constants or built from a Struct's fields, in
the canonical spelling of `store/dialect.py`: `?` placeholders, and every form that differs
between backends (insert-or-ignore, JSON field access, NULL-safe comparison, scalar greatest,
IN lists) built by the `sql` helper of that name. A PostgreSQL backend reuses them through its
`Dialect.prepare`, not a second copy; docs/store.md lists every differing form.
"""
