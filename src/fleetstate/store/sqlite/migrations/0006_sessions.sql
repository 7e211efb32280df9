-- Web app sessions (SPEC section 6): the browser's cookie holds a random 256-bit session secret;
-- only its SHA-256 is kept here, so a copy of the database signs nobody in. A session ends at
-- `expires_at`, at sign-out (its row is deleted), and with its API token (ON DELETE CASCADE).

CREATE TABLE web_sessions (
    id          TEXT PRIMARY KEY,  -- hex SHA-256 of the cookie's secret
    token_id    TEXT NOT NULL REFERENCES api_tokens(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
) STRICT;
CREATE INDEX web_sessions_token ON web_sessions(token_id);
CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
