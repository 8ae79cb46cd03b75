-- Sessions (RFC 9700's token families): every token issued from one password login, by
-- it or by later refreshes. Refresh tokens, like access tokens, are stored only as
-- SHA-256 digests; a spent one is kept, so that presenting it again can be detected.

create table sessions (
    -- Chosen at random by the service.
    id           integer primary key,
    user_id      integer not null references users (id) on delete cascade,
    -- Space-separated scope names granted at login.
    scopes       text    not null default '',
    -- The client_id the login named, if any.
    client_id    text,
    -- Unix time in milliseconds.
    started_at   integer not null,
    refreshed_at integer not null,
    -- The session's absolute end, however often it is refreshed.
    expires_at   integer not null,
    revoked_at   integer
) strict;

create index sessions_by_user on sessions (user_id);
create index sessions_by_expiry on sessions (expires_at);

create table refresh_tokens (
    token_hash blob    primary key check (length(token_hash) = 32),
    session_id integer not null references sessions (id) on delete cascade,
    issued_at  integer not null,
    spent_at   integer
) strict, without rowid;

create index refresh_tokens_by_session on refresh_tokens (session_id);

-- Access tokens issued before this migration belong to no session.
alter table access_tokens add column session_id integer references sessions (id) on delete cascade;

create index access_tokens_by_session on access_tokens (session_id);
