//! The admin commands: `switchboard agent | export | import | backup | contact | stats`.
//!
//! sled lets one process open a database. So each command first tries the data directory
//! itself (the daemon is stopped) and, when a running daemon holds it, works through that
//! daemon's API on its configured listen address with an admin token (`SWITCHBOARD_TOKEN`, else
//! the config's `[admin]` token, else `<data_dir>/admin.token`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::bot::{BotInput, Decision, EscalationReason, Responder};
use crate::config::Config;
use crate::engine::Engine;
use crate::model::{Agent, ContactId, Role};
use crate::store::blobs::FileBlobs;
use crate::store::{SledStore, Store, StoreError, StoreStats};

#[derive(clap::Subcommand)]
pub enum AgentCommand {
    /// Creates an agent and prints its token (shown once).
    Add {
        name: String,
        /// An admin instead of an agent.
        #[arg(long)]
        admin: bool,
    },
    /// Lists agents.
    List,
    /// Disables an agent (by name or id): its token and sign-ins stop working at once.
    Disable { agent: String },
    /// Enables a disabled agent.
    Enable { agent: String },
    /// Issues a new token (printed once); the old one stops working.
    RotateToken { agent: String },
}

#[derive(clap::Subcommand)]
pub enum ContactCommand {
    /// Erases a contact's personal data: identities, conversations, messages, notes, files.
    /// An audit event records that it happened.
    Forget {
        id: u64,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// The store opened here, or the running daemon's API.
enum Target {
    Local(Arc<dyn Store>),
    Remote(Remote),
}

fn target(config: &Config) -> anyhow::Result<Target> {
    match crate::app::open_store(config) {
        Ok(store) => Ok(Target::Local(store)),
        Err(e) if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::InUse(_))) => {
            Remote::new(config).map(Target::Remote)
        }
        Err(e) => Err(e),
    }
}

/// Always hands over: admin commands never run the bot, but the engine needs one.
struct NoBot;

impl Responder for NoBot {
    fn decide(&self, _input: &BotInput<'_>) -> Decision {
        Decision::Escalate {
            reason: EscalationReason::LowConfidence,
            detail: "admin command".into(),
        }
    }
}

/// An engine over the store, for admin commands (nothing runs in the background).
async fn offline_engine(config: &Config, store: &Arc<dyn Store>) -> anyhow::Result<Arc<Engine>> {
    Ok(Engine::new(
        store.clone(),
        Arc::new(NoBot),
        crate::app::engine_settings(config),
    )
    .await?)
}

