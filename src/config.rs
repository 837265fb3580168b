//! The daemon's configuration: one TOML file, typed, every key documented.
//!
//! Loading reports every problem it can find at once, each with `file:line`: the document is
//! parsed with spans, each section is deserialised on its own (so one bad section does not hide
//! the next), and semantic checks (addresses, secrets, directories) run over what parsed.
//! Unknown keys are errors. Relative paths are resolved against the working directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::bot::config::BotConfig;
pub use crate::engine::outbox::OutboxConfig;
pub use crate::store::config::{DEFAULT_CACHE_MB, StoreConfig};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IntoDeserializer};
use switchboard_channel::{BuildError, Channel, ChannelContext, ChannelFactory, ChannelId};
use switchboard_webhook::WebhookConfig;
use switchboard_webhook::webchat::WebchatConfig;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The embedded default, used by `run` without `--config` and by the README's first command.
pub const DEFAULT_CONFIG: &str = include_str!("../config/switchboard.toml");

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the sled database and generated secrets live.
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub bot: BotConfig,
    pub outbox: OutboxConfig,
    /// Channel instances by id (the TOML table key).
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Business hours; without them someone is always on.
    pub hours: Option<crate::routing::hours::HoursConfig>,
    /// Teams, capacity, automatic assignment and presence.
    pub routing: crate::routing::assign::RoutingConfig,
    /// The file this came from (`None`: the embedded default); SIGHUP reads it again.
    pub source: Option<PathBuf>,
}

/// What a config reload found: sections applied at once, sections that need a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub applied: Vec<String>,
    pub need_restart: Vec<String>,
}

impl Config {
    /// Compares a freshly read config with the running one, section by section (channels one
    /// by one). `bot` (but its model), `hours` and `routing.sla` take effect without a
    /// restart.
    pub fn diff(&self, new: &Config) -> ConfigDiff {
        let mut d = ConfigDiff::default();
        let mut check = |name: String, changed: bool, live: bool| {
            if changed {
                if live {
                    d.applied.push(name);
                } else {
                    d.need_restart.push(name);
                }
            }
        };
        check("data_dir".into(), self.data_dir != new.data_dir, false);
        check("store".into(), self.store != new.store, false);
        check("http".into(), self.http != new.http, false);
        check("admin".into(), self.admin != new.admin, false);
        let model = |b: &BotConfig| (b.model_dir.clone(), b.model_languages.clone());
        check(
            "bot.model_dir".into(),
            model(&self.bot) != model(&new.bot),
            false,
        );
        let without_model = |b: &BotConfig| {
            let mut b = b.clone();
            (b.model_dir, b.model_languages) = (None, Vec::new());
            b
        };
        check(
            "bot".into(),
            without_model(&self.bot) != without_model(&new.bot),
            true,
        );
        check("outbox".into(), self.outbox != new.outbox, false);
        check("hours".into(), self.hours != new.hours, true);
        check(
            "routing.sla".into(),
            self.routing.sla != new.routing.sla,
            true,
        );
        let (mut old_r, mut new_r) = (self.routing.clone(), new.routing.clone());
        (old_r.sla, new_r.sla) = (None, None);
        check("routing".into(), old_r != new_r, false);
        let ids: std::collections::BTreeSet<&String> =
            self.channels.keys().chain(new.channels.keys()).collect();
        for id in ids {
            check(
                format!("channels.{id}"),
                self.channels.get(id) != new.channels.get(id),
                false,
            );
        }
        d
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the agent API, inbox page, web hooks and web chat.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body the API accepts.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest file an agent can upload for a reply (`POST /api/v1/attachments`).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: usize,
    /// A request taking longer than this is answered 408.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Mark the inbox's sign-in cookie `Secure` (set when agents reach the daemon over HTTPS,
    /// e.g. behind a TLS proxy).
    #[serde(default)]
    pub secure_cookies: bool,
    /// How long an inbox sign-in lasts, in hours.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// Requests per minute one IP address may make to the public endpoints: web chat
    /// sessions and messages, and apart from those, inbox sign-in; more get 429 with
    /// `Retry-After`. 0: no limit.
    #[serde(default = "default_per_ip")]
    pub requests_per_minute_per_ip: u32,
    /// Behind a reverse proxy: take the client's address from the last `X-Forwarded-For`
    /// entry. Only with a proxy that sets it, or clients could pick their own address.
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Event streams (`/api/v1/events`) one agent may hold open at once.
    #[serde(default = "default_streams_per_agent")]
    pub max_event_streams_per_agent: usize,
    /// Web chat event streams (`/chat/{channel}/events`) one IP address may hold open at
    /// once; more get 429 with `Retry-After`. 0: no limit.
    #[serde(default = "default_chat_streams_per_ip")]
    pub max_chat_streams_per_ip: usize,
    /// A connection must send a complete request head within this many seconds of opening
    /// or of its previous response, or it is closed (slow or idle connections).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Open connections at most; also kept below the open-files limit. When full, the
    /// oldest connection that has not sent a request yet is closed to make room.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_chat_streams_per_ip() -> usize {
    64
}
fn default_header_timeout() -> u64 {
    10
}
fn default_max_connections() -> usize {
    4096
}

fn default_per_ip() -> u32 {
    120
}
fn default_streams_per_agent() -> usize {
    8
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_max_upload() -> usize {
    20 * 1024 * 1024
}
fn default_request_timeout() -> u64 {
    30
}
fn default_session_hours() -> u64 {
    7 * 24
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            max_upload_bytes: default_max_upload(),
            request_timeout_secs: default_request_timeout(),
            secure_cookies: false,
            session_hours: default_session_hours(),
            requests_per_minute_per_ip: default_per_ip(),
            trust_forwarded_for: false,
            max_event_streams_per_agent: default_streams_per_agent(),
            max_chat_streams_per_ip: default_chat_streams_per_ip(),
            header_timeout_secs: default_header_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Name of the first admin agent, created on first start.
    #[serde(default = "default_admin_name")]
    pub name: String,
    /// The admin's API token, from an environment variable.
    pub token_env: Option<String>,
    /// The admin's API token, from a file.
    pub token_file: Option<PathBuf>,
}

fn default_admin_name() -> String {
    "admin".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            name: default_admin_name(),
            token_env: None,
            token_file: None,
        }
    }
}

