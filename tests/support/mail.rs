//! The real mail server of the email tests (`scripts/mail-server`: Dovecot IMAP on 1143, an
//! SMTP listener on 2525 that drops mail into Maildirs; users `bridge`, `alice`, `bob`,
//! password `secret`) and the daemon's `[channels.mail]` section pointing at it.

use std::path::Path;

use futures::TryStreamExt;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::eventually;

pub const SMTP_PORT: u16 = 2525;
pub const IMAP_PORT: u16 = 1143;
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mail-server");

pub fn mail_server(action: &str) {
    // The server outlives the test: it must not hold the test's output open.
    let status = std::process::Command::new("sh")
        .args([SCRIPT, action])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run scripts/mail-server");
    assert!(status.success(), "scripts/mail-server {action} failed");
}

pub type Session = async_imap::Session<tokio::net::TcpStream>;

pub async fn imap(user: &str) -> Session {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", IMAP_PORT))
        .await
        .expect("IMAP server (run scripts/test, which starts it)");
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap();
    client
        .login(user, "secret")
        .await
        .map_err(|(e, _)| e)
        .unwrap()
}

/// Empties a user's INBOX (if it exists yet).
pub async fn clear(user: &str) {
    let mut s = imap(user).await;
    if s.select("INBOX").await.is_ok() {
        let uids = s.uid_search("ALL").await.unwrap();
        if !uids.is_empty() {
            let _: Vec<_> = s
                .uid_store("1:*", "+FLAGS (\\Deleted)")
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let _: Vec<_> = s.expunge().await.unwrap().try_collect().await.unwrap();
        }
    }
    let _ = s.logout().await;
}

/// Every mail in a user's INBOX, raw, in UID order.
pub async fn inbox(user: &str) -> Vec<Vec<u8>> {
    let mut s = imap(user).await;
    if s.select("INBOX").await.is_err() {
        return vec![];
    }
    let mut uids: Vec<u32> = s.uid_search("ALL").await.unwrap().into_iter().collect();
    uids.sort_unstable();
    let mut out = Vec::new();
    for uid in uids {
        let f: Vec<_> = s
            .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        if let Some(b) = f.first().and_then(|f| f.body()) {
            out.push(b.to_vec());
        }
    }
    let _ = s.logout().await;
    out
}

/// Every mail the SMTP listener dropped for `user`, with the moment it was written (from the
/// Maildir file name, `SECONDS.MMICROS...`), oldest first. Reads the files, not IMAP: IMAP
/// dates have whole seconds.
pub fn delivered(user: &str) -> Vec<(std::time::SystemTime, Vec<u8>)> {
    let root = std::env::var("MAILTEST_DIR").unwrap_or_else(|_| "/tmp/switchboard-mail".into());
    let maildir = Path::new(&root).join("mail").join(user).join("Maildir");
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('.');
            let secs: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let micros: u64 = parts
                .next()
                .and_then(|m| m.strip_prefix('M')?.split('P').next()?.parse().ok())
                .unwrap_or(0);
            let at =
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(secs * 1_000_000 + micros);
            out.push((at, std::fs::read(e.path()).unwrap_or_default()));
        }
    }
    out.sort_by_key(|(at, _)| *at);
    out
}

pub async fn wait_inbox(user: &str, n: usize) -> Vec<Vec<u8>> {
    eventually(30, &format!("{n} mails for {user}"), async || {
        let mails = inbox(user).await;
        (mails.len() >= n).then_some(mails)
    })
    .await
}

pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let m = mail_parser::MessageParser::default().parse(raw)?;
    m.header_raw(name).map(|v| v.trim().to_owned())
}

pub fn text(raw: &[u8]) -> String {
    let m = mail_parser::MessageParser::default().parse(raw).unwrap();
    m.body_text(0).unwrap_or_default().into_owned()
}

/// Sends raw mail bytes from `from` to the support mailbox.
pub async fn send_raw(from: &str, raw: &[u8]) {
    let smtp = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(SMTP_PORT)
        .build();
    let envelope = lettre::address::Envelope::new(
        Some(from.parse().unwrap()),
        vec!["bridge@example.test".parse().unwrap()],
    )
    .unwrap();
    smtp.send_raw(&envelope, raw).await.unwrap();
}

/// A plain customer mail.
pub fn mail(from: &str, id: &str, subject: &str, body: &str, in_reply_to: Option<&str>) -> Vec<u8> {
    let mut m = format!(
        "From: Customer <{from}>\r\nTo: bridge@example.test\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
         Date: {}\r\nContent-Type: text/plain; charset=utf-8\r\n",
        "Thu, 26 Nov 2026 10:00:00 +0000"
    );
    if let Some(irt) = in_reply_to {
        m.push_str(&format!("In-Reply-To: <{irt}>\r\nReferences: <{irt}>\r\n"));
    }
    m.push_str(&format!("\r\n{body}\r\n"));
    m.into_bytes()
}

/// Makes sure the mail server runs, empties every mailbox, writes the IMAP password under
/// `dir` and returns the `[channels.mail]` section; `imap` adds keys to its `[...imap]` table.
pub async fn prepare(dir: &Path, imap: &str) -> String {
    if tokio::net::TcpStream::connect(("127.0.0.1", IMAP_PORT))
        .await
        .is_err()
    {
        mail_server("start");
    }
    for u in ["bridge", "alice", "bob"] {
        clear(u).await;
    }
    std::fs::write(dir.join("imap.pw"), "secret").unwrap();
    format!(
        r#"
[channels.mail]
type = "email"
address = "bridge@shop.test"
display_name = "Shop Support"
max_attachment_bytes = 8000000
[channels.mail.imap]
host = "127.0.0.1"
port = {IMAP_PORT}
security = "none"
user = "bridge"
password_file = "{pw}"
idle_secs = 30
{imap}
[channels.mail.smtp]
host = "127.0.0.1"
port = {SMTP_PORT}
security = "none"
timeout_secs = 5
"#,
        pw = dir.join("imap.pw").display()
    )
}

/// Puts a raw mail straight into a user's INBOX (IMAP APPEND), without SMTP.
pub async fn append(user: &str, raw: &[u8]) {
    let mut s = imap(user).await;
    s.append("INBOX", None, None, raw).await.unwrap();
    let _ = s.logout().await;
}

/// A slow link to the IMAP server: what the server sends goes through at `rate` bytes a
/// second (set at any time; 0 holds it back entirely), what the client sends goes at once.
pub struct SlowLink {
    pub port: u16,
    rate: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SlowLink {
    pub async fn start(rate: u64) -> SlowLink {
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let rate = std::sync::Arc::new(AtomicU64::new(rate));
        let shared = rate.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", IMAP_PORT)).await
                else {
                    continue;
                };
                let rate = shared.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let now = rate.load(Ordering::Relaxed);
                        if now == 0 {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                        // A tenth of a second's worth at a time.
                        let most = ((now / 10) as usize).clamp(1, buf.len());
                        let n = match from_server.read(&mut buf[..most]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        let secs = n as f64 / now as f64;
                        tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
                    }
                });
            }
        });
        SlowLink { port, rate }
    }

    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, std::sync::atomic::Ordering::Relaxed);
    }
}
