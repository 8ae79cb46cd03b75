-- When a user's password was last set (Unix ms; 0: never changed since this migration).
-- A login that read the user before a password change starts no session and trusts no
-- device after it: the change ends every session and forgets every device, and a login
-- still in flight must not bring one back.
alter table users add column password_changed_at integer not null default 0;