/// The connectors of this build: `Variant: its config type`, one line each. The config
/// type is the connector's [`ChannelFactory`] (its `type = "..."` name, validation, build);
/// the variant is that name in CamelCase.
macro_rules! channels {
    ($($variant:ident: $config:ty),* $(,)?) => {
        /// One channel instance; `type` picks the connector.
        #[derive(Debug, Clone, Deserialize, PartialEq)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum ChannelConfig {
            $($variant($config)),*
        }

        impl ChannelConfig {
            /// Every connector's `type` name, in the order listed.
            pub const TYPES: &'static [&'static str] = &[$(<$config as ChannelFactory>::TYPE),*];

            /// The connector's `type` name.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$config as ChannelFactory>::TYPE),*
                }
            }

            /// The connector's own checks of its section.
            pub fn validate(&self, id: &ChannelId) -> Vec<String> {
                match self {
                    $(Self::$variant(c) => c.validate(id)),*
                }
            }

            /// Builds the channel (no network yet).
            pub async fn build(&self, ctx: ChannelContext) -> Result<Arc<dyn Channel>, BuildError> {
                match self {
                    $(Self::$variant(c) => c.clone().build(ctx).await),*
                }
            }
        }
    };
}

channels! {
    Webhook: WebhookConfig,
    Webchat: WebchatConfig,
    Telegram: switchboard_telegram::TelegramConfig,
    Discord: switchboard_discord::DiscordConfig,
    Email: switchboard_email::EmailConfig,
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment variables, line by line (so
/// line numbers stay true); comment lines are left alone. systemd sets `STATE_DIRECTORY` and
/// `CONFIGURATION_DIRECTORY` for the unit, so one config file serves a checkout and a service.
fn interpolate(text: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') || !line.contains("${") {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                problems.push(Problem {
                    line: Some(n + 1),
                    message: "`${` without a closing `}`".into(),
                });
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            let value = if !valid {
                problems.push(Problem {
                    line: Some(n + 1),
                    message: format!("`${{{inner}}}`: variable names are A-Z, 0-9 and _"),
                });
                String::new()
            } else {
                match (var(name).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) if v.contains(['\n', '"', '\\']) => {
                        problems.push(Problem {
                            line: Some(n + 1),
                            message: format!(
                                "environment variable {name} holds a newline, quote or backslash"
                            ),
                        });
                        String::new()
                    }
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_owned(),
                    (None, None) => {
                        problems.push(Problem {
                            line: Some(n + 1),
                            message: format!(
                                "environment variable {name} is not set (give a default: ${{{name}:-...}})"
                            ),
                        });
                        String::new()
                    }
                }
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub message: String,
}

