-- The two users of FastAPI's tutorial, with argon2id hashes (m=19456 KiB, t=2, p=1) of
-- "secret" and "secret2", and the scopes each may be granted. Change or delete them
-- before exposing the service.

insert into users (username, email, full_name, disabled, hashed_password, scopes) values
    ('johndoe', 'johndoe@example.com', 'John Doe', false,
     '$argon2id$v=19$m=19456,t=2,p=1$0BriDfkoweMZisJX2uBYZQ$eLHvfibJ2+A4BbZhPMKqRY6CUoeN6zva3ayLHkC/g0Y',
     'me items'),
    ('alice', 'alice@example.com', 'Alice Wonderson', true,
     '$argon2id$v=19$m=19456,t=2,p=1$zD8X8P+SYE44WBhx5h31KQ$1GCdr4HdYuDc3Dbl3a9GHh99O1K+J4WreGm6PQf1dL8',
     'me');
