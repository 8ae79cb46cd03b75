-- One row that GET /health rewrites, so that a full disk or a read-only database shows
-- as 503 there, not only on the next login.

create table health_probe (
    id         integer primary key check (id = 1),
    checked_at integer not null
) strict;
