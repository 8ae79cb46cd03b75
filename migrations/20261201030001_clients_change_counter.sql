-- Registered clients are cached by the running service like tokens (introspection reads
-- a client's secret digest on every call): adding, changing or deleting one moves the
-- change counter, so every cached answer about clients is forgotten at once, whoever
-- made the change (the CLI included).

create trigger clients_added after insert on clients
begin
    update change_counter set value = value + 1 where id = 1;
end;

create trigger clients_changed after update on clients
when old.secret_hash is not new.secret_hash or old.client_id is not new.client_id
begin
    update change_counter set value = value + 1 where id = 1;
end;

create trigger clients_deleted after delete on clients
begin
    update change_counter set value = value + 1 where id = 1;
end;
