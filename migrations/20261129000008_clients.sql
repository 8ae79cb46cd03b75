-- Registered clients: services that may introspect tokens (RFC 7662). The secret is 32
-- random bytes, so its SHA-256 digest is stored, never the secret.

create table clients (
    client_id   text    primary key,
    secret_hash blob    not null check (length(secret_hash) = 32),
    -- Unix time in milliseconds.
    created_at  integer not null
) strict, without rowid;
