-- Failed-login counts, per username ('user:NAME') and per client address ('addr:IP', an
-- IPv6 client as its /64), in a fixed window. In the database rather than in memory, so
-- that a restart, a flood of made-up names or a second process cannot lift a limit.

create table login_failures (
    key            text    primary key,
    failures       integer not null,
    -- Unix time in milliseconds.
    window_started integer not null
) strict, without rowid;

create index login_failures_by_window on login_failures (window_started);
