-- The whole schema on PostgreSQL, the same as SQLite's migrations build step by step.
-- Tokens are stored only as SHA-256 digests: a copy of the database yields no usable token.
-- Times are Unix milliseconds.

create table users (
    id              bigint  generated always as identity primary key,
    username        text    not null unique,
    email           text,
    full_name       text,
    disabled        boolean not null default false,
    -- An argon2id PHC string; never a plain password.
    hashed_password text    not null check (hashed_password like '$argon2%'),
    -- The OAuth2 scopes this user may be granted, space-separated.
    scopes          text    not null default ''
);

-- Sessions (RFC 9700's token families): every token issued from one password login.
create table sessions (
    -- Chosen at random by the service.
    id           bigint primary key,
    user_id      bigint not null references users (id) on delete cascade,
    scopes       text   not null default '',
    client_id    text,
    started_at   bigint not null,
    refreshed_at bigint not null,
    expires_at   bigint not null,
    revoked_at   bigint
);

create index sessions_by_user on sessions (user_id);
create index sessions_by_expiry on sessions (expires_at);

create table access_tokens (
    token_hash bytea  primary key check (length(token_hash) = 32),
    user_id    bigint not null references users (id) on delete cascade,
    session_id bigint references sessions (id) on delete cascade,
    scopes     text   not null default '',
    issued_at  bigint not null,
    expires_at bigint not null,
    revoked_at bigint
);

create index access_tokens_by_expiry on access_tokens (expires_at);
create index access_tokens_by_user on access_tokens (user_id);
create index access_tokens_by_session on access_tokens (session_id);

create table refresh_tokens (
    token_hash bytea  primary key check (length(token_hash) = 32),
    session_id bigint not null references sessions (id) on delete cascade,
    issued_at  bigint not null,
    spent_at   bigint
);

create index refresh_tokens_by_session on refresh_tokens (session_id);

-- Failed-login counts per 'user:NAME' and 'addr:IP' key, shared by every replica.
create table login_failures (
    key            text   primary key,
    failures       bigint not null,
    window_started bigint not null
);

create index login_failures_by_window on login_failures (window_started);

-- Every change a cached token answer depends on (a revocation, a user disabled, their
-- scopes or password changed, a user deleted) notifies the replicas, which forget what
-- they cached. NOTIFY is delivered when, and only if, the transaction commits.
create function notify_token_change() returns trigger language plpgsql as $$
begin
    perform pg_notify('simple_oauth2_changes', '');
    return null;
end
$$;

create trigger users_changed
    after update of disabled, scopes, hashed_password or delete on users
    for each statement execute function notify_token_change();

create trigger access_tokens_revoked
    after update of revoked_at on access_tokens
    for each statement execute function notify_token_change();
