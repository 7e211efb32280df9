-- Core state: tenancy, profiles, devices, artefacts, bindings, desired documents, reports.
-- Times are RFC 3339 UTC text; JSON documents are stored as their canonical UTF-8 text.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    is_operator  INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL
) STRICT;
CREATE INDEX api_tokens_org ON api_tokens(org_id, id);

CREATE TABLE profiles (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES organizations(id),
    kind              TEXT NOT NULL CHECK (kind IN ('device', 'sensor')),
    name              TEXT NOT NULL,
    config_schema     TEXT NOT NULL,
    command_delivery  TEXT NOT NULL DEFAULT 'burst' CHECK (command_delivery IN ('burst', 'sequential')),
    created_at        TEXT NOT NULL,
    UNIQUE (org_id, kind, name)
) STRICT;

CREATE TABLE devices (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES organizations(id),
    profile_id        TEXT NOT NULL REFERENCES profiles(id),
    name              TEXT NOT NULL,
    serial            TEXT,
    key_hash          TEXT NOT NULL,
    online            INTEGER NOT NULL DEFAULT 0,
    last_seen         TEXT,
    firmware_version  TEXT,
    created_at        TEXT NOT NULL,
    UNIQUE (profile_id, serial)
) STRICT;
CREATE INDEX devices_org ON devices(org_id, id);
CREATE INDEX devices_profile ON devices(profile_id);

CREATE TABLE components (
    device_id          TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    sensor_profile_id  TEXT NOT NULL REFERENCES profiles(id),
    PRIMARY KEY (device_id, name)
) STRICT;
CREATE INDEX components_sensor_profile ON components(sensor_profile_id);

CREATE TABLE device_groups (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (org_id, name)
) STRICT;

CREATE TABLE group_members (
    group_id   TEXT NOT NULL REFERENCES device_groups(id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, device_id)
) STRICT;
CREATE INDEX group_members_device ON group_members(device_id);

CREATE TABLE config_artefacts (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id),
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    profile_id    TEXT NOT NULL REFERENCES profiles(id),
    content       BLOB,
    blob_key      TEXT,
    size          INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (org_id, name, version)
) STRICT;

-- slot_key is 'device' for a device-profile artefact, 'sensor:<profile id>' for a sensor one.
CREATE TABLE bindings (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id),
    target_type  TEXT NOT NULL CHECK (target_type IN
                   ('device', 'component', 'device_group', 'device_profile', 'sensor_profile')),
    target_id    TEXT NOT NULL,
    slot_key     TEXT NOT NULL,
    artefact_id  TEXT NOT NULL REFERENCES config_artefacts(id),
    priority     INTEGER NOT NULL DEFAULT 0,
    seq          INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (org_id, target_type, target_id, slot_key)
) STRICT;
CREATE INDEX bindings_artefact ON bindings(artefact_id);

-- The current desired-state document of each device, exactly as delivered.
CREATE TABLE desired_documents (
    device_id    TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    issued_at    TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    document     BLOB NOT NULL
) STRICT;

CREATE TABLE device_reports (
    device_id    TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    message      TEXT,
    reported_at  TEXT NOT NULL
) STRICT;

CREATE TABLE slot_reports (
    device_id    TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    slot         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    artefact_id  TEXT,
    status       TEXT NOT NULL,
    hash         TEXT,
    message      TEXT,
    reported_at  TEXT NOT NULL,
    PRIMARY KEY (device_id, slot)
) STRICT;

CREATE TABLE report_history (
    id           INTEGER PRIMARY KEY,
    device_id    TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    current      INTEGER NOT NULL,
    received_at  TEXT NOT NULL,
    payload      TEXT NOT NULL
) STRICT;
CREATE INDEX report_history_device ON report_history(device_id, id);

-- Which binding won each slot of each device's current desired document (for explain, binding
-- status and hash checks of reports without decoding documents).
CREATE TABLE desired_slots (
    device_id    TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    slot         TEXT NOT NULL,
    binding_id   TEXT NOT NULL,
    artefact_id  TEXT NOT NULL,
    hash         TEXT NOT NULL,
    PRIMARY KEY (device_id, slot)
) STRICT;
CREATE INDEX desired_slots_binding ON desired_slots(binding_id);
