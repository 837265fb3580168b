//! The `switchboard` command line. Everything real lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::admin_cli::{AgentCommand, ContactCommand};
use switchboard::config::{Config, DEFAULT_CONFIG};
use tokio_util::sync::CancellationToken;

/// mimalloc: under ingest load glibc's malloc was a sixth of the daemon's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v3): how long freed memory waits before it goes
/// back to the kernel. At its default (10 ms) an idle daemon kept what start-up freed (`bench
/// inbox`: 255 MB instead of 241 MB; 286 instead of 271 with a 64 MiB sled cache); at 0 it
/// holds less than with glibc, at no measured cost to ingest throughput.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Customer-service daemon: chat channels, a bot that answers first, a shared inbox for agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Config file; without it, the embedded default (config/switchboard.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a config file and print every problem with file:line.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Load generators on loopback; they print numbers.
    #[command(subcommand)]
    Bench(Bench),
    /// Knowledge-base tools.
    #[command(subcommand)]
    Kb(Kb),
    /// Agents and their tokens.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Customers: erase one's personal data.
    Contact {
        #[command(subcommand)]
        command: ContactCommand,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Write everything as JSON Lines (stdout, or --output FILE).
    Export {
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Read an export into an empty data directory (daemon stopped); `-` reads stdin.
    Import {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a consistent copy of the data directory to DEST, also while the daemon runs.
    Backup {
        dest: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make the (empty) data directory from a backup; the daemon must be stopped.
    Restore {
        backup: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Counts of what the store holds.
    Stats {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Kb {
    /// Store entries from a JSON Lines file in the live knowledge base (daemon stopped).
    Import {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the live knowledge base (files + store) as JSON Lines.
    Export {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Report duplicate ids and questions, near duplicates and empty answers.
    Check {
        /// A JSON Lines file; without it, the live knowledge base.
        file: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Measure the bot on a knowledge base and labelled queries (JSON Lines).
    Eval(switchboard::kb_cli::EvalArgs),
}

#[derive(Subcommand)]
enum Bench {
    /// Web hook ingest against the physical baseline (sled insert + group commit), one run.
    Ingest {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 1000)]
        conversations: usize,
        /// Requests per server per round.
        #[arg(long, default_value_t = 30_000)]
        requests: usize,
        /// Measured rounds; baseline and ingest alternate.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Fill a store, then measure restart-to-ready, inbox list latency and daemon memory.
    Inbox {
        #[arg(long, default_value_t = 100_000)]
        conversations: usize,
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        /// sled cache of the measured daemon, MiB.
        #[arg(long, default_value_t = switchboard::config::DEFAULT_CACHE_MB)]
        cache_mb: u64,
        /// Keep (and reuse) the filled data in this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// The bot's model for the measured daemon (the fill runs words only: a model would
        /// spend hours on a million messages); without one, words only.
        #[arg(long, default_value = "models/multilingual-e5-small")]
        model: PathBuf,
    },
    /// One bot decision on a large knowledge base: words only and with the model.
    Bot(switchboard::bench::bot::BotArgs),
    /// Assignment with many agents and a long queue: decision latency and passes.
    Routing(switchboard::bench::routing::RoutingArgs),
    /// Telegram through the fake Bot API: inbound end to end, outbound sends.
    #[cfg(feature = "fakes")]
    Telegram(switchboard::bench::telegram::TelegramArgs),
}

/// The admin commands (see `switchboard::admin_cli`).
fn admin(command: Command) -> ExitCode {
    use switchboard::admin_cli as cli;
    init_logging("warn");
    let config_path = match &command {
        Command::Agent { config, .. }
        | Command::Contact { config, .. }
        | Command::Export { config, .. }
        | Command::Import { config, .. }
        | Command::Backup { config, .. }
        | Command::Restore { config, .. }
        | Command::Stats { config, .. } => config.clone(),
        _ => None,
    };
    let config = match load(config_path.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match command {
            Command::Agent { command, .. } => cli::agent(&config, command).await,
            Command::Contact { command, .. } => cli::contact(&config, command).await,
            Command::Export { output, .. } => cli::export(&config, output.as_deref()).await,
            Command::Import { file, .. } => cli::import(&config, &file).await,
            Command::Backup { dest, .. } => cli::backup(&config, &dest).await,
            Command::Restore { backup, .. } => cli::restore(&config, &backup).await,
            Command::Stats { json, .. } => cli::stats(&config, json).await,
            _ => unreachable!("only admin commands come here"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Config::parse(DEFAULT_CONFIG, "<embedded config/switchboard.toml>")
            .map_err(|e| e.to_string()),
    }
}

/// Logs to stderr at `default` level unless RUST_LOG says otherwise, in the form that suits
/// where they go: colours on a terminal; no timestamps and no colours under systemd (the
/// journal stamps every line itself; `JOURNAL_STREAM` tells); one JSON object per line with
/// `SWITCHBOARD_LOG_FORMAT=json` (or `journal`, `text` to choose by hand).
fn init_logging(default: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let chosen = std::env::var("SWITCHBOARD_LOG_FORMAT").ok();
    let format = match chosen.as_deref() {
        Some(f @ ("json" | "journal" | "text")) => f,
        Some(other) => {
            eprintln!("SWITCHBOARD_LOG_FORMAT `{other}` is not json, journal or text; using text");
            "text"
        }
        None if std::env::var_os("JOURNAL_STREAM").is_some() => "journal",
        None => "text",
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().flatten_event(true).init(),
        "journal" => builder.without_time().with_ansi(false).init(),
        _ => builder.with_ansi(ansi).init(),
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("signal received");
    shutdown.cancel();
}

fn main() -> ExitCode {
    // SAFETY: set before any other thread exists (mimalloc's options are not thread safe).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    // What the daemon and its commands create (the store, attachment files, backups,
    // generated secrets) is for its own user only, under systemd (UMask=0077) or not.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("{}: warning: {w}", config.display());
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(bench) => {
            init_logging("warn");
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = runtime.block_on(async move {
                match bench {
                    Bench::Ingest {
                        clients,
                        conversations,
                        requests,
                        rounds,
                    } => switchboard::bench::ingest(clients, conversations, requests, rounds).await,
                    Bench::Inbox {
                        conversations,
                        messages,
                        cache_mb,
                        keep,
                        model,
                    } => {
                        switchboard::bench::inbox(conversations, messages, cache_mb, keep, model)
                            .await
                    }
                    Bench::Bot(args) => switchboard::bench::bot::bot(args).await,
                    Bench::Routing(args) => switchboard::bench::routing::routing(args).await,
                    #[cfg(feature = "fakes")]
                    Bench::Telegram(args) => switchboard::bench::telegram::telegram(args).await,
                }
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Kb(kb) => {
            init_logging("warn");
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = runtime.block_on(async move {
                match kb {
                    Kb::Import { file, config } => {
                        switchboard::kb_cli::import(&file, config.as_deref())
                            .await
                            .map(Some)
                    }
                    Kb::Export { config } => switchboard::kb_cli::export(config.as_deref())
                        .await
                        .map(Some),
                    Kb::Check { file, config } => {
                        switchboard::kb_cli::check(file.as_deref(), config.as_deref())
                            .await
                            .map(|ok| ok.then_some(()))
                    }
                    Kb::Eval(args) => switchboard::kb_cli::eval(args).await.map(Some),
                }
            });
            let result = match result {
                Ok(Some(())) => Ok(()),
                Ok(None) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard kb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Agent { .. }
        | Command::Contact { .. }
        | Command::Export { .. }
        | Command::Import { .. }
        | Command::Backup { .. }
        | Command::Restore { .. }
        | Command::Stats { .. } => admin(cli.command),
        Command::Run { config } => {
            init_logging("info");
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = runtime.block_on(async move {
                let addr = config.listen_addr();
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ([http] listen): {e}"))?;
                let shutdown = CancellationToken::new();
                tokio::spawn(wait_for_signal(shutdown.clone()));
                switchboard::app::serve(config, listener, shutdown).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("switchboard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
