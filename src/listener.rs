//! The HTTP listener: accepts connections and serves the router on each, with what a port
//! open to the internet needs.
//!
//! - **A header read timeout.** A connection must send a whole request head within
//!   `header_timeout` of opening, and of finishing its previous response (hyper starts the
//!   clock whenever it waits for a head), or it is closed: connections that trickle headers or
//!   send nothing (slowloris) do not stay.
//! - **A cap on open connections**, below the process's open-files limit (raised to the hard
//!   limit at start, [`raise_open_files`]), so `accept` never fails for want of a descriptor.
//!   When the cap is reached, the oldest connection that has not yet sent a complete request
//!   makes room for the new one: a flood of idle connections cannot keep `/healthz`, the web
//!   hook or the inbox out. When every open connection is serving a request, the newcomer is
//!   answered 503 with `Retry-After` and closed.
//!
//! HTTP/1.1 only: the daemon sits behind a TLS proxy or is reached on a private network, and
//! browsers speak HTTP/1.1 to plain-text origins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Descriptors kept back from connections for the store, files, outbound calls and logs.
const FD_RESERVE: u64 = 256;

/// How the listener guards itself.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must arrive within this.
    pub header_timeout: Duration,
    /// Open connections at most (further capped by the open-files limit).
    pub max_connections: usize,
}

/// Raises the soft limit on open files to the hard one (systemd starts services at 1,024
/// soft); returns the limit now in force.
pub fn raise_open_files() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit/setrlimit to read and write.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // rlim_t is u64 on Linux, not everywhere.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

/// Connections allowed open at once: the configured cap, or fewer when the open-files limit
/// would not leave [`FD_RESERVE`] descriptors (or half of a tiny limit) for everything else.
pub fn connection_cap(configured: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(FD_RESERVE.min(open_files / 2));
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// The open connections, in the order they were accepted.
#[derive(Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, Conn>,
}

struct Conn {
    /// Set once a complete request head has arrived.
    served: Arc<AtomicBool>,
    /// Closes the connection to make room for a newer one.
    evict: CancellationToken,
}

/// What a full table does with a new connection.
#[derive(Debug, PartialEq, Eq)]
enum Room {
    Free,
    /// This (older, never served) connection is closed to make room.
    Evict(u64),
    Full,
}

impl Open {
    fn room(&self, max: usize) -> Room {
        if self.conns.len() < max {
            return Room::Free;
        }
        self.conns
            .iter()
            .find(|(_, c)| !c.served.load(Ordering::Relaxed))
            .map_or(Room::Full, |(id, _)| Room::Evict(*id))
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then lets open requests finish
/// (hyper's graceful shutdown: idle connections close at once, busy ones after their
/// response) and returns when every connection has closed. Dropping the future closes them
/// all.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let mut tasks = JoinSet::new();
    let mut last_accept_error: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: log once a
                    // second at most, and give the process a moment to close some.
                    if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                        tracing::warn!(error = %e, "accept failed");
                        last_accept_error = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            // Reap finished connections as we go so the set stays small.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (id, served, evict) = {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            match open.room(limits.max_connections) {
                Room::Free => {}
                Room::Evict(old) => {
                    if let Some(c) = open.conns.remove(&old) {
                        c.evict.cancel();
                    }
                    metrics.connection_dropped("evicted");
                }
                Room::Full => {
                    drop(open);
                    metrics.connection_dropped("refused");
                    tasks.spawn(refuse(stream));
                    continue;
                }
            }
            let id = open.next;
            open.next += 1;
            let conn = Conn {
                served: Arc::new(AtomicBool::new(false)),
                evict: CancellationToken::new(),
            };
            let handles = (id, conn.served.clone(), conn.evict.clone());
            open.conns.insert(id, conn);
            handles
        };
        let (open, router, metrics, shutdown) = (
            open.clone(),
            router.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            metrics.connection_opened(true);
            let ended = connection(stream, peer, router, limits, served, evict, shutdown).await;
            if let Some(reason) = ended {
                metrics.connection_dropped(reason);
            }
            metrics.connection_opened(false);
            open.lock()
                .unwrap_or_else(|e| e.into_inner())
                .conns
                .remove(&id);
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Serves one connection; `Some(reason)` when it was cut rather than closed normally.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    served: Arc<AtomicBool>,
    evict: CancellationToken,
    shutdown: CancellationToken,
) -> Option<&'static str> {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        served.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        // Counted when it was chosen.
        _ = evict.cancelled() => return None,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match result {
        Ok(()) => None,
        Err(e) if e.is_timeout() => Some("header_timeout"),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
            None
        }
    }
}

/// Answers a connection that finds the table full, and closes it.
async fn refuse(mut stream: TcpStream) {
    let body = serde_json::json!({ "error": {
        "code": "overloaded",
        "message": "the server has too many open connections; try again shortly",
    }})
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(served: bool) -> Conn {
        Conn {
            served: Arc::new(AtomicBool::new(served)),
            evict: CancellationToken::new(),
        }
    }

    #[test]
    fn a_full_table_evicts_the_oldest_never_served_connection_or_refuses() {
        let mut open = Open::default();
        for (id, served) in [(0, true), (1, false), (2, true), (3, false)] {
            open.conns.insert(id, conn(served));
        }
        assert_eq!(open.room(5), Room::Free);
        assert_eq!(open.room(4), Room::Evict(1));
        open.conns.remove(&1);
        assert_eq!(open.room(3), Room::Evict(3));
        open.conns.remove(&3);
        // Every open connection has sent a request: the newcomer is refused.
        assert_eq!(open.room(2), Room::Full);
    }

    #[test]
    fn the_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(connection_cap(4096, 1_048_576), 4096);
        assert_eq!(connection_cap(4096, 1024), 768);
        assert_eq!(connection_cap(4096, 300), 150);
        assert_eq!(connection_cap(4096, 0), 1);
    }
}
