-- Trusted devices (see the SQLite migration of the same name).
create table devices (
    token_hash   bytea  primary key check (length(token_hash) = 32),
    id           bigint not null unique,
    user_id      bigint not null references users (id) on delete cascade,
    created_at   bigint not null,
    last_used_at bigint not null,
    expires_at   bigint not null
);

create index devices_by_user on devices (user_id, last_used_at);
create index devices_by_expiry on devices (expires_at);
