-- A session's rotation on refresh as one call (store/rotation.rs): the statements the
-- service sent one by one in a transaction, eight round trips, run here in one. Each
-- statement still takes its own snapshot (READ COMMITTED), so after the session's row
-- lock is taken, the tokens a concurrent refresh of the same session issued are seen
-- and retired, as before.
--
-- Returns 'issued', 'already_spent' (p_spend was spent by someone else first) or
-- 'session_ended' (the session was revoked). A retry passes p_spend null: it spends
-- nothing and retires whatever refresh token of the session is live.
create function rotate_refresh_token(
    p_session_id bigint,
    p_user_id bigint,
    p_spend bytea,
    p_now bigint,
    p_access_hash bytea,
    p_access_scopes text,
    p_access_expires_at bigint,
    p_refresh_hash bytea,
    p_rows_kept bigint,
    p_use_precision bigint
) returns text
language plpgsql
as $$
declare
    changed bigint;
begin
    -- The session's row lock first: concurrent refreshes of one session take turns.
    perform 1 from sessions where id = p_session_id and revoked_at is null for update;
    if not found then
        return 'session_ended';
    end if;
    -- Two statements, not one with "p_spend is null or": each finds its rows by its
    -- own index (the token's key; the session's), where the one statement's generic plan
    -- scanned every row the session kept.
    if p_spend is null then
        update refresh_tokens set spent_at = p_now
         where session_id = p_session_id and spent_at is null;
    else
        update refresh_tokens set spent_at = p_now
         where token_hash = p_spend and session_id = p_session_id and spent_at is null;
        get diagnostics changed = row_count;
        if changed = 0 then
            return 'already_spent';
        end if;
    end if;
    -- When the session was last used, to the second: a session refreshed many times a
    -- second would otherwise leave a dead row version (and index entries) each time.
    update sessions set refreshed_at = p_now
     where id = p_session_id and refreshed_at <= p_now - p_use_precision;
    insert into access_tokens (token_hash, user_id, session_id, scopes, issued_at, expires_at)
    values (p_access_hash, p_user_id, p_session_id, p_access_scopes, p_now, p_access_expires_at);
    insert into refresh_tokens (token_hash, session_id, issued_at)
    values (p_refresh_hash, p_session_id, p_now);
    delete from refresh_tokens
     where session_id = p_session_id and spent_at is not null
       and issued_at <= (select issued_at from refresh_tokens
                          where session_id = p_session_id
                          order by issued_at desc
                          limit 1 offset p_rows_kept);
    return 'issued';
end;
$$;
