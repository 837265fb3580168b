//! `switchboard-email`: customers reaching Switchboard by email.
//!
//! # Layout
//! - [`EmailChannel`] (this file): IMAP in (IDLE, or polling where the server lacks it), SMTP
//!   out through lettre; the channel state remembers UIDVALIDITY, the last stored UID and what
//!   threading needs.
//! - [`mime`]: one raw mail parsed (charsets, encoded words, HTML-only mail, quoted history
//!   and signatures cut for the bot, auto-replies and bounces recognised).
//! - [`threading`]: which conversation a mail joins (headers, then subject within a window).
//!
//! # Guarantees
//! - In: the last stored UID moves only past mail the engine has stored durably; after a
//!   restart or reconnect the search starts after it. A new UIDVALIDITY re-reads the folder
//!   and the engine's dedupe on Message-ID drops what was stored before.
//! - Out: each reply carries `Message-ID: <{outbound id}@{domain}>`, the same on every retry,
//!   plus `In-Reply-To` and `References`, so it threads in the customer's client and their
//!   answer threads back here. Bot replies say `Auto-Submitted: auto-replied`.

pub mod mime;
pub mod threading;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::TryStreamExt;
use lettre::message::{Attachment as MailAttachment, Mailbox, MultiPart, SinglePart, header};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};
use switchboard_channel::{
    Attachment, Capabilities, Channel, ChannelContext, ChannelError, ChannelHealth, ChannelId,
    ExternalMessageId, ExternalThread, ExternalUser, HealthTracker, InboundError, InboundEvent,
    InboundMessage, Outbound, OutboundAuthor, Sender,
};
use tokio_util::sync::CancellationToken;

/// Longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Servers drop IDLE after 30 minutes (RFC 2177); re-issue before.
const MAX_IDLE: Duration = Duration::from_secs(29 * 60);
/// Mails fetched per round trip at most; fewer after a fetch timed out.
const FETCH_BATCH: usize = 25;
/// Bytes fetched per round trip at most (a single larger mail goes alone).
const FETCH_BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// A mail may take one second per this many bytes beyond the IMAP timeout: the slowest link
/// we still wait for.
const MIN_BYTES_PER_SEC: u64 = 16 * 1024;
/// How many Message-IDs a reply's `References` carries at most.
const MAX_REFERENCES: usize = 20;

/// Transport security.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain text: only for a server on the same machine.
    None,
    /// STARTTLS on the plain port (SMTP submission, 587).
    Starttls,
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    #[default]
    Tls,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    pub host: String,
    /// Default: 993 with TLS, 143 without.
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    pub user: String,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_folder")]
    pub folder: String,
    /// Use IDLE when the server offers it; `false` polls (for servers whose IDLE is broken).
    #[serde(default = "yes")]
    pub idle: bool,
    /// Polling interval without IDLE.
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
    /// Re-issue IDLE after this long (at most 29 minutes).
    #[serde(default = "default_idle")]
    pub idle_secs: u64,
    /// Mark stored mail `\Seen`.
    #[serde(default)]
    pub mark_seen: bool,
    /// Move stored mail to this folder (it must exist).
    pub move_to: Option<String>,
    /// Each IMAP command, and each mail of a fetch, must answer within this long (a mail gets
    /// one more second per 16 KiB of its size).
    #[serde(default = "default_imap_timeout")]
    pub timeout_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 465 with TLS, 587 with STARTTLS, 25 without.
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
}

/// One mailbox (`type = "email"` under `[channels.NAME]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The support address customers write to; replies come from it.
    pub address: String,
    /// Shown as the sender's name, e.g. "Shop Support".
    pub display_name: Option<String>,
    /// Agent replies show "Ana (Shop Support)" as the sender's name.
    #[serde(default = "yes")]
    pub agent_names: bool,
    /// Domain of our Message-IDs; default: the address's domain.
    pub message_id_domain: Option<String>,
    /// A reply without usable headers joins the sender's conversation with the same subject
    /// within this many days.
    #[serde(default = "default_window")]
    pub thread_window_days: u64,
    /// Larger attachments are listed but not kept.
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: u64,
    pub imap: ImapConfig,
    pub smtp: SmtpConfig,
}

