-- Second security review (see the SQLite migration of the same name).
alter table login_failures add column pending bigint not null default 0;
alter table login_failures add column pending_at bigint not null default 0;

create index access_tokens_revoked on access_tokens (revoked_at) where revoked_at is not null;
create index sessions_by_user_and_use on sessions (user_id, refreshed_at);
create index refresh_tokens_by_session_and_age on refresh_tokens (session_id, issued_at);

-- A statement that changes nothing (revoking an unknown token, disabling a disabled user)
-- must not make every replica forget its cached tokens: notify per changed row, and only
-- when what a cached answer depends on really changed. Identical notifications within one
-- transaction are delivered once.
drop trigger users_changed on users;
drop trigger access_tokens_revoked on access_tokens;

create trigger users_changed
    after update on users
    for each row
    when (old.disabled is distinct from new.disabled
          or old.scopes is distinct from new.scopes
          or old.hashed_password is distinct from new.hashed_password)
    execute function notify_token_change();

create trigger users_deleted
    after delete on users
    for each row execute function notify_token_change();

create trigger access_tokens_revoked
    after update of revoked_at on access_tokens
    for each row
    when (old.revoked_at is null and new.revoked_at is not null)
    execute function notify_token_change();
