//! Prometheus metrics on `addr` (the config's top-level key): a small
//! HTTP/1.1 server that renders `lsw::metrics::Metrics` at `GET /metrics`
//! (render.rs writes the page).
//!
//! One thread accepts and answers one request per connection, with
//! timeouts, so a scraper never costs more than a thread and a socket,
//! and a stuck client delays the next scrape by at most `IO_TIMEOUT`.
//! No HTTP crate: a scrape is one GET, and std's TcpListener is enough.

mod render;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use lsw::metrics::Metrics;

pub use render::render;

/// Longest wait for a client to send its request or take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A request head larger than this is refused (a scrape's is ~200 bytes).
const MAX_HEAD: usize = 16 << 10;

/// The running server; it stops when dropped.
pub struct MetricsServer {
    /// Where it listens (with the port chosen when `addr` said 0).
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The thread sleeps in accept(): wake it with a connection of our
        // own. If none can be made, leave it; the process is ending.
        let woke = wake_addrs(self.addr)
            .iter()
            .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok());
        if let Some(thread) = self.thread.take().filter(|_| woke) {
            let _ = thread.join();
        }
    }
}

/// Serve `metrics` on `addr` (`:9090` is every interface, as in
/// Litestream; `127.0.0.1:9090` only loopback; port 0 picks a free port).
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> anyhow::Result<MetricsServer> {
    let listener = listen(addr)?;
    let local = listener
        .local_addr()
        .with_context(|| format!("listen on {addr} for metrics"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("lsw-metrics".into())
            .spawn(move || accept_loop(&listener, &metrics, &stop))
            .context("start the metrics server thread")?
    };
    Ok(MetricsServer {
        addr: local,
        stop,
        thread: Some(thread),
    })
}

/// Bind `addr`: `:PORT` is every interface (IPv6 and IPv4 where the
/// system has both, else IPv4), `HOST:PORT` what HOST resolves to.
fn listen(addr: &str) -> anyhow::Result<TcpListener> {
    let candidates: Vec<SocketAddr> = match addr.strip_prefix(':') {
        Some(port) => {
            let port: u16 = port.parse().map_err(|_| bad_addr(addr))?;
            vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            ]
        }
        None => {
            if !addr.contains(':') {
                return Err(bad_addr(addr));
            }
            addr.to_socket_addrs()
                .map_err(|e| crate::cli::usage(format!("metrics addr {addr}: {e}")))?
                .collect()
        }
    };
    let mut last = None;
    for candidate in &candidates {
        match TcpListener::bind(candidate) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"));
    Err(anyhow::Error::new(e).context(format!("listen on {addr} for metrics")))
}

fn bad_addr(addr: &str) -> anyhow::Error {
    crate::cli::usage(format!(
        "metrics addr {addr:?}: expected :PORT (every interface) or HOST:PORT, e.g. :9090 or 127.0.0.1:9090"
    ))
}

/// Where to connect to reach a listener on `addr` from this host.
fn wake_addrs(addr: SocketAddr) -> Vec<SocketAddr> {
    if !addr.ip().is_unspecified() {
        return vec![addr];
    }
    let port = addr.port();
    vec![
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
    ]
}

fn accept_loop(listener: &TcpListener, metrics: &Metrics, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            // An answer that cannot be delivered is the client's loss.
            Ok(stream) => {
                let _ = answer(stream, metrics);
            }
            // Out of descriptors, say: do not spin on it.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Read one request and answer it, then close the connection.
fn answer(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let response = match read_head(&mut stream)? {
        Some(head) => respond(&head, metrics),
        None => Response::plain("400 Bad Request", "bad request\n"),
    };
    stream.write_all(&response.into_bytes())?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// The request head up to its blank line, or `None` if it is too long
/// or the client stopped before ending it.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn respond(head: &str, metrics: &Metrics) -> Response {
    let mut words = head.lines().next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Response::plain("400 Bad Request", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::plain("505 HTTP Version Not Supported", "HTTP/1.x only\n");
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path != "/metrics" {
        return Response::plain("404 Not Found", "not found; metrics are at /metrics\n");
    }
    if method != "GET" && method != "HEAD" {
        return Response::plain("405 Method Not Allowed", "use GET\n");
    }
    Response {
        status: "200 OK",
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: render(metrics),
        head_only: method == "HEAD",
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    head_only: bool,
}

impl Response {
    fn plain(status: &'static str, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            head_only: false,
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let allow = if self.status.starts_with("405") {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request over TCP: the status line and the body.
    fn request(addr: SocketAddr, raw: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_string(), body.to_string())
    }

    #[test]
    fn serves_metrics_and_only_metrics() {
        let server = serve("127.0.0.1:0", Arc::new(Metrics::default())).unwrap();
        assert!(server.addr.ip().is_loopback() && server.addr.port() != 0);
        let (status, body) = request(server.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("# TYPE litestream_db_size gauge"), "{body}");
        let (status, body) = request(server.addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
        assert_eq!(
            request(server.addr, "GET / HTTP/1.1\r\n\r\n").0,
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            request(server.addr, "GET /metricsx HTTP/1.1\r\n\r\n").0,
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            request(server.addr, "POST /metrics HTTP/1.1\r\n\r\n").0,
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(
            request(server.addr, "nonsense\r\n\r\n").0,
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(
            request(server.addr, "GET /metrics?x=1 HTTP/1.1\r\n\r\n").0,
            "HTTP/1.1 200 OK"
        );
    }

    #[test]
    fn stops_when_dropped() {
        let server = serve("127.0.0.1:0", Arc::new(Metrics::default())).unwrap();
        let addr = server.addr;
        drop(server);
        // The listener is closed: nothing accepts on that port any more.
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn colon_port_is_every_interface() {
        let server = serve(":0", Arc::new(Metrics::default())).unwrap();
        assert!(server.addr.ip().is_unspecified(), "{}", server.addr);
        let port = server.addr.port();
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        assert_eq!(
            request(loopback, "GET /metrics HTTP/1.1\r\n\r\n").0,
            "HTTP/1.1 200 OK"
        );
    }

    #[test]
    fn bad_addresses_are_usage_errors() {
        for addr in ["9090", ":port", "localhost"] {
            let e = serve(addr, Arc::new(Metrics::default())).err().unwrap();
            assert!(
                e.downcast_ref::<crate::cli::UsageError>().is_some(),
                "{addr}: {e}"
            );
        }
        let taken = serve("127.0.0.1:0", Arc::new(Metrics::default())).unwrap();
        let e = serve(&taken.addr.to_string(), Arc::new(Metrics::default()))
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("listen on 127.0.0.1:"), "{e:#}");
    }
}