fn default_folder() -> String {
    "INBOX".into()
}
fn default_poll() -> u64 {
    60
}
fn default_idle() -> u64 {
    25 * 60
}
fn default_imap_timeout() -> u64 {
    60
}
fn default_smtp_timeout() -> u64 {
    30
}
fn yes() -> bool {
    true
}
fn default_window() -> u64 {
    14
}
fn default_max_attachment() -> u64 {
    10 * 1024 * 1024
}

impl switchboard_channel::ChannelFactory for EmailConfig {
    const TYPE: &'static str = "email";

    fn validate(&self, id: &ChannelId) -> Vec<String> {
        self.problems(id.as_str())
    }

    async fn build(
        self,
        ctx: ChannelContext,
    ) -> Result<Arc<dyn Channel>, switchboard_channel::BuildError> {
        switchboard_channel::built(EmailChannel::build(self, ctx))
    }
}

impl EmailConfig {
    /// Every problem of this section, for `check-config`.
    pub fn problems(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.address.parse::<lettre::Address>().is_err() {
            out.push(format!(
                "[channels.{id}] address `{}` is not an email address",
                self.address
            ));
        }
        if let Err(e) = switchboard_channel::resolve_secret(
            &format!("[channels.{id}.imap] password"),
            self.imap.password.as_deref(),
            self.imap.password_env.as_deref(),
            self.imap.password_file.as_deref(),
        ) {
            out.push(e);
        }
        if self.imap.security == Security::Starttls {
            out.push(format!(
                "[channels.{id}.imap] security = \"starttls\" is not supported; use \"tls\" (port 993)"
            ));
        }
        if self.smtp.user.is_some()
            && let Err(e) = switchboard_channel::resolve_secret(
                &format!("[channels.{id}.smtp] password"),
                self.smtp.password.as_deref(),
                self.smtp.password_env.as_deref(),
                self.smtp.password_file.as_deref(),
            )
        {
            out.push(e);
        }
        out
    }

    fn domain(&self) -> String {
        self.message_id_domain.clone().unwrap_or_else(|| {
            self.address
                .rsplit_once('@')
                .map(|(_, d)| d.to_owned())
                .unwrap_or_else(|| "switchboard.invalid".into())
        })
    }
}

/// What the channel keeps about one conversation (`t/{thread}`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ThreadInfo {
    owner: String,
    owner_name: Option<String>,
    subject: String,
    /// Message-IDs of the conversation, oldest first, capped.
    refs: Vec<String>,
}

/// The email connector.
pub struct EmailChannel {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: ChannelContext,
    config: EmailConfig,
    imap_password: String,
    smtp: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
    health: HealthTracker,
    /// Mails per fetch now: halved after a fetch that timed out, doubled after one that did not.
    batch: std::sync::atomic::AtomicUsize,
    /// Stored mails not yet flagged or moved (a fetch was cut off before it could).
    unflagged: std::sync::Mutex<Vec<u32>>,
}

/// The IMAP connection, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug> Stream
    for T
{
}
type Session = async_imap::Session<Box<dyn Stream>>;

#[derive(Debug, thiserror::Error)]
enum LoopError {
    #[error("IMAP: {0}")]
    Imap(#[from] async_imap::error::Error),
    #[error("IMAP: {0}")]
    Io(#[from] std::io::Error),
    #[error("IMAP: timed out")]
    Timeout,
    #[error(
        "IMAP: fetching {mails} mail(s) ({bytes} bytes) made no progress in {secs} s; retrying with fewer at a time"
    )]
    Stalled { mails: usize, bytes: u64, secs: u64 },
    #[error("storing failed: {0}")]
    Store(InboundError),
    #[error("channel state: {0}")]
    State(String),
}

