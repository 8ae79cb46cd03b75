-- Trusted devices (OWASP "device cookies"): a client that logged in as a user keeps a
-- random cookie, stored here only as its SHA-256 digest, that spares it the per-username
-- lockout. Times are Unix milliseconds.
create table devices (
    token_hash   blob    primary key check (length(token_hash) = 32),
    -- Chosen at random by the service; the key its failed logins are counted under.
    id           integer not null unique,
    user_id      integer not null references users (id) on delete cascade,
    created_at   integer not null,
    last_used_at integer not null,
    expires_at   integer not null
) strict, without rowid;

create index devices_by_user on devices (user_id, last_used_at);
create index devices_by_expiry on devices (expires_at);
