//! The systemd notification protocol (`sd_notify`), without libsystemd: datagrams to the
//! socket named by `NOTIFY_SOCKET` (`Type=notify`), and watchdog pings every half of
//! `WATCHDOG_USEC` (`WatchdogSec=`). Outside systemd every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where systemd listens, if it does.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    /// Sends `state` (`READY=1`, `STATUS=...`, `STOPPING=1`, `WATCHDOG=1`). Failures are
    /// logged: systemd's view of us is useful, never essential.
    pub fn notify(&self, state: &str) {
        let Some(path) = &self.socket else { return };
        let result = UnixDatagram::unbound().and_then(|sock| match path.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            _ => sock.send_to(state.as_bytes(), path),
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, socket = %path, "cannot notify systemd");
        }
    }

    /// The watchdog interval systemd expects pings within, if it asked for them.
    pub fn watchdog() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        // WATCHDOG_PID, when set, names the process meant (not a child that inherited it).
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec))
    }
}
