//! Wiring: opens the store, builds the bot, the engine and the channels, serves HTTP, and shuts
//! everything down in order.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use switchboard_channel::{Channel, ChannelContext, ChannelId, Inbound};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::bot::live::LiveKb;
use crate::bot::responder::KbResponder;
use crate::config::{ChannelConfig, Config};
use crate::engine::{Engine, EngineSettings};
use crate::inbox::ApiState;
use crate::model::Role;
use crate::notify::Notifier;
use crate::store::Store;
use crate::store::blobs::FileBlobs;

/// How long shutdown waits for background tasks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Opens the store in `config.data_dir`.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    crate::store::open(&config.data_dir, &config.store).with_context(|| {
        format!(
            "opening the store in {}",
            config.data_dir.join("db").display()
        )
    })
}

/// Loads the sentence-embedding model in `dir`, logging how long it took.
pub fn load_model(dir: &std::path::Path) -> anyhow::Result<Arc<crate::bot::embed::Embedder>> {
    let t = std::time::Instant::now();
    let e = crate::bot::embed::Embedder::load(dir)?;
    tracing::info!(
        model = e.id(),
        ms = t.elapsed().as_millis() as u64,
        "embedding model loaded"
    );
    Ok(Arc::new(e))
}

/// The engine's settings from the config.
pub fn engine_settings(config: &Config) -> EngineSettings {
    EngineSettings {
        handoff_message: config.bot.handoff_message.clone(),
        welcome_message: config.bot.welcome_message.clone(),
        offhours_message: config.bot.offhours_message.clone(),
        handoff_wait_message: config.bot.handoff_wait_message.clone(),
        long_wait_minutes: config.bot.long_wait_minutes,
        long_wait_message: config.bot.long_wait_message.clone(),
        outbox: config.outbox.clone(),
        bot_workers: 32,
    }
}

/// The bot: the live knowledge base (files + store), with the model when one is configured.
pub async fn build_bot(
    config: &Config,
    store: &dyn Store,
) -> anyhow::Result<(Arc<LiveKb>, Arc<KbResponder>)> {
    let model = match &config.bot.model_dir {
        Some(dir) if !crate::bot::embed::Embedder::present(dir) => {
            tracing::warn!(
                model_dir = %dir.display(),
                "NO MODEL: model_dir has no model.safetensors; the bot matches words only, answers fewer questions and hands off more (run scripts/fetch-model)"
            );
            None
        }
        Some(dir) => Some(load_model(dir)?),
        None => None,
    };
    let kb = Arc::new(LiveKb::open(store, &config.bot, model).await?);
    let started = std::time::Instant::now();
    let responder = kb.build(kb.entries().await?, &|_| {})?;
    tracing::info!(
        entries = responder.matcher().entries().len(),
        variants = responder.matcher().variants(),
        model = responder
            .matcher()
            .model_id()
            .unwrap_or("none (lexical only)"),
        ms = started.elapsed().as_millis() as u64,
        "knowledge base loaded"
    );
    Ok((kb, Arc::new(responder)))
}

/// On every SIGHUP: reads the config file again and applies what can change while running
/// (bot settings, business hours, SLA targets), reporting what needs a restart; then rebuilds
/// the bot from the knowledge-base files. A broken file changes nothing.
async fn reload_on_hangup(
    kb: Arc<LiveKb>,
    engine: Arc<Engine>,
    mut running: Config,
    stop: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload the knowledge base through the API");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup.recv() => {}
        }
        if let Some(path) = running.source.clone() {
            match Config::load(&path) {
                Ok(new) => reload_config(&kb, &engine, &mut running, new),
                Err(e) => {
                    tracing::error!("SIGHUP: config not reloaded, the running one stays:\n{e}")
                }
            }
        }
        tracing::info!("SIGHUP: reloading the knowledge base");
        match kb.rebuild().await {
            Ok(r) => engine.set_responder(r),
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the bot keeps its previous knowledge base")
            }
        }
    }
}

/// Applies the live sections of `new` and remembers them in `running`.
fn reload_config(kb: &LiveKb, engine: &Engine, running: &mut Config, new: Config) {
    let diff = running.diff(&new);
    for section in &diff.applied {
        match section.as_str() {
            "bot" => {
                engine.set_settings(engine_settings(&new));
                kb.set_config(&new.bot);
                let model = (
                    running.bot.model_dir.take(),
                    std::mem::take(&mut running.bot.model_languages),
                );
                running.bot = new.bot.clone();
                (running.bot.model_dir, running.bot.model_languages) = model;
            }
            "hours" => {
                match crate::routing::schedule::Schedule::new(
                    new.hours.as_ref(),
                    &running.routing.teams,
                ) {
                    Ok(s) => {
                        engine.set_availability(Arc::new(s));
                        running.hours = new.hours.clone();
                    }
                    Err(e) => tracing::error!(error = %e, "new business hours not applied"),
                }
            }
            "routing.sla" => {
                engine.set_sla(new.routing.sla.clone());
                running.routing.sla = new.routing.sla.clone();
            }
            _ => {}
        }
    }
    if diff.applied.is_empty() && diff.need_restart.is_empty() {
        tracing::info!("SIGHUP: the config is unchanged");
    } else {
        tracing::info!(applied = ?diff.applied, needs_restart = ?diff.need_restart, "SIGHUP: config reloaded");
    }
    if !diff.need_restart.is_empty() {
        tracing::warn!(sections = ?diff.need_restart, "changed in the config file but only applied at the next restart");
    }
}

