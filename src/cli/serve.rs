//! Running the service, and bringing a database's schema up to date.

use std::time::SystemTime;

use super::CliError;
use crate::{
    config::{DatabaseSettings, Settings},
    server::{self, Server},
    store::Store,
    telemetry::{self, LogFormat},
};

pub(super) async fn serve(settings: Settings) -> Result<(), CliError> {
    let server = Server::build(&settings).await?;
    // On standard output whatever RUST_LOG says: it is how to reach the service.
    let address = server.local_addr();
    let database = &settings.database.database_url;
    let line =
        format!("serving on http://{address}, docs at http://{address}/docs, database {database}");
    match telemetry::format() {
        LogFormat::Text => println!("{line}"),
        // Shaped like the JSON log lines, so a log shipper reads it like them.
        LogFormat::Json => println!(
            "{}",
            serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                "level": "INFO",
                "fields": {
                    "message": line,
                    "address": address.to_string(),
                    "database": database.to_string(),
                },
                "target": "simple_oauth2::cli",
            })
        ),
    }
    server.run_until(server::shutdown_signal()).await?;
    Ok(())
}

pub(super) async fn migrate(database: &DatabaseSettings) -> Result<(), CliError> {
    Store::connect(&database.database_url).await?.close().await;
    println!("database {} is up to date", database.database_url);
    Ok(())
}
