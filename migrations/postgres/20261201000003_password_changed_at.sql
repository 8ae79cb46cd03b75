-- When a user's password was last set (see the SQLite migration of the same name).
alter table users add column password_changed_at bigint not null default 0;
