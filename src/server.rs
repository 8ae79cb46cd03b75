//! The running service: database, listener, the watch for changes made elsewhere,
//! background housekeeping, clean shutdown.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;

use crate::{
    api::{self, Cors},
    auth::Auth,
    config::Settings,
    connections,
    store::{ConnectError, Store},
};

/// How long requests in flight may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Connections the metrics listener accepts at once: scrapers, not the public.
const METRICS_CONNECTIONS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database: {0}")]
    Database(#[from] ConnectError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: io::Error },
}

/// A service with its database open and migrated and its port bound, ready to run.
pub struct Server {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    auth: Arc<Auth>,
    local_addr: SocketAddr,
    max_connections: usize,
    cors: Arc<Cors>,
}

impl Server {
    pub async fn build(settings: &Settings) -> Result<Self, StartError> {
        let store = Store::connect(&settings.database.database_url).await?;
        let address = format!("{}:{}", settings.host, settings.port);
        let listen_error = |source| StartError::Listen {
            address: address.clone(),
            source,
        };
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .await
            .map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        // Where it listens, with the port actually bound (PORT=0 picks one).
        let issuer = issuer(
            settings.issuer.as_deref(),
            &settings.host,
            local_addr.port(),
        );
        if settings.issuer.is_none() {
            warn_if_unreachable(&issuer, &settings.host);
        }
        let auth = Arc::new(Auth::new(store, settings, issuer));
        let metrics_listener =
            match &settings.metrics_addr {
                Some(address) => Some(TcpListener::bind(address.as_str()).await.map_err(
                    |source| StartError::Listen {
                        address: address.clone(),
                        source,
                    },
                )?),
                None => None,
            };
        Ok(Self {
            listener,
            metrics_listener,
            auth,
            local_addr,
            max_connections: connections::connection_limit(),
            cors: Arc::new(Cors::new(&settings.cors_allowed_origins)),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn auth(&self) -> Arc<Auth> {
        self.auth.clone()
    }

    /// Where the metrics are served, when `METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then stops accepting connections and lets
    /// requests in flight finish (up to a grace period).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let watch = self.auth.store().watch_changes();
        let housekeeping = tokio::spawn(housekeeping(self.auth.clone()));
        let metrics = self.metrics_listener.map(|listener| {
            tokio::spawn(connections::serve(
                listener,
                api::metrics_app(self.auth.metrics().clone()),
                None,
                METRICS_CONNECTIONS,
                std::future::pending(),
                Duration::ZERO,
            ))
        });
        let result = connections::serve(
            self.listener,
            api::app(self.auth.clone(), self.cors.clone()),
            Some(api::shortcut(self.auth.clone(), self.cors.clone())),
            self.max_connections,
            shutdown,
            SHUTDOWN_GRACE,
        )
        .await;
        housekeeping.abort();
        watch.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        self.auth.store().close().await;
        result
    }
}

/// The issuer identifier: `ISSUER` when set, otherwise where the service listens
/// (`http://HOST:PORT`, a wildcard address as the loopback address of its family);
/// without a trailing slash. The CLI names the service with it too (in `otpauth://`
/// URIs).
pub fn issuer(configured: Option<&str>, host: &str, port: u16) -> String {
    let issuer = configured.map_or_else(|| default_issuer(host, port), str::to_owned);
    issuer.trim_end_matches('/').to_owned()
}

/// A wildcard address is no place a client can reach: the loopback address of its
/// family stands in for it.
fn loopback_for(host: &str) -> Option<&'static str> {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) if ip.is_unspecified() => Some("127.0.0.1"),
        Ok(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => Some("::1"),
        _ => None,
    }
}

fn unbracketed(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

fn default_issuer(host: &str, port: u16) -> String {
    let host = unbracketed(host);
    url_of(loopback_for(host).unwrap_or(host), port)
}

/// Only `ISSUER` can say the public URL of a service listening on every address.
fn warn_if_unreachable(issuer: &str, host: &str) {
    let host = unbracketed(host);
    if loopback_for(host).is_some() {
        tracing::warn!(
            "HOST={host} listens on every address, and ISSUER is not set: the issuer in the \
             metadata document and introspection answers is {issuer} for now; set ISSUER to \
             the URL clients use (https://auth.example.com)"
        );
    }
}

fn url_of(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

/// Deletes dead tokens, sessions and ended throttle windows now and then, off the
/// request path.
async fn housekeeping(auth: Arc<Auth>) {
    let mut ticks = tokio::time::interval(auth.sweep_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match auth.sweep().await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "deleted dead tokens, sessions and counts"),
            Err(err) => tracing::warn!(error = %err, "housekeeping failed; will retry"),
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_host_gives_a_loopback_issuer() {
        assert_eq!(default_issuer("0.0.0.0", 8000), "http://127.0.0.1:8000");
        assert_eq!(default_issuer("::", 8000), "http://[::1]:8000");
        assert_eq!(default_issuer("[::]", 8000), "http://[::1]:8000");
        assert_eq!(default_issuer("127.0.0.1", 8000), "http://127.0.0.1:8000");
        assert_eq!(default_issuer("::1", 9), "http://[::1]:9");
        assert_eq!(default_issuer("localhost", 8000), "http://localhost:8000");
    }
}
