//! Prometheus metrics on `addr` (the config's top-level key): a small
//! HTTP server that renders `lsw::metrics::Metrics` at `GET /metrics`.

use std::sync::Arc;

use lsw::metrics::Metrics;

/// The running server; it stops when dropped.
pub struct MetricsServer {
    pub addr: std::net::SocketAddr,
}

/// Serve `metrics` on `addr` (`:9090` is every interface, as in
/// Litestream; `127.0.0.1:9090` only loopback).
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> anyhow::Result<MetricsServer> {
    let _ = metrics;
    Err(crate::cli::usage(format!("addr {addr}: metrics are not served yet")))
}
