-- The device HTTP API (SPEC section 4): provisioning, telemetry, files, licenses and info.
-- Profile references cascade: profiles.delete refuses while devices use a profile, and a profile's
-- hardware keys and files are useless without it.

-- Provisioning keys. The secret is shown once (`fhk_<id>_<secret>`) and stored as a scrypt hash;
-- `used` counts registrations made with the key (deleting a device does not give its slot back).
CREATE TABLE hardware_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    profile_id    TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    device_limit  INTEGER CHECK (device_limit IS NULL OR device_limit > 0),
    used          INTEGER NOT NULL DEFAULT 0,
    revoked_at    TEXT,
    created_at    TEXT NOT NULL
) STRICT;
CREATE INDEX hardware_keys_org ON hardware_keys(org_id, id);

-- What a device told about itself at registration or later (PUT /v1/devices/{id}).
CREATE TABLE device_details (
    device_id        TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    hardware_key_id  TEXT REFERENCES hardware_keys(id) ON DELETE SET NULL,
    mac              TEXT,
    cloud_id         TEXT,
    details          TEXT,
    registered_at    TEXT,
    updated_at       TEXT NOT NULL
) STRICT;

-- The merged telemetry state of each device (JSON object text), updated in the same write job
-- that appends the message to the history.
CREATE TABLE telemetry_state (
    device_id   TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    state       TEXT NOT NULL,
    message     TEXT,
    updated_at  TEXT NOT NULL
) STRICT;

-- One row per key of every accepted telemetry message; `value` is its JSON text (so booleans stay
-- booleans), 'null' when the message removed the key. Pruned after telemetry_retention_days.
CREATE TABLE telemetry_history (
    id         INTEGER PRIMARY KEY,
    device_id  TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    ts         TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL
) STRICT;
CREATE INDEX telemetry_history_device_ts ON telemetry_history(device_id, ts, id);
CREATE INDEX telemetry_history_ts ON telemetry_history(ts);

-- Firmware and other files per profile. `sha256` is the plain hex digest of the bytes; the bytes
-- are in `content` until the blob store takes them (`blob_key`).
CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    profile_id  TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    file_type   TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    blob_key    TEXT,
    content     BLOB,
    created_at  TEXT NOT NULL,
    UNIQUE (profile_id, file_type, name, version)
) STRICT;
CREATE INDEX files_org ON files(org_id, id);

-- Licenses handed to a device. `state` is NULL while the device has not answered the latest
-- action (that is what `new_licenses` reports), then what it answered.
CREATE TABLE licenses (
    id           TEXT PRIMARY KEY,
    device_id    TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    data         TEXT NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('add', 'remove', 'update')),
    expires_at   TEXT,
    state        TEXT CHECK (state IN ('inuse', 'removed', 'error')),
    error        TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
) STRICT;
CREATE INDEX licenses_device ON licenses(device_id, id);

-- The operator-set info document of a device; `version` counts its changes.
CREATE TABLE device_info (
    device_id   TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    info        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