impl EmailChannel {
    pub fn build(config: EmailConfig, ctx: ChannelContext) -> Result<Self, String> {
        if let Some(p) = config.problems(ctx.id.as_str()).into_iter().next() {
            return Err(p);
        }
        let imap_password = switchboard_channel::resolve_secret(
            "imap password",
            config.imap.password.as_deref(),
            config.imap.password_env.as_deref(),
            config.imap.password_file.as_deref(),
        )?;
        let smtp_config = &config.smtp;
        let mut builder = match smtp_config.security {
            Security::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp_config.host)
                    .port(smtp_config.port.unwrap_or(25))
            }
            Security::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp_config.host)
                    .map_err(|e| format!("smtp: {e}"))?
                    .port(smtp_config.port.unwrap_or(587))
            }
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp_config.host)
                .map_err(|e| format!("smtp: {e}"))?
                .port(smtp_config.port.unwrap_or(465)),
        }
        .timeout(Some(Duration::from_secs(smtp_config.timeout_secs)));
        if let Some(user) = &smtp_config.user {
            let password = switchboard_channel::resolve_secret(
                "smtp password",
                smtp_config.password.as_deref(),
                smtp_config.password_env.as_deref(),
                smtp_config.password_file.as_deref(),
            )?;
            builder = builder.credentials(
                lettre::transport::smtp::authentication::Credentials::new(user.clone(), password),
            );
        }
        let address: lettre::Address = config
            .address
            .parse()
            .map_err(|e| format!("address: {e}"))?;
        let from = Mailbox::new(config.display_name.clone(), address);
        let domain = config.domain();
        Ok(EmailChannel {
            inner: Arc::new(Inner {
                ctx,
                smtp: builder.build(),
                from,
                domain,
                imap_password,
                config,
                health: HealthTracker::default(),
                batch: FETCH_BATCH.into(),
                unflagged: Default::default(),
            }),
        })
    }
}

async fn timed<T, E: Into<LoopError>>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, LoopError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(LoopError::Timeout),
    }
}

impl Inner {
    fn io_timeout(&self) -> Duration {
        Duration::from_secs(self.config.imap.timeout_secs.max(1))
    }