/// Makes sure the first admin exists, with the configured token if one is configured.
async fn bootstrap_admin(engine: &Engine, config: &Config) -> anyhow::Result<()> {
    let configured = match (&config.admin.token_env, &config.admin.token_file) {
        (None, None) => None,
        (env, file) => Some(
            switchboard_channel::resolve_secret(
                "[admin] token",
                None,
                env.as_deref(),
                file.as_deref(),
            )
            .map_err(anyhow::Error::msg)?,
        ),
    };
    if let Some(t) = &configured
        && t.len() < crate::engine::MIN_TOKEN_LEN
    {
        bail!(
            "[admin] token must be at least {} characters",
            crate::engine::MIN_TOKEN_LEN
        );
    }
    let agents = engine.store().agents().await?;
    let admin = agents
        .iter()
        .find(|a| a.role == Role::Admin && a.name == config.admin.name);
    match (admin, configured) {
        (Some(a), Some(token)) => {
            if a.token_hash != engine.hash_token(&token) {
                engine.rotate_token(a.id, None, Some(token)).await?;
                tracing::info!(admin = %a.name, "admin token set from the configuration");
            }
        }
        (Some(_), None) => {}
        (None, token) => {
            let generated = token.is_none();
            let (agent, token) = engine
                .create_agent(&config.admin.name, Role::Admin, None, token)
                .await?;
            if generated {
                let path = config.data_dir.join("admin.token");
                write_secret_file(&path, &token)?;
                tracing::info!(admin = %agent.name, path = %path.display(), "created the first admin; its API token is in this file");
            } else {
                tracing::info!(admin = %agent.name, "created the first admin with the configured token");
            }
        }
    }
    Ok(())
}

pub(crate) fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

pub(crate) async fn build_channel(
    id: &str,
    config: &ChannelConfig,
    engine: &Arc<Engine>,
    store: &dyn Store,
    blobs: &Arc<FileBlobs>,
) -> anyhow::Result<Arc<dyn Channel>> {
    let id = ChannelId::new(id);
    let ctx = ChannelContext {
        state: store.channel_state(&id).await?,
        inbound: engine.clone() as Arc<dyn Inbound>,
        blobs: blobs.clone(),
        id: id.clone(),
    };
    let channel = config
        .build(ctx)
        .await
        .with_context(|| format!("building [channels.{id}] ({})", config.type_name()))?;
    Ok(channel)
}

/// What every request passes through first: the per-IP limit on public routes, then the
/// request is counted and timed for `/metrics`. One middleware for both: each `from_fn` layer
/// clones the service stack below it for every request.
struct Edge {
    metrics: Arc<crate::metrics::Metrics>,
    limit: crate::inbox::limits::IpLimit,
}

async fn edge(
    axum::extract::State(edge): axum::extract::State<Arc<Edge>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use crate::inbox::limits;
    let started = std::time::Instant::now();
    let response = if let Some(refused) = edge.limit.refuse(&request) {
        refused
    } else if limits::chat_stream(&request) {
        match edge.limit.hold_stream(&request) {
            Err(refused) => {
                edge.metrics.chat_stream_refused("address");
                axum::response::IntoResponse::into_response(refused)
            }
            Ok(slot) => {
                let mut response = next.run(request).await;
                if response.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
                    // The channel's own limit, per chat session.
                    edge.metrics.chat_stream_refused("session");
                    limits::too_many_streams(&mut response);
                    response
                } else if response.status().is_success() {
                    limits::held_open(
                        response,
                        limits::OpenStream::new(edge.metrics.clone(), slot),
                    )
                } else {
                    response
                }
            }
        }
    } else {
        next.run(request).await
    };
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    edge.metrics.http(class, started.elapsed());
    response
}

