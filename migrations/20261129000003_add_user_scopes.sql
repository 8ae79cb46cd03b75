-- The OAuth2 scopes each user may be granted (space-separated names), as in the
-- tutorial's scopes chapter.

alter table users add column scopes text not null default '';

update users set scopes = 'me items' where username = 'johndoe';
update users set scopes = 'me' where username = 'alice';
