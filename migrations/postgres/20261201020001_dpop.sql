-- DPoP (RFC 9449): see the SQLite migration of the same name.
alter table sessions add column dpop_jkt text;
