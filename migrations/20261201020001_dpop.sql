-- DPoP (RFC 9449): a session started with a DPoP proof is bound to that proof's key, by its
-- RFC 7638 SHA-256 thumbprint (base64url). Every access and refresh token of the session
-- is then good only with a proof of that key. Null: an unbound (bearer) session.
alter table sessions add column dpop_jkt text;
