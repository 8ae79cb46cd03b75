-- Registered clients are cached by every replica like tokens (introspection reads a
-- client's secret digest on every call): adding, changing or deleting one notifies the
-- replicas, which forget what they cached, whoever made the change (the CLI included).
create trigger clients_changed
    after insert or update or delete on clients
    for each row execute function notify_token_change();
