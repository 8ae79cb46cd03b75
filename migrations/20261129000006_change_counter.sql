-- A counter that every change a cached token answer depends on moves, whoever makes it
-- (the service, the CLI): revoking a token, disabling a user, changing their scopes or
-- password, deleting them. A running service rereads it when the database files change
-- and forgets what it had cached when it moved.

create table change_counter (
    id    integer primary key check (id = 1),
    value integer not null
) strict;

insert into change_counter (id, value) values (1, 0);

create trigger users_changed after update on users
when old.disabled is not new.disabled
  or old.scopes is not new.scopes
  or old.hashed_password is not new.hashed_password
begin
    update change_counter set value = value + 1 where id = 1;
end;

create trigger users_deleted after delete on users
begin
    update change_counter set value = value + 1 where id = 1;
end;

create trigger access_tokens_revoked after update of revoked_at on access_tokens
when old.revoked_at is null and new.revoked_at is not null
begin
    update change_counter set value = value + 1 where id = 1;
end;
