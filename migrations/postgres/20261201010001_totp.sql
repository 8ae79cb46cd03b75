-- Second factor: one TOTP secret (RFC 6238) per user, as in SQLite's migration of the
-- same name. The secret is stored readable (base32): codes are computed from it.
-- `confirmed_at` null: pending. `last_step`: the latest 30-second step whose code was
-- used; older and equal steps are refused on every replica.
create table totp_factors (
    user_id      bigint primary key references users (id) on delete cascade,
    secret       text   not null,
    created_at   bigint not null,
    confirmed_at bigint,
    last_step    bigint
);

-- How a session's login authenticated the user (RFC 8176): 'pwd' or 'pwd otp'; null for
-- sessions from before this migration, read as 'pwd'.
alter table sessions add column amr text;