    async fn state_get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Option<T> {
        let bytes = self.ctx.state.get(key.as_bytes()).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    async fn state_put(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), LoopError> {
        let refs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_slice()))
            .collect();
        self.ctx
            .state
            .put_all(&refs)
            .await
            .map_err(|e| LoopError::State(e.to_string()))
    }

    async fn connect(&self) -> Result<Session, LoopError> {
        let c = &self.config.imap;
        let tls = c.security == Security::Tls;
        let port = c.port.unwrap_or(if tls { 993 } else { 143 });
        let tcp = timed(
            self.io_timeout(),
            tokio::net::TcpStream::connect((c.host.as_str(), port)),
        )
        .await?;
        let stream: Box<dyn Stream> = if tls {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = tokio_rustls::rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(c.host.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            Box::new(timed(self.io_timeout(), connector.connect(name, tcp)).await?)
        } else {
            Box::new(tcp)
        };
        let mut client = async_imap::Client::new(stream);
        // The greeting must be read before the first command.
        timed(self.io_timeout(), client.read_response()).await?;
        let session = timed(self.io_timeout(), async {
            client
                .login(&c.user, &self.imap_password)
                .await
                .map_err(|(e, _)| LoopError::Imap(e))
        })
        .await?;
        Ok(session)
    }

    /// Receives until `stop` fires, reconnecting with backoff.
    async fn receive(&self, stop: &CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let result = match self.connect().await {
                Ok(session) => {
                    backoff = Duration::from_secs(1);
                    self.serve(session, stop).await
                }
                Err(e) => Err(e),
            };
            if stop.is_cancelled() {
                return;
            }
            if let Err(e) = result {
                self.health.error(&e);
                tracing::warn!(channel = %self.ctx.id, error = %e, ?backoff, "mailbox connection lost; reconnecting");
            }
            if !switchboard_channel::sleep_or_stop(stop, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn serve(&self, mut session: Session, stop: &CancellationToken) -> Result<(), LoopError> {
        let folder = self.config.imap.folder.clone();
        let mailbox = timed(self.io_timeout(), session.select(&folder)).await?;
        let validity = mailbox.uid_validity.unwrap_or(0);
        let stored: Option<u32> = self.state_get("uidvalidity").await;
        if stored != Some(validity) {
            if stored.is_some() {
                tracing::warn!(channel = %self.ctx.id, "UIDVALIDITY changed: reading the folder again (mail stored before is recognised by Message-ID)");
            }
            self.state_put(&[
                (
                    "uidvalidity".into(),
                    serde_json::to_vec(&validity).expect("u32"),
                ),
                ("last_uid".into(), b"0".to_vec()),
            ])
            .await?;
        }
        let idle = timed(self.io_timeout(), session.capabilities())
            .await?
            .has_str("IDLE");
        // Healthy once a sync gets through: connecting alone says nothing on a link too slow
        // to fetch.
        loop {
            // Mail that arrives during a sync is announced (EXISTS) among that sync's
            // responses, not by the IDLE after it: sync again while there is news.
            new_mail(&mut session);
            for _ in 0..10 {
                self.sync(&mut session).await?;
                if !new_mail(&mut session) {
                    break;
                }
            }
            if stop.is_cancelled() {
                let _ = timed(Duration::from_secs(5), session.logout()).await;
                return Ok(());
            }
            if idle {
                let mut handle = session.idle();
                timed(self.io_timeout(), handle.init()).await?;
                let wait = Duration::from_secs(self.config.imap.idle_secs).min(MAX_IDLE);
                let (waiting, interrupt) = handle.wait_with_timeout(wait);
                tokio::select! {
                    r = waiting => { r?; }
                    _ = stop.cancelled() => {}
                }
                drop(interrupt);
                session = timed(Duration::from_secs(10), handle.done()).await?;
            } else if !switchboard_channel::sleep_or_stop(
                stop,
                Duration::from_secs(self.config.imap.poll_secs),
            )
            .await
            {
                let _ = timed(Duration::from_secs(5), session.logout()).await;
                return Ok(());
            }
        }
    }

    /// Stores every mail after the last stored UID, in UID order, each as soon as it arrives:
    /// on a slow link a fetch that is cut off keeps what came, and the next one is smaller.
    async fn sync(&self, session: &mut Session) -> Result<(), LoopError> {
        let cut_off = std::mem::take(&mut *self.unflagged.lock().expect("unflagged"));
        for uid in cut_off {
            self.after_import(session, uid).await;
        }
        let last: u32 = self.state_get("last_uid").await.unwrap_or(0);
        let found = timed(
            self.io_timeout(),
            session.uid_search(format!("UID {}:*", last + 1)),
        )
        .await?;
        // "n:*" always includes the highest UID, even when it is below n.
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > last).collect();
        uids.sort_unstable();
        if uids.is_empty() {
            self.health.ok();
            return Ok(());
        }
        let sizes = self.sizes(session, &uids).await?;
        let mut rest = &uids[..];
        while !rest.is_empty() {
            let most = self.batch.load(Ordering::Relaxed).clamp(1, FETCH_BATCH);
            let take = batch_len(rest, &sizes, most);
            let (chunk, after) = rest.split_at(take);
            rest = after;
            self.fetch(session, chunk, &sizes).await?;
            self.health.ok();
        }
        Ok(())
    }

    /// Each mail's size (`RFC822.SIZE`), to bound batches and give big mails time.
    async fn sizes(
        &self,
        session: &mut Session,
        uids: &[u32],
    ) -> Result<HashMap<u32, u64>, LoopError> {
        let mut sizes = HashMap::with_capacity(uids.len());
        for chunk in uids.chunks(1000) {
            let got: Vec<_> = timed(self.io_timeout(), async {
                let stream = session
                    .uid_fetch(uid_set(chunk), "(UID RFC822.SIZE)")
                    .await?;
                stream.try_collect().await
            })
            .await?;
            for f in got {
                if let (Some(uid), Some(size)) = (f.uid, f.size) {
                    sizes.insert(uid, u64::from(size));
                }
            }
        }
        Ok(sizes)
    }

    /// Fetches `chunk` and stores each mail in UID order as it comes; each must arrive within
    /// the IMAP timeout plus a second per 16 KiB of the largest one still missing.
    async fn fetch(
        &self,
        session: &mut Session,
        chunk: &[u32],
        sizes: &HashMap<u32, u64>,
    ) -> Result<(), LoopError> {
        let size = |uid: &u32| sizes.get(uid).copied().unwrap_or(0);
        let started = tokio::time::Instant::now();
        let mut waiting: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut stored: Vec<u32> = Vec::new();
        let mut next = 0;
        let outcome = async {
            let mut stream = session
                .uid_fetch(uid_set(chunk), "(UID BODY.PEEK[])")
                .await?;
            loop {
                let largest = chunk[next..].iter().map(size).max().unwrap_or(0);
                let wait = self.io_timeout() + Duration::from_secs(largest / MIN_BYTES_PER_SEC);
                let Some(item) = timed(wait, stream.try_next()).await? else {
                    break;
                };
                if let (Some(uid), Some(body)) = (item.uid, item.body()) {
                    waiting.insert(uid, body.to_vec());
                }
                // Store what is next in UID order; a mail gone from the server is skipped
                // when the fetch ends.
                while let Some(raw) = chunk.get(next).and_then(|uid| waiting.remove(uid)) {
                    self.store(chunk[next], &raw).await?;
                    stored.push(chunk[next]);
                    next += 1;
                }
            }
            for (uid, raw) in std::mem::take(&mut waiting) {
                self.store(uid, &raw).await?;
                stored.push(uid);
            }
            Ok::<_, LoopError>(())
        }
        .await;
        let grown = match &outcome {
            Err(LoopError::Timeout) => {
                let now = self.batch.load(Ordering::Relaxed);
                self.batch.store((now / 2).max(1), Ordering::Relaxed);
                self.unflagged.lock().expect("unflagged").extend(&stored);
                if stored.is_empty() {
                    return Err(LoopError::Stalled {
                        mails: chunk.len(),
                        bytes: chunk.iter().map(size).sum(),
                        secs: started.elapsed().as_secs(),
                    });
                }
                tracing::warn!(channel = %self.ctx.id, stored = stored.len(), of = chunk.len(), "IMAP fetch timed out; fetching fewer mails at a time");
                return Err(LoopError::Timeout);
            }
            Err(_) => {
                self.unflagged.lock().expect("unflagged").extend(&stored);
                return outcome;
            }
            Ok(()) => (self.batch.load(Ordering::Relaxed) * 2).min(FETCH_BATCH),
        };
        self.batch.store(grown, Ordering::Relaxed);
        for uid in stored {
            self.after_import(session, uid).await;
        }
        Ok(())
    }

    /// Stores one fetched mail and moves the channel's position past it.
    async fn store(&self, uid: u32, raw: &[u8]) -> Result<(), LoopError> {
        self.import(raw).await.map_err(LoopError::Store)?;
        self.state_put(&[("last_uid".into(), uid.to_string().into_bytes())])
            .await
    }

    async fn after_import(&self, session: &mut Session, uid: u32) {
        let c = &self.config.imap;
        let result = async {
            if c.mark_seen {
                let s = session
                    .uid_store(uid.to_string(), "+FLAGS (\\Seen)")
                    .await?;
                let _: Vec<_> = s.try_collect().await?;
            }
            if let Some(folder) = &c.move_to {
                session.uid_mv(uid.to_string(), folder).await?;
            }
            Ok::<_, async_imap::error::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(channel = %self.ctx.id, uid, error = %e, "could not flag or move a stored mail");
        }
    }

    /// Stores one raw mail (or reports the bounce it is).
    async fn import(&self, raw: &[u8]) -> Result<(), InboundError> {
        let Some(mail) = mime::parse(raw) else {
            tracing::warn!(channel = %self.ctx.id, "not a mail; skipped");
            return Ok(());
        };
        self.health.received(1);
        let mut automated = mail.automated.clone();
        if let Some((id, reason)) = &mail.bounce {
            if self.ours(id).is_some() {
                return self.bounced(id, reason).await;
            }
            // About mail we did not send (an agent's own client on this mailbox): stored for
            // people like any mail from a mailer daemon, never answered.
            tracing::info!(channel = %self.ctx.id, message_id = %id, "a bounce of a mail we did not send; stored, not answered");
            automated = Some(format!("a delivery report about other mail: {reason}"));
        }
        let now = switchboard_channel::now_ms();
        let headers = threading::Headers {
            message_id: mail.message_id.clone(),
            in_reply_to: mail.in_reply_to.clone(),
            references: mail.references.clone(),
            from: mail.from.clone(),
            subject: mail.subject.clone(),
            date_ms: mail.date_ms.unwrap_or(now),
        };
        let window = self.config.thread_window_days as i64 * 86_400_000;
        let placement = threading::place(&headers, &self.threading_found(&headers).await, window);
        let thread = placement.thread().to_owned();
        let mut attachments = Vec::new();
        for (name, content_type, bytes) in &mail.files {
            attachments.push(self.keep(name, content_type, bytes).await);
        }
        if let Some(html) = &mail.html {
            attachments.push(
                self.keep("message.html", "text/html", html.as_bytes())
                    .await,
            );
        }
        if mail.new_text != mail.full_text || !mail.files.is_empty() || mail.cut {
            // The whole mail, for people: quoted history, signature, every part.
            attachments.push(self.keep("original.eml", "message/rfc822", raw).await);
        }
        // The subject is part of the question when it starts a topic ("Re: …" does not);
        // with no words in the body it is the text.
        let (text, subject) = if mail.new_text.is_empty() && mail.files.is_empty() {
            (mail.subject.clone(), None)
        } else {
            let topic = !mail.subject.trim().is_empty() && !threading::subject_key(&mail.subject).1;
            (
                mail.new_text.clone(),
                topic.then(|| mail.subject.trim().to_owned()),
            )
        };
        let event = InboundEvent::Message(InboundMessage {
            thread: ExternalThread(thread.clone()),
            sender: Sender {
                id: ExternalUser(mail.from.clone()),
                name: mail.from_name.clone(),
            },
            // A Message-ID is chosen by the sender's software: unique per sender at best.
            message_id: ExternalMessageId::scoped(&mail.from, &mail.message_id),
            text,
            attachments,
            sent_at_ms: mail.date_ms,
            automated,
            earlier_id: Some(ExternalMessageId(mail.message_id.clone())),
            subject,
            payload: None,
        });
        // Remember what threading and replies need before the engine has the mail: its bot
        // answer may go out at once, and sending needs the thread's address and subject. A
        // crash between the two leaves this written and the mail unrecorded; it is read again
        // and stored then (writing the same again changes nothing).
        let mut info: ThreadInfo =
            self.state_get(&format!("t/{thread}"))
                .await
                .unwrap_or_else(|| ThreadInfo {
                    owner: mail.from.clone(),
                    owner_name: mail.from_name.clone(),
                    subject: mail.subject.clone(),
                    refs: vec![],
                });
        push_ref(&mut info.refs, &mail.message_id);
        let (key, _) = threading::subject_key(&mail.subject);
        let known = threading::Known {
            thread: thread.clone(),
            owner: mail.from.clone(),
        };
        let by_subject = threading::BySubject {
            thread: thread.clone(),
            at_ms: headers.date_ms,
        };
        self.state_put(&[
            (format!("m/{}", mail.message_id), json(&known)),
            (format!("s/{}\n{key}", mail.from), json(&by_subject)),
            (format!("t/{thread}"), json(&info)),
        ])
        .await
        .map_err(|e| InboundError::Unavailable(e.to_string()))?;
        match self.ctx.inbound.submit(&self.ctx.id, event).await {
            Ok(_) => {}
            Err(InboundError::Rejected(reason)) => {
                tracing::warn!(channel = %self.ctx.id, message_id = %mail.message_id, %reason, "mail rejected; skipped");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// A bounce of one of our mails marks that reply failed.
    /// The outbound id of one of our mails, from its Message-ID.
    /// What threading may ask about a mail, read from the channel state.
    async fn threading_found(&self, h: &threading::Headers) -> threading::Found {
        let (ids, subject_key) = threading::Known::wanted(h);
        let mut found = threading::Found::default();
        for id in ids {
            if let Some(known) = self.state_get(&format!("m/{id}")).await {
                found.messages.insert(id.to_owned(), known);
            }
        }
        found.subject = self
            .state_get(&format!("s/{}\n{subject_key}", h.from))
            .await;
        found
    }

    fn ours<'a>(&self, message_id: &'a str) -> Option<&'a str> {
        message_id.strip_suffix(&format!("@{}", self.domain))
    }

    /// A bounce of one of our mails: that reply failed.
    async fn bounced(&self, message_id: &str, reason: &str) -> Result<(), InboundError> {
        let Some(outbound_id) = self.ours(message_id) else {
            return Ok(());
        };
        let thread = self
            .state_get::<threading::Known>(&format!("m/{message_id}"))
            .await
            .map(|k| k.thread)
            .unwrap_or_default();
        let event = InboundEvent::DeliveryFailed {
            thread: ExternalThread(thread),
            outbound_id: outbound_id.to_owned(),
            reason: format!("bounced: {reason}"),
        };
        match self.ctx.inbound.submit(&self.ctx.id, event).await {
            Ok(_) | Err(InboundError::Rejected(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn keep(&self, name: &str, content_type: &str, bytes: &[u8]) -> Attachment {
        let mut a = Attachment::new(name, content_type, bytes.len() as u64);
        let limit = self.config.max_attachment_bytes;
        if bytes.len() as u64 > limit {
            a.not_kept = Some(format!("larger than the {limit}-byte limit"));
            return a;
        }
        match self.ctx.blobs.put(bytes).await {
            Ok(blob) => a.blob = Some(blob),
            Err(e) => a.not_kept = Some(e.to_string()),
        }
        a
    }
}

/// Whether the server announced new mail since the last call (and forgets what it said).
fn new_mail(session: &mut Session) -> bool {
    let mut news = false;
    while let Ok(r) = session.unsolicited_responses.try_recv() {
        news |= matches!(
            r,
            async_imap::types::UnsolicitedResponse::Exists(_)
                | async_imap::types::UnsolicitedResponse::Recent(_)
        );
    }
    news
}

/// How many of `uids` (at most `most`) the next fetch takes: up to `FETCH_BATCH_BYTES`, and
/// always at least one.
fn batch_len(uids: &[u32], sizes: &HashMap<u32, u64>, most: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for uid in uids.iter().take(most) {
        bytes += sizes.get(uid).copied().unwrap_or(0);
        if n > 0 && bytes > FETCH_BATCH_BYTES {
            break;
        }
        n += 1;
    }
    n.max(1).min(uids.len())
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serialises")
}

fn push_ref(refs: &mut Vec<String>, id: &str) {
    if !refs.iter().any(|r| r == id) {
        refs.push(id.to_owned());
    }
    if refs.len() > MAX_REFERENCES {
        // Keep the root and the newest.
        refs.remove(1);
    }
}

/// An SMTP failure for the outbox.
fn classify(e: lettre::transport::smtp::Error) -> ChannelError {
    if e.is_permanent() {
        let text = e.to_string();
        // 550/551/553: the mailbox does not exist or takes no mail.
        let unreachable = ["550", "551", "553"].iter().any(|c| text.contains(c));
        if unreachable {
            ChannelError::Unreachable(format!("SMTP: {text}"))
        } else {
            ChannelError::Permanent(format!("SMTP: {text}"))
        }
    } else {
        ChannelError::retryable(format!("SMTP: {e}"))
    }
}

#[async_trait::async_trait]
impl Channel for EmailChannel {
    fn id(&self) -> &ChannelId {
        &self.inner.ctx.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threading: true,
            attachments: true,
            ..Capabilities::default()
        }
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<(), ChannelError> {
        self.inner.receive(&shutdown).await;
        Ok(())
    }

    async fn send(
        &self,
        to: &ExternalThread,
        outbound: &Outbound,
    ) -> Result<ExternalMessageId, ChannelError> {
        let inner = &self.inner;
        let info: ThreadInfo = inner
            .state_get(&format!("t/{}", to.0))
            .await
            // Written before the engine stores a mail; missing only for a moment at most
            // (or for good after an erasure, when retries run out).
            .ok_or_else(|| ChannelError::retryable(format!("no mail conversation {to} yet")))?;
        if info.owner.starts_with("unknown:") {
            return Err(ChannelError::Unreachable(format!(
                "the customer's mail had no valid sender address ({}); it cannot be answered by mail",
                info.owner_name.as_deref().unwrap_or("no From")
            )));
        }
        let recipient: lettre::Address = info.owner.parse().map_err(|e| {
            ChannelError::Unreachable(format!("customer address {}: {e}", info.owner))
        })?;
        let message_id = format!("{}@{}", outbound.id, inner.domain);
        let from = match (&outbound.author, inner.config.agent_names) {
            (OutboundAuthor::Agent(name), true) => Mailbox::new(
                Some(match &inner.config.display_name {
                    Some(team) => format!("{name} ({team})"),
                    None => name.clone(),
                }),
                inner.from.email.clone(),
            ),
            _ => inner.from.clone(),
        };
        let (_, already_reply) = threading::subject_key(&info.subject);
        let subject = match (info.subject.as_str(), already_reply) {
            ("", _) => "Re: your message".to_owned(),
            (s, true) => s.to_owned(),
            (s, false) => format!("Re: {s}"),
        };
        let in_reply_to = outbound
            .in_reply_to
            .as_ref()
            .map(|m| m.as_sent().to_owned())
            .or_else(|| info.refs.last().cloned());
        let mut builder = lettre::Message::builder()
            .from(from)
            .to(Mailbox::new(info.owner_name.clone(), recipient))
            .subject(subject)
            .message_id(Some(format!("<{message_id}>")));
        if let Some(irt) = &in_reply_to {
            builder = builder.in_reply_to(format!("<{irt}>"));
        }
        if !info.refs.is_empty() {
            let refs = info
                .refs
                .iter()
                .map(|r| format!("<{r}>"))
                .collect::<Vec<_>>()
                .join(" ");
            builder = builder.references(refs);
        }
        if matches!(
            outbound.author,
            OutboundAuthor::Bot | OutboundAuthor::System
        ) {
            builder = builder.header(AutoSubmitted("auto-replied".into()));
        }
        // Mail has no buttons: the options go as numbered lines; a reply with the number picks.
        let options = outbound
            .numbered_options()
            .map(|o| {
                format!(
                    "<br><br>{}",
                    switchboard_channel::markup::escape_html(&o).replace('\n', "<br>")
                )
            })
            .unwrap_or_default();
        let html = format!(
            "<!doctype html><html><body><div style=\"font-family:sans-serif\">{}{options}</div></body></html>",
            outbound.html("<br>")
        );
        let alternative = MultiPart::alternative()
            .singlepart(SinglePart::plain(outbound.plain_text_with_options()))
            .singlepart(SinglePart::html(html));
        let body = if outbound.attachments.is_empty() {
            alternative
        } else {
            let mut mixed = MultiPart::mixed().multipart(alternative);
            for a in &outbound.attachments {
                let Some(blob) = &a.blob else { continue };
                let bytes = inner
                    .ctx
                    .blobs
                    .get(blob)
                    .await
                    .map_err(|e| ChannelError::retryable(e.to_string()))?
                    .ok_or_else(|| {
                        ChannelError::Permanent(format!("{}: content is gone", a.name))
                    })?;
                let content_type = header::ContentType::parse(&a.content_type).unwrap_or(
                    header::ContentType::parse("application/octet-stream").expect("valid"),
                );
                mixed =
                    mixed.singlepart(MailAttachment::new(a.name.clone()).body(bytes, content_type));
            }
            mixed
        };
        let mail = builder
            .multipart(body)
            .map_err(|e| ChannelError::Permanent(format!("building the mail: {e}")))?;
        match inner.smtp.send(mail).await {
            Ok(_) => {
                inner.health.ok();
                inner.health.sent();
            }
            Err(e) => {
                inner.health.error(&e);
                return Err(classify(e));
            }
        }
        // The customer's answer will name this id: it belongs to this conversation.
        let mut info = info;
        push_ref(&mut info.refs, &message_id);
        let known = threading::Known {
            thread: to.0.clone(),
            owner: info.owner.clone(),
        };
        if let Err(e) = inner
            .state_put(&[
                (format!("m/{message_id}"), json(&known)),
                (format!("t/{}", to.0), json(&info)),
            ])
            .await
        {
            tracing::warn!(channel = %inner.ctx.id, error = %e, "cannot remember a sent mail for threading");
        }
        Ok(ExternalMessageId(message_id))
    }

    fn health(&self) -> ChannelHealth {
        self.inner.health.snapshot()
    }
}

/// `Auto-Submitted` (RFC 3834).
#[derive(Clone)]
struct AutoSubmitted(String);

impl header::Header for AutoSubmitted {
    fn name() -> header::HeaderName {
        header::HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted(s.to_owned()))
    }
    fn display(&self) -> header::HeaderValue {
        header::HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_takes_up_to_its_count_and_bytes_and_never_nothing() {
        const MB: u64 = 1024 * 1024;
        let uids: Vec<u32> = (1..=30).collect();
        let sized = |size: &dyn Fn(u32) -> u64| uids.iter().map(|u| (*u, size(*u))).collect();
        // (sizes, the batch allowed now, mails taken)
        let table: [(HashMap<u32, u64>, usize, usize); 6] = [
            (sized(&|_| 1000), 25, 25),
            (sized(&|_| 1000), 3, 3),
            (sized(&|_| 3 * MB), 25, 2),
            (sized(&|u| if u == 1 { 50 * MB } else { 1000 }), 25, 1),
            (sized(&|u| if u == 2 { 50 * MB } else { 1000 }), 25, 1),
            (HashMap::new(), 0, 1),
        ];
        for (i, (sizes, most, taken)) in table.into_iter().enumerate() {
            assert_eq!(batch_len(&uids, &sizes, most), taken, "row {i}");
        }
        assert_eq!(batch_len(&uids[..2], &HashMap::new(), 25), 2);
    }
}