/// Pings the systemd watchdog while the store's writer and flusher answer: a wedged store
/// stops the pings and systemd restarts the service.
async fn watchdog(
    notifier: Notifier,
    engine: Arc<Engine>,
    interval: Duration,
    stop: CancellationToken,
) {
    let every = interval / 2;
    loop {
        let alive = tokio::time::timeout(every, engine.store().durable()).await;
        match alive {
            Ok(Ok(())) => notifier.notify("WATCHDOG=1"),
            Ok(Err(e)) => tracing::error!(error = %e, "store failing: no watchdog ping"),
            Err(_) => tracing::error!("store did not answer in time: no watchdog ping"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Runs the daemon on `listener` until `shutdown` fires.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    // systemd starts services with 1,024 open files (soft); every connection takes one.
    let open_files = crate::listener::raise_open_files().context("the open-files limit")?;
    let store = open_store(&config)?;
    let (kb, responder) = build_bot(&config, store.as_ref()).await?;
    let engine = Engine::new(store.clone(), responder, engine_settings(&config)).await?;
    let schedule =
        crate::routing::schedule::Schedule::new(config.hours.as_ref(), &config.routing.teams)
            .map_err(anyhow::Error::msg)?;
    if schedule.matters() {
        engine.set_availability(Arc::new(schedule));
    }
    bootstrap_admin(&engine, &config).await?;
    let blobs_dir = config.data_dir.join("blobs");
    let blobs = Arc::new(
        FileBlobs::open(&blobs_dir)
            .with_context(|| format!("opening the file store in {}", blobs_dir.display()))?,
    );

    let tasks_stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut router = crate::inbox::api(
        ApiState {
            engine: engine.clone(),
            kb: kb.clone(),
            ready: ready.clone(),
            shutdown: shutdown.clone(),
            blobs: blobs.clone(),
            sessions: Arc::new(crate::inbox::auth::Sessions::new(
                store.kv("sessions").await?,
                config.http.session_hours,
                config.http.secure_cookies,
            )),
            backups_dir: std::path::absolute(config.backups_dir())?,
        },
        &config.http,
    );
    for (id, channel_config) in &config.channels {
        let channel = build_channel(id, channel_config, &engine, store.as_ref(), &blobs)
            .await
            .with_context(|| format!("channel {id}"))?;
        if let Some(routes) = channel.http_routes() {
            router = router.merge(routes);
        }
        engine.register_channel(channel.clone());
        // Channels stop with the listener (ending their event streams); the engine's workers
        // keep delivering until the HTTP side has finished.
        let stop = shutdown.child_token();
        let span = tracing::info_span!("channel", channel = %id);
        tasks.push(tokio::spawn(
            async move {
                if let Err(e) = channel.run(stop).await {
                    tracing::error!(error = %e, "channel stopped");
                }
            }
            .instrument(span),
        ));
    }
    engine
        .attachments()
        .set_max_per_agent(config.http.max_event_streams_per_agent);
    tasks.extend(engine.start(tasks_stop.clone())?);
    engine.set_sla(config.routing.sla.clone());
    let routing = crate::engine::router::Router::new(engine.clone(), config.routing.clone());
    tasks.push(tokio::spawn(routing.run(tasks_stop.clone())));
    tasks.push(tokio::spawn(reload_on_hangup(
        kb,
        engine.clone(),
        config.clone(),
        tasks_stop.clone(),
    )));

    let router = router.layer(axum::middleware::from_fn_with_state(
        Arc::new(Edge {
            metrics: engine.metrics().clone(),
            limit: crate::inbox::limits::IpLimit::new(
                config.http.requests_per_minute_per_ip,
                config.http.max_chat_streams_per_ip,
                config.http.trust_forwarded_for,
            ),
        }),
        edge,
    ));
    let router = router.layer(TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        Duration::from_secs(config.http.request_timeout_secs),
    ));
    let limits = crate::listener::Limits {
        header_timeout: Duration::from_secs(config.http.header_timeout_secs),
        max_connections: crate::listener::connection_cap(config.http.max_connections, open_files),
    };
    tracing::info!(
        open_files,
        max_connections = limits.max_connections,
        "connections: at most {} open (open-files limit {open_files})",
        limits.max_connections
    );
    let addr: SocketAddr = listener.local_addr()?;
    ready.store(true, Ordering::Relaxed);
    tracing::info!(%addr, "switchboard listening");
    let notifier = Notifier::from_env();
    notifier.notify(&format!("READY=1\nSTATUS=serving on {addr}"));
    if let Some(interval) = Notifier::watchdog() {
        tasks.push(tokio::spawn(watchdog(
            notifier.clone(),
            engine.clone(),
            interval,
            tasks_stop.clone(),
        )));
    }
    let server = crate::listener::serve(
        listener,
        router,
        limits,
        engine.metrics().clone(),
        shutdown.clone(),
    );
    tokio::select! {
        () = server => {},
        // Connections that do not finish within the grace period are cut.
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("open connections did not finish in time; closing them");
        }
    }

    ready.store(false, Ordering::Relaxed);
    notifier.notify("STOPPING=1\nSTATUS=stopping: finishing deliveries under way");
    tracing::info!("shutting down");
    tasks_stop.cancel();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(tasks)).await;
    store.durable().await?;
    tracing::info!("stopped");
    Ok(())
}
