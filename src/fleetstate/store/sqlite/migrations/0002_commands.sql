-- Commands: one-off instructions to one device with a tracked acknowledgement lifecycle, the
-- batches that sent one command to every member of a group, and every ack ever received.

CREATE TABLE command_batches (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    group_id    TEXT NOT NULL,  -- no foreign key: the batch outlives a deleted group
    type        TEXT NOT NULL,
    params      TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

-- seq is the creation order ("oldest first" for delivery, "newest first" for lists); ids of one
-- millisecond do not sort by creation. tracks_version is set on BIND_CONFIG/UNBIND_CONFIG
-- commands: the desired-state version whose convergence they track (NULL only for an operator's
-- command inside the transaction that creates it). Each transition has its own timestamp.
CREATE TABLE commands (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    org_id           TEXT NOT NULL REFERENCES organizations(id),
    device_id        TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    batch_id         TEXT REFERENCES command_batches(id) ON DELETE SET NULL,
    origin           TEXT NOT NULL CHECK (origin IN ('operator', 'desired_state')),
    type             TEXT NOT NULL CHECK (type IN
                       ('REBOOT', 'UPDATE_CONFIG', 'UPDATE_FIRMWARE', 'BIND_CONFIG', 'UNBIND_CONFIG')),
    params           TEXT NOT NULL,
    tracks_version   INTEGER,
    status           TEXT NOT NULL CHECK (status IN
                       ('PENDING', 'SENT', 'ACKNOWLEDGED', 'SUCCESS', 'FAILED', 'TIMEOUT', 'CANCELLED')),
    message          TEXT,
    timeout_s        INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    timeout_at       TEXT NOT NULL,
    sent_at          TEXT,
    acknowledged_at  TEXT,
    finished_at      TEXT
) STRICT;
CREATE INDEX commands_device ON commands(device_id, seq);
CREATE INDEX commands_batch ON commands(batch_id, seq) WHERE batch_id IS NOT NULL;
-- The deadline scheduler's view: open commands by deadline.
CREATE INDEX commands_deadline ON commands(timeout_at)
    WHERE status IN ('PENDING', 'SENT', 'ACKNOWLEDGED');
CREATE INDEX commands_tracking ON commands(device_id, tracks_version)
    WHERE type IN ('BIND_CONFIG', 'UNBIND_CONFIG');

-- Every ack a device sent (over MQTT or HTTP) and every report that moved a tracking command,
-- including duplicates and late ones, which never change a finished command.
CREATE TABLE command_history (
    id           INTEGER PRIMARY KEY,
    command_id   TEXT NOT NULL REFERENCES commands(id) ON DELETE CASCADE,
    source       TEXT NOT NULL CHECK (source IN ('device', 'report')),
    status       TEXT NOT NULL,
    message      TEXT,
    effect       TEXT NOT NULL CHECK (effect IN ('applied', 'duplicate', 'late')),
    received_at  TEXT NOT NULL
) STRICT;
CREATE INDEX command_history_command ON command_history(command_id, id);
