-- Users and their access tokens.
-- Tokens are stored only as SHA-256 digests: a copy of this file yields no usable token.

create table users (
    id              integer primary key,
    username        text    not null unique,
    email           text,
    full_name       text,
    disabled        integer not null default 0 check (disabled in (0, 1)),
    -- An argon2id PHC string; never a plain password.
    hashed_password text    not null check (hashed_password like '$argon2%')
) strict;

create table access_tokens (
    token_hash blob    primary key check (length(token_hash) = 32),
    user_id    integer not null references users (id) on delete cascade,
    -- Space-separated scope names granted to this token.
    scopes     text    not null default '',
    -- Unix time in milliseconds.
    issued_at  integer not null,
    expires_at integer not null,
    revoked_at integer
) strict, without rowid;

create index access_tokens_by_expiry on access_tokens (expires_at);
create index access_tokens_by_user on access_tokens (user_id);