/// All problems of one config file.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: {}", self.file, line, p.message)?,
                None => write!(f, "{}: {}", self.file, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            problems: vec![Problem {
                line: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        let mut config = Config::parse(&text, &file)?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parses and checks `text`; `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let text = &interpolate(text, &|name| std::env::var(name).ok()).map_err(|problems| {
            ConfigErrors {
                file: file.to_owned(),
                problems,
            }
        })?;
        let mut p = Parser {
            text,
            problems: Vec::new(),
        };
        let config = p.parse();
        match config {
            Some(c) if p.problems.is_empty() => Ok(c),
            _ => Err(ConfigErrors {
                file: file.to_owned(),
                problems: p.problems,
            }),
        }
    }

    /// Where the running daemon writes backups.
    pub fn backups_dir(&self) -> PathBuf {
        self.store
            .backups_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.http.listen.parse().expect("checked at load")
    }

    /// Warnings that do not stop the daemon (inline secrets and the like).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        match &self.bot.model_dir {
            None => w.push(
                "[bot] no model_dir: the bot matches words only, answers fewer questions and hands off more (see README, \"The bot\")".into(),
            ),
            Some(dir) if !crate::bot::embed::Embedder::present(dir) => w.push(format!(
                "[bot] model_dir {} has no model.safetensors: the bot matches words only, answers fewer questions and hands off more (scripts/fetch-model puts the default model there)",
                dir.display()
            )),
            Some(_) => {}
        }
        for (id, ch) in &self.channels {
            let inline = match ch {
                ChannelConfig::Webhook(h) => h.secret.is_some(),
                ChannelConfig::Telegram(t) => t.token.is_some() || t.webhook_secret.is_some(),
                ChannelConfig::Discord(d) => d.token.is_some(),
                ChannelConfig::Email(e) => e.imap.password.is_some() || e.smtp.password.is_some(),
                ChannelConfig::Webchat(_) => false,
            };
            if inline {
                w.push(format!(
                    "channel {id}: a secret is inline; use *_env or *_file outside development"
                ));
            }
        }
        // Zeros that switch a limit off: say so, in case 0 was meant as "none allowed".
        let mut off = |zero: bool, key: String, what: &str| {
            if zero {
                w.push(format!("{key} = 0: {what} (0 turns it off)"));
            }
        };
        off(
            self.store.min_free_mb == 0,
            "[store] min_free_mb".into(),
            "no disk reserve; a full disk stops the store until a restart",
        );
        off(
            self.http.requests_per_minute_per_ip == 0,
            "[http] requests_per_minute_per_ip".into(),
            "no limit on web chat and sign-in requests per IP address",
        );
        off(
            self.http.max_chat_streams_per_ip == 0,
            "[http] max_chat_streams_per_ip".into(),
            "no limit on web chat event streams per IP address",
        );
        for (id, ch) in &self.channels {
            let (messages, streams) = match ch {
                ChannelConfig::Webhook(h) => (h.max_messages_per_minute, None),
                ChannelConfig::Webchat(c) => {
                    (c.max_messages_per_minute, Some(c.max_streams_per_session))
                }
                _ => continue,
            };
            off(
                messages == 0,
                format!("[channels.{id}] max_messages_per_minute"),
                "no limit on messages per customer",
            );
            off(
                streams == Some(0),
                format!("[channels.{id}] max_streams_per_session"),
                "no limit on event streams per chat session",
            );
        }
        w
    }
}

/// The size of the file system holding `dir` (or its nearest existing parent), MiB.
fn disk_total_mb(dir: &Path) -> Option<u64> {
    let mut at = dir;
    loop {
        if at.exists() {
            break;
        }
        at = at.parent()?;
    }
    let at = if at.as_os_str().is_empty() {
        Path::new(".")
    } else {
        at
    };
    crate::store::disk::total_bytes(at)
        .ok()
        .map(|b| b / (1024 * 1024))
}

/// The span of `key` inside a section, or of the section itself.
fn key_span(section: Option<&Spanned<DeValue<'_>>>, key: &str) -> Option<std::ops::Range<usize>> {
    let section = section?;
    if let DeValue::Table(t) = section.get_ref()
        && let Some((_, v)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == key)
    {
        return Some(v.span());
    }
    Some(section.span())
}

struct Parser<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

impl<'a> Parser<'a> {
    fn problem(&mut self, span: Option<std::ops::Range<usize>>, message: impl Into<String>) {
        let line = span.map(|s| line_of(self.text, s.start));
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }

    fn section<T: DeserializeOwned + Default>(
        &mut self,
        value: Option<&Spanned<DeValue<'a>>>,
        name: &str,
    ) -> T {
        match value {
            None => T::default(),
            Some(v) => self.value(v, name).unwrap_or_default(),
        }
    }

    fn value<T: DeserializeOwned>(&mut self, v: &Spanned<DeValue<'a>>, name: &str) -> Option<T> {
        let span = v.span();
        match T::deserialize(v.clone().into_deserializer()) {
            Ok(t) => Some(t),
            Err(e) => {
                let at = e.span().or(Some(span));
                self.problem(at, format!("[{name}] {}", e.message()));
                None
            }
        }
    }

    fn parse(&mut self) -> Option<Config> {
        let root = match DeTable::parse(self.text) {
            Ok(r) => r.into_inner(),
            Err(e) => {
                let span = e.span();
                self.problem(span, e.message().to_owned());
                return None;
            }
        };
        let mut data_dir = PathBuf::from("./data");
        let mut sections: BTreeMap<&str, &Spanned<DeValue<'_>>> = BTreeMap::new();
        for (key, value) in root.iter() {
            let k = key.get_ref().as_ref();
            match k {
                "data_dir" => {
                    if let Some(d) = self.value::<PathBuf>(value, "data_dir") {
                        data_dir = d;
                    }
                }
                "store" | "http" | "admin" | "bot" | "outbox" | "channels" | "hours"
                | "routing" => {
                    sections.insert(k, value);
                }
                other => self.problem(
                    Some(key.span()),
                    format!(
                        "unknown key `{other}` (expected data_dir, store, http, admin, bot, outbox, channels, hours, routing)"
                    ),
                ),
            }
        }
        let store: StoreConfig = self.section(sections.get("store").copied(), "store");
        let http: HttpConfig = self.section(sections.get("http").copied(), "http");
        let admin: AdminConfig = self.section(sections.get("admin").copied(), "admin");
        let bot: BotConfig = self.section(sections.get("bot").copied(), "bot");
        let outbox: OutboxConfig = self.section(sections.get("outbox").copied(), "outbox");
        let hours = sections.get("hours").and_then(|v| {
            let h: crate::routing::hours::HoursConfig = self.value(v, "hours")?;
            match crate::routing::hours::BusinessHours::from_config(&h) {
                Ok(_) => Some(h),
                Err(e) => {
                    self.problem(Some(v.span()), format!("[hours] {e}"));
                    None
                }
            }
        });
        let routing: crate::routing::assign::RoutingConfig =
            self.section(sections.get("routing").copied(), "routing");
        for team in &routing.teams {
            if team.name.trim().is_empty() {
                self.problem(
                    key_span(sections.get("routing").copied(), "teams"),
                    "[[routing.teams]] every team needs a name",
                );
            }
            if let Some(l) = team
                .languages
                .iter()
                .find(|l| !matches!(l.as_str(), "zh" | "en"))
            {
                self.problem(
                    key_span(sections.get("routing").copied(), "teams"),
                    format!(
                        "[[routing.teams]] {}: language `{l}` is not zh or en",
                        team.name
                    ),
                );
            }
        }
        for team in &routing.teams {
            if let Some(Err(e)) = team
                .hours
                .as_ref()
                .map(crate::routing::hours::BusinessHours::from_config)
            {
                self.problem(
                    key_span(sections.get("routing").copied(), "teams"),
                    format!("[[routing.teams]] {}: hours: {e}", team.name),
                );
            }
        }
        for (agent, shift) in &routing.shifts {
            if let Err(e) = crate::routing::hours::BusinessHours::from_config(shift) {
                self.problem(
                    key_span(sections.get("routing").copied(), "shifts"),
                    format!("[routing.shifts.{agent}] {e}"),
                );
            }
        }
        if let Some(sla) = &routing.sla {
            if sla.due_soon_percent > 100 {
                self.problem(
                    key_span(sections.get("routing").copied(), "sla"),
                    "[routing.sla] due_soon_percent must be at most 100",
                );
            }
            if let Some(t) = sla
                .teams
                .keys()
                .find(|t| !routing.teams.iter().any(|team| &team.name == *t))
            {
                self.problem(
                    key_span(sections.get("routing").copied(), "sla"),
                    format!("[routing.sla.teams] `{t}` is not a team in [[routing.teams]]"),
                );
            }
            if let Some(p) = sla
                .priorities
                .keys()
                .find(|p| !matches!(p.as_str(), "low" | "normal" | "high" | "urgent"))
            {
                self.problem(
                    key_span(sections.get("routing").copied(), "sla"),
                    format!("[routing.sla] priority `{p}` is not low, normal, high or urgent"),
                );
            }
        }
        let mut channels = BTreeMap::new();
        if let Some(v) = sections.get("channels") {
            match v.get_ref() {
                DeValue::Table(table) => {
                    for (id, value) in table.iter() {
                        let id = id.get_ref().to_string();
                        let span = value.span();
                        if let Some(ch) =
                            self.value::<ChannelConfig>(value, &format!("channels.{id}"))
                        {
                            self.check_channel(&id, &ch, span);
                            channels.insert(id, ch);
                        }
                    }
                }
                _ => self.problem(
                    Some(v.span()),
                    "[channels] must be a table of channel tables",
                ),
            }
        }
        let at = |section: &str, key: &str| key_span(sections.get(section).copied(), key);
        if http.listen.parse::<SocketAddr>().is_err() {
            self.problem(
                at("http", "listen"),
                format!(
                    "[http] listen `{}` is not an address like 127.0.0.1:8080",
                    http.listen
                ),
            );
        }
        if http.max_body_bytes == 0 {
            self.problem(
                at("http", "max_body_bytes"),
                "[http] max_body_bytes must be above 0",
            );
        }
        if !(1..=300).contains(&http.header_timeout_secs) {
            self.problem(
                at("http", "header_timeout_secs"),
                "[http] header_timeout_secs must be 1 to 300 (seconds a request head may take)",
            );
        }
        if http.max_connections == 0 {
            self.problem(
                at("http", "max_connections"),
                "[http] max_connections must be above 0",
            );
        }
        if !bot.kb_dir.is_dir() {
            self.problem(
                at("bot", "kb_dir"),
                format!("[bot] kb_dir {} is not a directory", bot.kb_dir.display()),
            );
        }
        if !(bot.max_wrong_rate > 0.0 && bot.max_wrong_rate < 1.0) {
            self.problem(
                at("bot", "max_wrong_rate"),
                format!(
                    "[bot] max_wrong_rate {} must be above 0 and below 1 (a share of all questions, e.g. 0.03)",
                    bot.max_wrong_rate
                ),
            );
        }
        for (name, p) in [("semantic", &bot.semantic), ("lexical", &bot.lexical)] {
            for (key, v) in [
                ("answer", p.answer),
                ("clarify", p.clarify),
                ("margin", p.margin),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    self.problem(
                        at("bot", name),
                        format!(
                            "[bot.{name}] {key} = {v} is a score threshold: it must be in 0..1"
                        ),
                    );
                }
            }
            if !(p.clarify <= p.answer
                && (0.0..=1.0).contains(&p.lexical_weight)
                && (0.0..=1.0).contains(&p.centroid_weight)
                && p.top_k >= 1)
            {
                self.problem(
                    at("bot", name),
                    format!(
                        "[bot.{name}] needs clarify <= answer, lexical_weight and centroid_weight in 0..1, top_k >= 1"
                    ),
                );
            }
        }
        if bot.max_misses == 0 {
            self.problem(
                at("bot", "max_misses"),
                "[bot] max_misses must be at least 1",
            );
        }
        if store.min_free_mb > 0
            && let Some(total) = disk_total_mb(&data_dir)
            && store.min_free_mb >= total
        {
            self.problem(
                at("store", "min_free_mb"),
                format!(
                    "[store] min_free_mb = {} is more than the whole disk under data_dir ({total} MiB): nothing could ever be stored",
                    store.min_free_mb
                ),
            );
        }
        if store.cache_mb < 4 {
            self.problem(
                at("store", "cache_mb"),
                "[store] cache_mb must be at least 4",
            );
        }
        if outbox.concurrency == 0 || outbox.max_attempts == 0 {
            self.problem(
                at("outbox", "concurrency"),
                "[outbox] concurrency and max_attempts must be above 0",
            );
        }
        if admin.token_env.is_some() && admin.token_file.is_some() {
            self.problem(
                at("admin", "token_file"),
                "[admin] give token_env or token_file, not both",
            );
        }
        Some(Config {
            data_dir,
            store,
            http,
            admin,
            bot,
            outbox,
            channels,
            hours,
            routing,
            source: None,
        })
    }

    fn check_channel(&mut self, id: &str, ch: &ChannelConfig, span: std::ops::Range<usize>) {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.problem(
                Some(span.clone()),
                format!("channel id `{id}` may use only letters, digits, - and _"),
            );
        }
        for p in ch.validate(&switchboard_channel::ChannelId::new(id)) {
            self.problem(Some(span.clone()), p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_fill_in_with_defaults_and_problems_name_their_line() {
        let env = |n: &str| match n {
            "STATE_DIRECTORY" => Some("/var/lib/switchboard".to_owned()),
            "BAD" => Some("a\"b".to_owned()),
            _ => None,
        };
        assert_eq!(
            interpolate(
                "data_dir = \"${STATE_DIRECTORY:-./data}\"\nkb = \"${CONFIGURATION_DIRECTORY:-config}/kb\"\n# ${NOT_EXPANDED}\n",
                &env
            )
            .unwrap(),
            "data_dir = \"/var/lib/switchboard\"\nkb = \"config/kb\"\n# ${NOT_EXPANDED}\n"
        );
        let problems = interpolate(
            "a = 1\nb = \"${MISSING}\"\nc = \"${BAD}\"\nd = \"${lower}\"\ne = \"${OPEN\"\n",
            &env,
        )
        .unwrap_err();
        let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(2), Some(3), Some(4), Some(5)], "{problems:?}");
        assert!(problems[0].message.contains("MISSING is not set"));
    }

    #[test]
    fn each_connector_is_named_in_config_files_by_its_factory_type() {
        // serde names a variant in snake case; the factory's TYPE must be that same name, so a
        // section written with `type = TYPE` reaches that connector.
        for (ty, rest) in ChannelConfig::TYPES.iter().zip([
            "secret = \"0123456789abcdef0123\"",
            "",
            "token = \"1:x\"",
            "token = \"x\"",
            "address = \"a@b.example\"\n[imap]\nhost = \"h\"\nusername = \"u\"\npassword = \"p\"\n[smtp]\nhost = \"h\"\nusername = \"u\"\npassword = \"p\"",
        ]) {
            let example = format!("type = \"{ty}\"\n{rest}");
            let parsed: Result<ChannelConfig, _> = toml::from_str(&example);
            match parsed {
                Ok(c) => assert_eq!(c.type_name(), *ty),
                Err(e) => assert!(
                    !e.to_string().contains("unknown variant"),
                    "{ty}: serde does not know it: {e}"
                ),
            }
        }
    }

    #[test]
    fn embedded_default_is_valid() {
        // Tests run from the package root, where config/kb exists.
        let c = Config::parse(DEFAULT_CONFIG, "default").expect("default config parses");
        assert_eq!(c.http.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.channels.contains_key("webhook"));
        assert!(c.channels.contains_key("webchat"));
    }

    #[test]
    fn a_team_rule_with_an_unknown_escalation_reason_is_refused_with_its_line() {
        let team = "[[routing.teams]]\nname = \"accounts\"\nmembers = [\"li\"]\nreasons = [\"sensitive\", \"angry\"]\n";
        let err = Config::parse(team, "t.toml").unwrap_err();
        let p = err
            .problems
            .iter()
            .find(|p| p.message.contains("angry"))
            .unwrap_or_else(|| panic!("{err}"));
        assert!(
            p.message.contains("frustrated"),
            "names the known ones: {err}"
        );
        assert!(p.line.is_some(), "{err}");
        let ok = team.replace("\"angry\"", "\"frustrated\"");
        if let Err(e) = Config::parse(&ok, "t.toml") {
            panic!("{ok}: {e}");
        }
    }

    #[test]
    fn a_wrong_rate_outside_zero_and_one_is_refused_with_its_line() {
        for bad in ["0.0", "1.5", "-0.1"] {
            let text = format!("[bot]\nkb_dir = \"config/kb\"\nmax_wrong_rate = {bad}\n");
            let err = Config::parse(&text, "t.toml").unwrap_err();
            let p = err
                .problems
                .iter()
                .find(|p| p.message.contains("max_wrong_rate"))
                .unwrap_or_else(|| panic!("{bad}: {err}"));
            assert_eq!(p.line, Some(3), "{bad}: {err}");
        }
        let ok = "[bot]\nkb_dir = \"config/kb\"\nmax_wrong_rate = 0.05\n";
        assert!(Config::parse(ok, "t.toml").is_ok());
    }

    #[test]
    fn meaningless_values_are_refused_and_zeros_that_switch_a_limit_off_are_named() {
        let kb = "[bot]\nkb_dir = \"config/kb\"\n";
        // (extra config, what the problem names)
        let table = [
            (
                "[channels.h]\ntype = \"webhook\"\nsecret = \"0123456789abcdef0123\"\nreplay_window_secs = 1000000000000000000\n",
                "replay_window_secs",
            ),
            (
                "[channels.h]\ntype = \"webhook\"\nsecret = \"0123456789abcdef0123\"\nreplay_window_secs = 0\n",
                "replay_window_secs",
            ),
            (
                "[bot.semantic]\nanswer = 1.5\nmargin = 0.02\nclarify = 0.3\n",
                "answer = 1.5",
            ),
            (
                "[bot.lexical]\nanswer = 0.3\nmargin = 0.1\nclarify = -0.2\n",
                "clarify = -0.2",
            ),
            ("[store]\nmin_free_mb = 1000000000000\n", "min_free_mb"),
            (
                "[channels.w]\ntype = \"webchat\"\nallowed_origins = [\"shop.example\"]\n",
                "`shop.example`",
            ),
            (
                "[channels.w]\ntype = \"webchat\"\nallowed_origins = [\"https://shop.example/path\"]\n",
                "no path",
            ),
            (
                "[channels.w]\ntype = \"webchat\"\nallowed_origins = [\"ftp://shop.example\"]\n",
                "https://",
            ),
        ];
        for (extra, named) in table {
            let text = format!("{kb}{extra}");
            let err = Config::parse(&text, "t.toml").unwrap_err();
            assert!(
                err.problems.iter().any(|p| p.message.contains(named)),
                "{extra:?}: {err}"
            );
        }
        let fine = format!(
            "{kb}[channels.w]\ntype = \"webchat\"\nallowed_origins = [\"*\", \"https://shop.example\", \"http://127.0.0.1:8080\"]\nmax_messages_per_minute = 0\n[http]\nrequests_per_minute_per_ip = 0\n"
        );
        let config = Config::parse(&fine, "t.toml").unwrap();
        let warnings = config.warnings().join("\n");
        for named in [
            "[channels.w] max_messages_per_minute = 0: no limit",
            "[http] requests_per_minute_per_ip = 0: no limit",
        ] {
            assert!(warnings.contains(named), "{named}: {warnings}");
        }
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = "\
data_dir = \"/tmp/x\"
colour = \"blue\"

[http]
listen = \"nowhere\"

[store]
cache_mb = \"lots\"

[bot]
kb_dir = \"/definitely/missing\"

[channels.hook]
type = \"webhook\"
callback_url = \"http://127.0.0.1:9/cb\"
secret = \"s\"
secret_env = \"ALSO\"

[channels.other]
type = \"pigeon\"
";
        let err = Config::parse(text, "t.toml").unwrap_err();
        let shown = err.to_string();
        let lines: Vec<Option<usize>> = err.problems.iter().map(|p| p.line).collect();
        assert!(shown.contains("t.toml:2: unknown key `colour`"), "{shown}");
        assert!(
            shown.contains("t.toml:8: [store] invalid type: string \"lots\""),
            "{shown}"
        );
        assert!(
            shown.contains("t.toml:5: [http] listen `nowhere`"),
            "{shown}"
        );
        assert!(shown.contains("t.toml:11: [bot] kb_dir"), "{shown}");
        assert!(shown.contains("pigeon"), "{shown}");
        assert!(shown.contains("give only one"), "{shown}");
        assert!(shown.contains("not an address"), "{shown}");
        assert!(shown.contains("kb_dir"), "{shown}");
        assert!(
            shown.contains("t.toml:13: [channels.hook] callback_url http://127.0.0.1:9/cb points at the non-public address"),
            "{shown}"
        );
        assert!(lines.iter().all(Option::is_some), "{shown}");
        assert_eq!(err.problems.len(), 7, "{shown}");
    }

    #[test]
    fn empty_and_short_signing_secrets_are_refused_with_their_line() {
        for (secret, why) in [
            ("\"\"", "0 bytes"),
            ("\"${SB_SURELY_UNSET_SECRET:-}\"", "0 bytes"),
            ("\"fifteen-bytes!!\"", "15 bytes"),
        ] {
            let text = format!(
                "data_dir = \"/tmp/x\"\n[bot]\nkb_dir = \"config/kb\"\n\n[channels.hook]\ntype = \"webhook\"\nsecret = {secret}\n"
            );
            let err = Config::parse(&text, "t.toml").unwrap_err();
            let shown = err.to_string();
            assert!(
                shown.contains("t.toml:5: [channels.hook]") && shown.contains(why),
                "{secret}: {shown}"
            );
            assert!(shown.contains("at least 16"), "{shown}");
        }
        let ok = "data_dir = \"/tmp/x\"\n[bot]\nkb_dir = \"config/kb\"\n[channels.hook]\ntype = \"webhook\"\nsecret = \"sixteen-bytes-ok\"\n";
        assert!(Config::parse(ok, "t.toml").is_ok());
    }

    #[test]
    fn unknown_keys_inside_sections_are_errors() {
        let err = Config::parse("[http]\nlisten = \"127.0.0.1:1\"\nlsiten = 1\n", "t").unwrap_err();
        assert!(err.to_string().contains("lsiten"), "{err}");
        assert_eq!(err.problems[0].line, Some(3), "{err}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = Config::parse("[http\nlisten = 1\n", "t").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].line, Some(1), "{err}");
    }
}
