//! The consumer's metrics registry ([`kinesin_aws::Metrics`]) read back
//! in-process for the progress line, the progress log and the exit
//! summary, and served over HTTP with `--metrics-addr`:
//!
//! - `GET /metrics`: the Prometheus text exposition format (0.0.4);
//! - `GET /healthz`: `200 ready` when the worker holds leases or none is
//!   left for it, `503 starting` before its first lease-table read, `503
//!   failing: <reason>` when it stopped (fatal), fenced itself, or has not
//!   read the lease table for longer than the failover time.
//!
//! The server is a minimal HTTP/1.1 responder (one request per connection,
//! `Connection: close`): a scrape needs nothing more, and it keeps an HTTP
//! server stack out of the binary. A request head larger than 8 KiB or
//! slower than 5 s is dropped.

use std::time::Duration;

use anyhow::{Context, Result};
use kinesin_aws::{Health, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

/// Values the progress line and the logs show, from the registry.
#[derive(Clone, Debug)]
pub struct Stats(pub Metrics);

impl Stats {
    /// Leases this process holds now.
    pub fn leases_held(&self) -> u64 {
        self.0.leases_held()
    }
    /// Lease and heartbeat writes answered (DynamoDB or local store).
    pub fn lease_writes(&self) -> u64 {
        self.0.calls("WriteLease") + self.0.calls("WriteHeartbeat")
    }
    /// Received and not yet acknowledged: (records, bytes).
    pub fn pool(&self) -> (u64, u64) {
        self.0.pool_used()
    }
}

/// Bind `addr` (before the consumer starts, so a taken port fails at once).
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-addr {addr}: cannot listen there"))
}

/// Serve `/metrics` and `/healthz` from `metrics` until the task is
/// aborted.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    if let Ok(a) = listener.local_addr() {
        info!("metrics on http://{a}/metrics, health on http://{a}/healthz");
    }
    loop {
        let Ok((conn, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(conn, &metrics).await {
                debug!(%peer, "metrics request: {e}");
            }
        });
    }
}

async fn answer(mut conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > 8192 {
                return Err(std::io::Error::other("request head over 8 KiB"));
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::other("request head not received in 5 s"))??;
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let (status, ctype, body) = respond(&line, metrics);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

/// (status line, content type, body) for a request line.
fn respond(line: &str, metrics: &Metrics) -> (&'static str, &'static str, String) {
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" {
        return ("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    match path {
        "/metrics" => {
            let mut body = String::with_capacity(8192);
            metrics.render(&mut body);
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        "/healthz" => match metrics.health() {
            Health::Ready => ("200 OK", TEXT, "ready\n".into()),
            Health::Starting => ("503 Service Unavailable", TEXT, "starting\n".into()),
            Health::Failing(why) => (
                "503 Service Unavailable",
                TEXT,
                format!("failing: {}\n", why.replace('\n', " ")),
            ),
        },
        _ => ("404 Not Found", TEXT, "/metrics or /healthz\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_answer_metrics_health_and_not_found() {
        let m = Metrics::new(Duration::from_secs(10), (10, 100));
        let (status, ctype, body) = respond("GET /metrics HTTP/1.1\r", &m);
        assert_eq!(status, "200 OK");
        assert!(ctype.contains("version=0.0.4"));
        assert!(body.contains("# TYPE kinesin_leases_held gauge"), "{body}");
        let (status, _, body) = respond("GET /healthz HTTP/1.1", &m);
        assert_eq!(
            (status, body.as_str()),
            ("503 Service Unavailable", "starting\n")
        );
        assert_eq!(respond("GET /x HTTP/1.1", &m).0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.1", &m).0,
            "405 Method Not Allowed"
        );
    }
}
