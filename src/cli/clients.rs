//! `clients ...`: registering the clients that may introspect tokens.

use std::time::SystemTime;

use clap::Subcommand;

use super::{
    CliError, audit, explain_write_error,
    table::{format_time, print_columns},
};
use crate::{
    auth::clients::{check_client_id, generate_secret},
    config::DatabaseSettings,
    store::{Store, unix_millis},
};

#[derive(Subcommand, Debug)]
pub(super) enum ClientsCommand {
    /// Register a client; its secret is printed once, on standard output
    Add { client_id: String },
    /// List the registered clients (never a secret)
    List,
    /// Remove a client: its secret stops working at once
    Delete { client_id: String },
}

pub(super) async fn run(
    database: &DatabaseSettings,
    command: ClientsCommand,
) -> Result<(), CliError> {
    if let ClientsCommand::Add { client_id } = &command {
        check_client_id(client_id).map_err(CliError::InvalidClientId)?;
    }
    let store = Store::connect(&database.database_url).await?;
    let result = change_clients(&store, command)
        .await
        .map_err(|err| explain_write_error(&store, err));
    store.close().await;
    result
}

async fn change_clients(store: &Store, command: ClientsCommand) -> Result<(), CliError> {
    match command {
        ClientsCommand::Add { client_id } => {
            let secret = generate_secret();
            let now = unix_millis(SystemTime::now());
            if !store
                .insert_client(&client_id, secret.digest.as_bytes(), now)
                .await?
            {
                return Err(CliError::ClientExists(client_id));
            }
            // The only time the secret is shown: it is not stored.
            println!("{}", secret.token);
            tracing::info!("added client {client_id}; its secret (above) is shown only now");
            audit("client.added", &client_id);
            Ok(())
        }
        ClientsCommand::List => {
            let rows: Vec<[String; 2]> = store
                .list_clients()
                .await?
                .into_iter()
                .map(|client| [client.client_id, format_time(client.created_at)])
                .collect();
            print_columns(["CLIENT ID", "ADDED"], &rows);
            Ok(())
        }
        ClientsCommand::Delete { client_id } => {
            if store.delete_client(&client_id).await? {
                audit("client.deleted", &client_id);
                Ok(())
            } else {
                Err(CliError::NoSuchClient(client_id))
            }
        }
    }
}
