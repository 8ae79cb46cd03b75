-- Second security review.
-- Attempts still being checked are counted apart from recorded failures, so that correct
-- logins in flight never make a limit look used up: `pending` is how many are in flight,
-- `pending_at` when the latest of them started (a replica that died mid-check leaves
-- stale ones, which are ignored after a while).
alter table login_failures add column pending integer not null default 0;
alter table login_failures add column pending_at integer not null default 0;

-- Housekeeping deletes revoked access tokens in small batches: find them by index.
create index access_tokens_revoked on access_tokens (revoked_at) where revoked_at is not null;

-- The cap on sessions per user picks the least recently used ones.
create index sessions_by_user_and_use on sessions (user_id, refreshed_at);

-- The cap on refresh-token rows per session deletes the oldest first.
create index refresh_tokens_by_session_and_age on refresh_tokens (session_id, issued_at);
