"""Every SQL statement of fleetstate, one module per aggregate; nothing outside `store/` holds SQL.

Each function takes a `Connection` (a write job's or a read's) and returns plain values or
msgspec Structs: a `sqlite3.Row` never leaves a query module. Domain modules keep their rules and
call these functions by name.

The statements are written once, as module-level constants or built from a Struct's fields, in
portable SQL with `?` placeholders, so a PostgreSQL backend can reuse them through a small dialect
layer instead of a second copy of each statement. What such a layer would rewrite:

- placeholders: `?` becomes `$1, $2, ...` (asyncpg) or `%s` (psycopg), numbered in order;
- `INSERT OR IGNORE` becomes `INSERT ... ON CONFLICT DO NOTHING`, and `INSERT OR REPLACE`
  becomes `ON CONFLICT (<key>) DO UPDATE SET ...` (the key is named beside the statement);
- JSON text columns (`json_extract(x, '$.a')`) become `x->>'a'` on `jsonb`;
- IN lists built with `sql.marks(n)` become one `= ANY(?)` with an array parameter, so the
  chunking in `sql.chunks` (SQLite's variable limit) is not needed there;
- `STRICT` tables and `rowid` are SQLite's own and stay in the migrations.
"""
