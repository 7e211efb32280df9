-- Pending uploads of large config artefacts (SPEC section 5, `upload-url`): one row per URL handed
-- out, deleted when the upload is finalized into a config artefact or, once `expires_at` has
-- passed, by the cleanup loop together with its blobs.
-- `artefact_id` is chosen up front: finalize moves the bytes to `artefacts/<artefact_id>` before it
-- creates the artefact, so a crash between the two leaves a key the cleanup can still find.
-- profile_id has no foreign key on purpose: deleting a profile must not fail because of a pending
-- upload; such an upload can no longer be finalized and expires like any other.

CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    artefact_id   TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    profile_id    TEXT NOT NULL,
    size          INTEGER NOT NULL CHECK (size > 0),
    sha256        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
) STRICT;
CREATE INDEX uploads_expires ON uploads(expires_at);
