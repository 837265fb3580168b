//! Load generators behind `switchboard bench`. They print numbers; they are not tests.
//!
//! - `ingest`: N concurrent clients POST signed web hook messages (~300-byte bodies) to the
//!   real daemon on loopback, durability on. In the same run, the physical baseline: a bare
//!   axum handler doing one sled insert per request, made durable by the same single-committer
//!   group commit, same body size and concurrency. Reports msg/s, p50/p99 and the ratio.
//! - `inbox`: fills a data directory with M messages in C conversations through the engine,
//!   then starts the real daemon binary on it and reports restart-to-ready, inbox list latency
//!   (50 rows filtered by status) and the daemon's resident memory.
//! - `telegram` (`telegram`, feature `fakes`): updates through the fake Bot API, stored,
//!   decided and answered; raw outbound sends through the connector.
//! - `bot` ([`bot`]): one bot decision on a 10,000-variant knowledge base, words only and
//!   with the model; index build time and memory.

pub mod bot;
pub mod routing;
#[cfg(feature = "fakes")]
pub mod telegram;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use switchboard_channel::now_ms;
use switchboard_webhook::signature;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::sled_store::SledOptions;
use crate::store::{SledStore, Store};

const SECRET: &str = "bench-secret-0123456789";
const ADMIN_TOKEN: &str = "sbt_bench_admin_token_000000000000000000000000000";

/// Latency samples in microseconds.
struct Latencies(Vec<u64>);

impl Latencies {
    fn percentile(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i] as f64 / 1000.0
    }
}

struct LoadResult {
    /// Successful requests per second.
    rate: f64,
    /// Wall time of the whole load, s.
    elapsed: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    /// CPU time of this whole process (server and load generator) per request, µs.
    cpu_us: f64,
}

/// CPU time (user + system) this process has used, in µs. Linux only; 0 elsewhere.
fn process_cpu_us() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) * 1e6 / 100.0
}

