-- refresh_tokens_by_session_and_age (session_id, issued_at) answers every lookup by
-- session that refresh_tokens_by_session (session_id) did, the cascade from sessions
-- included: the narrower index only cost a page write on every rotation.
drop index if exists refresh_tokens_by_session;
