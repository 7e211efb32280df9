-- What Xyte's own device agent needs from the device HTTP API: dumps, license signatures, the
-- device's audit trail, and presence for devices that only talk HTTP.

-- Dumps a device uploads (POST /v1/devices/{id}/dumps/{content_type}/{file_name}, appended to by
-- PUT /v1/devices/{id}/dumps/{dump_id}). The bytes are in the blob store under `blob_key`;
-- `size` is what the blob holds after the last committed append.
CREATE TABLE dumps (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    file_name     TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL,
    parts         INTEGER NOT NULL DEFAULT 1,
    blob_key      TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;
CREATE INDEX dumps_device ON dumps(device_id, id);

-- Xyte's licenses carry an optional signature of `data`, set by the operator.
ALTER TABLE licenses ADD COLUMN signature TEXT;

-- What happened to a device's identity (re-registration, key rotation), for its audit trail.
CREATE TABLE device_history (
    id           INTEGER PRIMARY KEY,
    device_id    TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    action       TEXT NOT NULL,
    detail       TEXT NOT NULL,
    recorded_at  TEXT NOT NULL
) STRICT;
CREATE INDEX device_history_device ON device_history(device_id, id);

-- Presence has two sources: an MQTT session, and HTTP calls within the presence window.
-- `online` stays the one column everything reads; it is `mqtt_online OR http_online`.
ALTER TABLE devices ADD COLUMN mqtt_online INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN http_online INTEGER NOT NULL DEFAULT 0;

-- `used` now counts the devices registered with a key (a re-registration takes no slot, and
-- deleting a device gives its slot back): recount what exists.
UPDATE hardware_keys SET used =
    (SELECT count(*) FROM device_details dd WHERE dd.hardware_key_id = hardware_keys.id);

-- Xyte's optional device facts: a sub-model (registration, Update Device) and the device's
-- IP or host name (Update Device).
ALTER TABLE device_details ADD COLUMN sub_model TEXT;
ALTER TABLE device_details ADD COLUMN host_address TEXT;

-- A `DUMP` command (Xyte's `dump`: the device uploads a state report). SQLite cannot alter a
-- CHECK constraint, and rebuilding `commands` would cascade-delete its history, so the stored
-- CREATE TABLE text gains the value in place (SQLite's documented writable_schema procedure;
-- a looser CHECK holds for every existing row). The runner then bumps schema_version so every
-- connection re-reads the schema.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
    SET sql = replace(sql, '''BIND_CONFIG'', ''UNBIND_CONFIG'')',
                           '''BIND_CONFIG'', ''UNBIND_CONFIG'', ''DUMP'')')
    WHERE type = 'table' AND name = 'commands';
PRAGMA writable_schema = OFF;