/// Sends `total` requests from `clients` concurrent connections; `make` builds request `i`.
async fn load(
    clients: usize,
    total: usize,
    make: Arc<dyn Fn(usize) -> reqwest::RequestBuilder + Send + Sync>,
) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let cpu_start = process_cpu_us();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, errors, make) = (next.clone(), errors.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                match make(i).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = (process_cpu_us() - cpu_start) / total.max(1) as f64;
    let mut lat = Latencies(all);
    LoadResult {
        cpu_us,
        elapsed,
        rate: lat.0.len() as f64 / elapsed,
        p50_ms: lat.percentile(0.50),
        p99_ms: lat.percentile(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn client(clients: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// A ~300-byte message body for conversation `conv`.
fn hook_body(i: usize, conversations: usize) -> String {
    let conv = i % conversations;
    let text = "Hello, I ordered a blue jacket in size M last week (order 48213) and the tracking page has not changed since Monday. Could you check where it is and when it will arrive? Many thanks, Bench Customer";
    serde_json::json!({
        "external_user": format!("bench-user-{conv}"),
        "message_id": format!("bench-{i}"),
        "text": text,
        "user_name": "Bench Customer",
    })
    .to_string()
}

/// The bench's own config: everything on loopback in `dir`; the bot on words only, or on
/// the model in `model`.
fn bench_config(
    dir: &Path,
    callback: &str,
    cache_mb: u64,
    model: Option<&Path>,
    extra: &str,
) -> String {
    // The group-commit linger can be tried without editing code.
    let linger = std::env::var("SWITCHBOARD_BENCH_LINGER_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(250);
    let kb = std::env::current_dir()
        .map(|d| d.join("config/kb"))
        .unwrap_or_else(|_| PathBuf::from("config/kb"));
    let model = match model {
        Some(dir) => format!("model_dir = {:?}", dir.display().to_string()),
        None => String::new(),
    };
    format!(
        r#"
data_dir = "{data}"
[store]
cache_mb = {cache_mb}
commit_linger_us = {linger}
[http]
listen = "127.0.0.1:0"
[admin]
token_env = "SWITCHBOARD_BENCH_ADMIN_TOKEN"
[bot]
kb_dir = "{kb}"
{model}
[channels.hook]
type = "webhook"
secret = "{SECRET}"
callback_url = "{callback}"
allow_private_callback = true
# The bench measures throughput: one customer writes far more than a person would.
max_messages_per_minute = 0
{extra}
"#,
        data = dir.join("data").display(),
        kb = kb.display(),
    )
}

/// A callback receiver that accepts everything; returns its URL and how many it received.
async fn sink() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move || {
            count.fetch_add(1, Ordering::Relaxed);
            async { StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/cb", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, received))
}

/// The physical baseline: one sled insert per request, group-committed.
async fn baseline_server(dir: &Path) -> anyhow::Result<(SocketAddr, Arc<SledStore>)> {
    let store = Arc::new(SledStore::open(
        dir,
        &SledOptions::with_cache_mb(crate::config::DEFAULT_CACHE_MB),
    )?);
    let counter = Arc::new(AtomicU64::new(0));
    async fn insert(
        State((store, counter)): State<(Arc<SledStore>, Arc<AtomicU64>)>,
        body: Bytes,
    ) -> StatusCode {
        let key = format!("k{}", counter.fetch_add(1, Ordering::Relaxed));
        if store.set_meta(&key, &body).await.is_err() || store.durable().await.is_err() {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        StatusCode::ACCEPTED
    }
    let app = axum::Router::new()
        .route("/insert", axum::routing::post(insert))
        .with_state((store.clone(), counter));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, store))
}

/// Runs the daemon in this process; returns its address and a stop handle.
async fn start_daemon(
    dir: &Path,
    callback: &str,
    cache_mb: u64,
    extra: &str,
) -> anyhow::Result<(
    SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let text = bench_config(dir, callback, cache_mb, None, extra);
    let config = Config::parse(&text, "<bench>").map_err(|e| anyhow::anyhow!("{e}"))?;
    // SAFETY: set before any thread of ours reads the environment concurrently.
    unsafe { std::env::set_var("SWITCHBOARD_BENCH_ADMIN_TOKEN", ADMIN_TOKEN) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let handle = tokio::spawn(crate::app::serve(config, listener, stop.clone()));
    let http = reqwest::Client::new();
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok((addr, stop, handle));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("daemon did not become ready")
}

fn signed(http: &reqwest::Client, url: &str, body: String) -> reqwest::RequestBuilder {
    let ts = now_ms() / 1000;
    let sig = signature::sign(SECRET.as_bytes(), ts, body.as_bytes());
    http.post(url)
        .header("content-type", "application/json")
        .header(signature::TIMESTAMP_HEADER, ts.to_string())
        .header(signature::SIGNATURE_HEADER, sig)
        .body(body)
}

/// Both servers run side by side; rounds alternate between them so that a noisy neighbour
/// hits both alike, and the ratio is taken per round (median reported).
pub async fn ingest(
    clients: usize,
    conversations: usize,
    requests: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let tmp = tempdir()?;
    println!(
        "bench ingest: {clients} clients, {conversations} conversations, {rounds} rounds of \
         {requests} requests per server, bodies {} bytes, durability on",
        hook_body(0, 1).len()
    );
    let http = client(clients)?;
    let (base_addr, base_store) = baseline_server(&tmp.join("baseline")).await?;
    let base_url = format!("http://{base_addr}/insert");
    let (callback, callbacks) = sink().await?;
    let (addr, stop, handle) = start_daemon(
        &tmp.join("daemon"),
        &callback,
        crate::config::DEFAULT_CACHE_MB,
        "",
    )
    .await?;
    let hook_url = format!("http://{addr}/hooks/hook/messages");

    let baseline_round = |_round: usize| {
        let (h, url, body) = (http.clone(), base_url.clone(), Bytes::from(hook_body(0, 1)));
        load(
            clients,
            requests,
            Arc::new(move |_| h.post(&url).body(body.clone())),
        )
    };
    // Each round sends new message ids, so nothing is a duplicate. Bodies and signatures are
    // made before the clock starts, as the baseline's body is: the load generator's own
    // JSON building is not the daemon's cost.
    let ingest_round = |round: usize| {
        let (h, url) = (http.clone(), hook_url.clone());
        let first = round * requests;
        let ts = now_ms() / 1000;
        let signed: Arc<Vec<(Bytes, String)>> = Arc::new(
            (0..requests)
                .map(|i| {
                    let body = hook_body(first + i, conversations);
                    let sig = signature::sign(SECRET.as_bytes(), ts, body.as_bytes());
                    (Bytes::from(body), sig)
                })
                .collect(),
        );
        let ts = ts.to_string();
        load(
            clients,
            requests,
            Arc::new(move |i| {
                let (body, sig) = &signed[i];
                h.post(&url)
                    .header("content-type", "application/json")
                    .header(signature::TIMESTAMP_HEADER, &ts)
                    .header(signature::SIGNATURE_HEADER, sig)
                    .body(body.clone())
            }),
        )
    };
    // Warm-up (not counted): connections, caches, the first conversations.
    baseline_round(0).await;
    ingest_round(0).await;
    bot_drained(&http, addr).await?;
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    for round in 1..=rounds {
        let base = baseline_round(round).await;
        let before = callbacks.load(Ordering::Relaxed);
        let e2e = ingest_round(round).await;
        // The bot decides after the acknowledgement; its backlog must not run into the next
        // baseline round. The time it needs is reported, and counted in the settled rate.
        let drain = bot_drained(&http, addr).await?;
        let answered = callbacks.load(Ordering::Relaxed) - before;
        let settled = requests as f64 / (e2e.elapsed + drain);
        println!(
            "round {round}: baseline {:>6.0} req/s (p50 {:.2} ms, p99 {:.2} ms, {:.0} µs CPU)   \
             ingest {:>6.0} msg/s (p50 {:.2} ms, p99 {:.2} ms, {:.0} µs CPU)   ratio {:.2}   \
             errors {}/{}   callbacks {answered}   bot settled +{:.0} ms ({settled:.0} msg/s)",
            base.rate,
            base.p50_ms,
            base.p99_ms,
            base.cpu_us,
            e2e.rate,
            e2e.p50_ms,
            e2e.p99_ms,
            e2e.cpu_us,
            e2e.rate / base.rate,
            base.errors,
            e2e.errors,
            drain * 1000.0
        );
        ratios.push(e2e.rate / base.rate);
        cpu_ratios.push(e2e.cpu_us / base.cpu_us.max(1.0));
    }
    ratios.sort_by(f64::total_cmp);
    cpu_ratios.sort_by(f64::total_cmp);
    println!(
        "ingest / baseline (axum + 1 sled insert + group commit): median ratio {:.2} (min {:.2}, max {:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    println!(
        "CPU per message, ingest / baseline request: median {:.2}x (less sensitive to neighbours \
         than throughput)",
        cpu_ratios[cpu_ratios.len() / 2]
    );
    stop.cancel();
    handle.await??;
    drop(base_store);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// Waits until the daemon's bot has decided every message it holds; returns the wait, s.
async fn bot_drained(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<f64> {
    let t = Instant::now();
    let url = format!("http://{addr}/metrics");
    while t.elapsed() < Duration::from_secs(120) {
        let text = http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .text()
            .await?;
        let backlog = text
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_bot_backlog "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .context("no switchboard_bot_backlog in /metrics")?;
        if backlog == 0.0 {
            return Ok(t.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("the bot did not drain its backlog in 120 s")
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The daemon binary (this executable) as a child process on `config`.
struct Child {
    process: std::process::Child,
    addr: SocketAddr,
}

impl Child {
    fn start(config: &Path) -> anyhow::Result<Child> {
        let mut process = std::process::Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(config)
            .env("SWITCHBOARD_BENCH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn,switchboard::app=info")
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting the daemon")?;
        // The child listens on port 0: its address comes from its log.
        match read_listen_addr(&mut process) {
            Ok(addr) => Ok(Child { process, addr }),
            Err(e) => {
                let _ = process.kill();
                Err(e)
            }
        }
    }

    async fn wait_ready(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(r) = http
                .get(format!("http://{}/readyz", self.addr))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("daemon not ready after 60 s")
    }

    /// SIGTERM, then wait for the exit.
    fn stop(mut self) -> anyhow::Result<()> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status()?;
        let status = self.process.wait()?;
        anyhow::ensure!(status.success(), "daemon exited with {status}");
        Ok(())
    }
}

pub async fn inbox(
    conversations: usize,
    messages: usize,
    cache_mb: u64,
    keep: Option<PathBuf>,
    model: PathBuf,
) -> anyhow::Result<()> {
    let dir = match &keep {
        Some(d) => d.clone(),
        None => tempdir()?,
    };
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("bench.toml");
    let (callback, _) = sink().await?;
    std::fs::write(
        &config_path,
        bench_config(&dir, &callback, cache_mb, None, ""),
    )?;
    let http = client(64)?;
    if !dir.join("data").exists() {
        println!(
            "filling {}: {messages} messages in {conversations} conversations ...",
            dir.display()
        );
        let t = Instant::now();
        let daemon = Child::start(&config_path)?;
        daemon.wait_ready(&http).await?;
        let url = format!("http://{}/hooks/hook/messages", daemon.addr);
        let h = http.clone();
        let fill = load(
            64,
            messages,
            Arc::new(move |i| signed(&h, &url, hook_body(i, conversations))),
        )
        .await;
        // Let the bot finish what the burst left it, as it would between peaks.
        let counts_url = format!("http://{}/api/v1/conversations?limit=1", daemon.addr);
        let mut last = u64::MAX;
        let mut still = 0;
        while still < 20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let page: serde_json::Value = http
                .get(&counts_url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await?
                .json()
                .await?;
            let bot = page["counts"]["bot"].as_u64().unwrap_or(0);
            still = if bot == 0 || bot == last {
                still + 1
            } else {
                0
            };
            last = bot;
        }
        daemon.stop()?;
        println!(
            "filled in {:.1} s ({:.0} msg/s, {} errors)",
            t.elapsed().as_secs_f64(),
            fill.rate,
            fill.errors
        );
    }
    // The measured daemon runs with the model, as a default install does.
    let model = crate::bot::embed::Embedder::present(&model)
        .then(|| std::fs::canonicalize(&model).unwrap_or(model.clone()));
    std::fs::write(
        &config_path,
        bench_config(&dir, &callback, cache_mb, model.as_deref(), ""),
    )?;
    match &model {
        Some(m) => println!("measured daemon: bot model {}", m.display()),
        None => println!("measured daemon: bot on words only (no model; scripts/fetch-model)"),
    }
    let t = Instant::now();
    let daemon = Child::start(&config_path)?;
    daemon.wait_ready(&http).await?;
    println!(
        "restart to ready: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let addr = daemon.addr;
    for query in [
        "status=queued",
        "status=bot",
        "status=queued&order=oldest",
        "status=queued&channel=hook",
    ] {
        let url = format!("http://{addr}/api/v1/conversations?{query}&limit=50");
        let h = http.clone();
        let r = load(
            4,
            2000,
            Arc::new(move |_| h.get(&url).bearer_auth(ADMIN_TOKEN)),
        )
        .await;
        println!(
            "inbox list {query:<28} limit=50: {:>6.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            r.rate, r.p50_ms, r.p99_ms, r.errors
        );
    }
    let url = format!("http://{addr}/api/v1/conversations?limit=1");
    let page: serde_json::Value = http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    println!("counts: {}", page["counts"]);
    if let Some(rss) = rss_mb(daemon.process.id()) {
        println!("daemon RSS after the queries: {rss:.0} MB (sled cache {cache_mb} MiB)");
    }
    daemon.stop()?;
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn read_listen_addr(child: &mut std::process::Child) -> anyhow::Result<SocketAddr> {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().context("child stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line
                .split("addr=")
                .nth(1)
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .context("daemon did not report its address (is another daemon using the data dir?)")
}
