-- Second factor: one TOTP secret (RFC 6238) per user. The secret must be read to compute
-- codes, so it is stored as it is (base32), unlike passwords and tokens: see
-- docs/security.md. `confirmed_at` is null while the user has not yet proved, with a
-- code, that their authenticator holds it (pending: not required at login).
-- `last_step` is the latest 30-second step whose code was used: a code of that step or
-- an earlier one is refused, on every replica, by one conditional update.
create table totp_factors (
    user_id      integer primary key references users (id) on delete cascade,
    secret       text    not null,
    -- Unix time in milliseconds.
    created_at   integer not null,
    confirmed_at integer,
    last_step    integer
) strict;

-- How a session's login authenticated the user (RFC 8176 method names, space-separated):
-- 'pwd', or 'pwd otp' with a one-time code. Sessions from before this migration: null,
-- which reads as 'pwd'.
alter table sessions add column amr text;