struct Remote {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Remote {
    fn new(config: &Config) -> anyhow::Result<Remote> {
        let token = admin_token(config).ok_or_else(|| {
            anyhow!(
                "the daemon is running and holds {}; to work through its API, give an admin \
                 token in SWITCHBOARD_TOKEN (or stop the daemon)",
                config.data_dir.display()
            )
        })?;
        let mut addr = config.listen_addr();
        if addr.port() == 0 {
            bail!(
                "the daemon is running and holds {}, but the config listens on port 0, so its \
                 API cannot be found; set [http] listen to a fixed port or stop the daemon",
                config.data_dir.display()
            );
        }
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Ok(Remote {
            http: reqwest::Client::new(),
            base: format!("http://{addr}/api/v1"),
            token,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("the daemon's API at {}", self.base))?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no details");
            bail!("the daemon answered {status}: {message}");
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

fn admin_token(config: &Config) -> Option<String> {
    if let Ok(t) = std::env::var("SWITCHBOARD_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_owned());
    }
    if config.admin.token_env.is_some() || config.admin.token_file.is_some() {
        return switchboard_channel::resolve_secret(
            "[admin] token",
            None,
            config.admin.token_env.as_deref(),
            config.admin.token_file.as_deref(),
        )
        .ok();
    }
    std::fs::read_to_string(config.data_dir.join("admin.token"))
        .ok()
        .map(|t| t.trim().to_owned())
}

/// An agent by id or by name.
fn find_agent<'a>(agents: &'a [Agent], key: &str) -> anyhow::Result<&'a Agent> {
    let by_id = key.parse::<u64>().ok();
    let found: Vec<&Agent> = agents
        .iter()
        .filter(|a| Some(a.id.0) == by_id || a.name == key)
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!("no agent named or numbered `{key}` (see `switchboard agent list`)"),
        _ => bail!("several agents are named `{key}`: give the id"),
    }
}

fn print_agents(agents: &[Agent]) {
    println!(
        "{:>20}  {:<24} {:<6} {:<9} presence",
        "id", "name", "role", "state"
    );
    for a in agents {
        println!(
            "{:>20}  {:<24} {:<6} {:<9} {}",
            a.id,
            a.name,
            match a.role {
                Role::Admin => "admin",
                Role::Agent => "agent",
            },
            if a.disabled { "disabled" } else { "enabled" },
            a.presence.name()
        );
    }
}

fn print_token(agent: &Agent, token: &str) {
    eprintln!(
        "agent {} (id {}): its token follows; it is shown once, keep it safe",
        agent.name, agent.id
    );
    println!("{token}");
}

pub async fn agent(config: &Config, command: AgentCommand) -> anyhow::Result<()> {
    match target(config)? {
        Target::Local(store) => {
            let engine = offline_engine(config, &store).await?;
            let agents = store.agents().await?;
            match command {
                AgentCommand::Add { name, admin } => {
                    let role = if admin { Role::Admin } else { Role::Agent };
                    let (agent, token) = engine.create_agent(&name, role, None, None).await?;
                    print_token(&agent, &token);
                }
                AgentCommand::List => print_agents(&agents),
                AgentCommand::Disable { agent } => {
                    let a = find_agent(&agents, &agent)?;
                    engine.set_agent_disabled(a.id, true, None).await?;
                    println!("disabled {} (id {})", a.name, a.id);
                }
                AgentCommand::Enable { agent } => {
                    let a = find_agent(&agents, &agent)?;
                    engine.set_agent_disabled(a.id, false, None).await?;
                    println!("enabled {} (id {})", a.name, a.id);
                }
                AgentCommand::RotateToken { agent } => {
                    let a = find_agent(&agents, &agent)?;
                    let (agent, token) = engine.rotate_token(a.id, None, None).await?;
                    print_token(&agent, &token);
                }
            }
            store.durable().await?;
        }
        Target::Remote(api) => {
            let agents: Vec<Agent> = serde_json::from_value(api.get("/agents").await?)?;
            match command {
                AgentCommand::Add { name, admin } => {
                    let role = if admin { "admin" } else { "agent" };
                    let v = api
                        .post("/agents", json!({"name": name, "role": role}))
                        .await?;
                    let agent: Agent = serde_json::from_value(v["agent"].clone())?;
                    print_token(&agent, v["token"].as_str().unwrap_or_default());
                }
                AgentCommand::List => print_agents(&agents),
                AgentCommand::Disable { agent } => {
                    let a = find_agent(&agents, &agent)?;
                    api.post(&format!("/agents/{}/disable", a.id), json!({}))
                        .await?;
                    println!("disabled {} (id {})", a.name, a.id);
                }
                AgentCommand::Enable { agent } => {
                    let a = find_agent(&agents, &agent)?;
                    api.post(&format!("/agents/{}/enable", a.id), json!({}))
                        .await?;
                    println!("enabled {} (id {})", a.name, a.id);
                }
                AgentCommand::RotateToken { agent } => {
                    let a = find_agent(&agents, &agent)?;
                    let v = api
                        .post(&format!("/agents/{}/token", a.id), json!({}))
                        .await?;
                    print_token(a, v["token"].as_str().unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}

/// A counter on stderr while a long operation runs (hidden when stderr is not a terminal).
fn spinner(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} records ({per_sec})")
            .expect("valid template"),
    );
    bar.set_message(what.to_owned());
    bar
}

fn print_counts(verb: &str, counts: &crate::admin::transfer::Counts) {
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    eprintln!("{verb} {total} records: {}", parts.join(", "));
}

/// `switchboard export [--output FILE]`: JSON Lines on stdout or into a file.
pub async fn export(config: &Config, output: Option<&Path>) -> anyhow::Result<()> {
    let (store, snapshot) = match target(config)? {
        Target::Local(store) => (store, None),
        Target::Remote(api) => {
            // A consistent copy taken by the daemon, read here, then removed.
            let dir = config
                .data_dir
                .join("backups")
                .join(format!(".export-{}", switchboard_channel::now_ms()));
            api.post("/admin/backup", json!({"dest": dir})).await?;
            let store = SledStore::open(
                &dir.join("db"),
                &crate::store::sled_store::SledOptions::with_cache_mb(64),
            )?;
            (Arc::new(store) as Arc<dyn Store>, Some(dir))
        }
    };
    let mut out: Box<dyn Write + Send> = match output {
        Some(p) if p != Path::new("-") => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        _ => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let bar = spinner("exporting");
    let result =
        crate::admin::transfer::export(store.as_ref(), &mut out, &mut |_| bar.inc(1)).await;
    bar.finish_and_clear();
    drop(store);
    if let Some(dir) = snapshot {
        let _ = std::fs::remove_dir_all(dir);
    }
    print_counts("exported", &result?);
    Ok(())
}

/// `switchboard import FILE`: into an empty data directory, with the daemon stopped.
pub async fn import(config: &Config, file: &Path) -> anyhow::Result<()> {
    let store = match target(config)? {
        Target::Local(store) => store,
        Target::Remote(_) => {
            bail!("the daemon is running: stop it first (import fills an empty data directory)")
        }
    };
    let (mut input, size): (Box<dyn BufRead>, u64) = if file == Path::new("-") {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(std::io::BufReader::new(f)), size)
    };
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "importing [{bar:30}] {bytes}/{total_bytes} ({eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let counts =
        crate::admin::transfer::import(store.as_ref(), &mut input, &mut |b| bar.set_position(b))
            .await
            .with_context(|| format!("importing {}", file.display()))?;
    bar.finish_and_clear();
    print_counts("imported", &counts);

    // Tokens are not exported: give the configured admin a working one.
    let engine = offline_engine(config, &store).await?;
    let agents = store.agents().await?;
    if let Some(admin) = agents
        .iter()
        .find(|a| a.role == Role::Admin && a.name == config.admin.name && !a.disabled)
    {
        let configured = config.admin.token_env.is_some() || config.admin.token_file.is_some();
        if configured {
            eprintln!(
                "admin {} takes the configured token at the next start",
                admin.name
            );
        } else {
            let (_, token) = engine.rotate_token(admin.id, None, None).await?;
            let path = config.data_dir.join("admin.token");
            crate::app::write_secret_file(&path, &token)?;
            eprintln!("admin {}: new token in {}", admin.name, path.display());
        }
    }
    let others = agents
        .iter()
        .filter(|a| a.name != config.admin.name)
        .count();
    if others > 0 {
        eprintln!(
            "{others} other agents were imported without tokens (tokens are never exported): \
             issue them with `switchboard agent rotate-token NAME`"
        );
    }
    store.durable().await?;
    Ok(())
}

/// `switchboard backup DEST`: a consistent copy (database and files) that a daemon can run on
/// as its data directory.
pub async fn backup(config: &Config, dest: &Path) -> anyhow::Result<()> {
    let dest = std::path::absolute(dest)?;
    let report = match target(config)? {
        Target::Local(store) => {
            let blobs = FileBlobs::open(&config.data_dir.join("blobs"))?;
            crate::admin::backup(store.as_ref(), &blobs, &dest).await?
        }
        Target::Remote(api) => serde_json::from_value(
            api.post("/admin/backup", json!({"dest": dest}))
                .await
                .context("the daemon writes the backup itself: it must be able to write there (under systemd, a path inside its state directory)")?,
        )?,
    };
    eprintln!(
        "backup in {}: {} pairs, {} files, {} ms (to restore: `switchboard restore {}` with the daemon stopped)",
        report.path.display(),
        report.pairs,
        report.files,
        report.millis,
        report.path.display()
    );
    Ok(())
}

/// `switchboard restore BACKUP`: makes the configured data directory (without a database
/// yet) from a backup; the daemon must be stopped.
pub async fn restore(config: &Config, from: &Path) -> anyhow::Result<()> {
    let db = config.data_dir.join("db");
    if db.exists() && std::fs::read_dir(&db)?.next().is_some() {
        bail!(
            "{} already holds a database: stop the daemon and move the data directory aside first",
            config.data_dir.display()
        );
    }
    let started = std::time::Instant::now();
    let (from_dir, data_dir) = (from.to_owned(), config.data_dir.clone());
    let pairs =
        tokio::task::spawn_blocking(move || crate::admin::restore(&from_dir, &data_dir)).await??;
    eprintln!(
        "restored {pairs} pairs from {} into {} in {} ms",
        from.display(),
        config.data_dir.display(),
        started.elapsed().as_millis()
    );
    Ok(())
}

fn confirmed(id: u64) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("erasing cannot be undone: add --yes to confirm");
    }
    eprint!(
        "This erases contact {id} and all their conversations for good. Type the id to confirm: "
    );
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim() == id.to_string())
}

pub async fn contact(config: &Config, command: ContactCommand) -> anyhow::Result<()> {
    let ContactCommand::Forget { id, yes } = command;
    if !yes && !confirmed(id)? {
        bail!("not confirmed; nothing was erased");
    }
    let report: crate::admin::ForgetReport = match target(config)? {
        Target::Local(store) => {
            let engine = offline_engine(config, &store).await?;
            // The channels' own copies (web chat transcripts) go too.
            let blobs = Arc::new(FileBlobs::open(&config.data_dir.join("blobs"))?);
            for (name, channel) in &config.channels {
                let channel =
                    crate::app::build_channel(name, channel, &engine, store.as_ref(), &blobs)
                        .await
                        .with_context(|| format!("channel {name}"))?;
                engine.register_channel(channel);
            }
            let kb = crate::bot::live::LiveKb::open(store.as_ref(), &config.bot, None).await?;
            let report =
                crate::admin::forget_contact(&engine, &kb, &blobs, ContactId(id), None).await?;
            // Rewrite the files now rather than at the daemon's next start: every handle
            // closes, then an open rewrites (waiting, bounded, for sled's threads to let go).
            drop((engine, kb, store));
            let mut attempts = 0;
            loop {
                match crate::app::open_store(config) {
                    Ok(_) => break,
                    Err(e)
                        if attempts < 150
                            && matches!(
                                e.downcast_ref::<StoreError>(),
                                Some(StoreError::InUse(_))
                            ) =>
                    {
                        attempts += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        return Err(e.context(
                            "erased; rewriting the files failed (the next start retries)",
                        ));
                    }
                }
            }
            report
        }
        Target::Remote(api) => serde_json::from_value(
            api.post(&format!("/contacts/{id}/forget"), json!({}))
                .await?,
        )?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `switchboard stats`: what the store holds.
pub async fn stats(config: &Config, as_json: bool) -> anyhow::Result<()> {
    let stats: StoreStats = match target(config)? {
        Target::Local(store) => store.stats().await?,
        Target::Remote(api) => serde_json::from_value(api.get("/admin/stats").await?)?,
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    let r = |k: &str| stats.records.get(k).copied().unwrap_or(0);
    println!("conversations  {}", r("conversations"));
    for status in crate::model::Status::ALL {
        let n = stats.statuses.get(status.as_str()).copied().unwrap_or(0);
        println!("  {:<12} {n}", status.as_str());
    }
    for kind in ["messages", "contacts", "notes", "events", "agents"] {
        println!("{kind:<14} {}", r(kind));
    }
    println!(
        "outbox         {} waiting, {} failed",
        r("outbox"),
        r("failed")
    );
    println!("bot queue      {}", r("bot_queue"));
    println!("on disk        {:.1} MB", stats.bytes_on_disk as f64 / 1e6);
    Ok(())
}
