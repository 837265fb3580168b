//! `switchboard kb ...`: knowledge-base tools for operators (import, export, check, eval).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::bot::Decision;
use crate::bot::config::BotConfig;
use crate::bot::embed::{Embedder, NoCache, StateCache, VectorCache};
use crate::bot::kb;
use crate::bot::live::LiveKb;
use crate::bot::matcher::{Matcher, Policies, Policy};
use crate::bot::{calibrate, eval};
use crate::config::Config;
use crate::store::sled_store::SledOptions;
use crate::store::{SledStore, Store};

/// The model to use: the one given, else the one the config in the working directory names.
/// A configured directory without a model is passed over (words only), loudly.
fn model_dir(given: Option<PathBuf>, config: Option<&Config>) -> Option<PathBuf> {
    given.or_else(|| {
        let dir = config.and_then(|c| c.bot.model_dir.clone())?;
        if Embedder::present(&dir) {
            Some(dir)
        } else {
            eprintln!(
                "warning: [bot] model_dir {} has no model.safetensors; words only (run scripts/fetch-model)",
                dir.display()
            );
            None
        }
    })
}

/// `config/switchboard.toml` of the working directory, when there is one.
fn local_config() -> Option<Config> {
    let path = Path::new("config/switchboard.toml");
    path.exists().then(|| Config::load(path).ok()).flatten()
}

/// Embeddings kept in `dir` (a sled directory) between runs, or none. The store is returned
/// to be kept open while the cache is in use.
pub async fn vector_cache(
    dir: Option<&Path>,
) -> anyhow::Result<(Option<SledStore>, Box<dyn VectorCache>)> {
    let Some(dir) = dir else {
        return Ok((None, Box::new(NoCache)));
    };
    let store = SledStore::open(dir, &SledOptions::with_cache_mb(16))?;
    let cache = Box::new(StateCache(store.kv("embeddings").await?));
    Ok((Some(store), cache))
}

pub(crate) fn progress_bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Arguments of `switchboard kb eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub kb: PathBuf,
    #[arg(long)]
    pub queries: PathBuf,
    /// Sentence-transformers directory; default: the model of ./config/switchboard.toml.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also try many thresholds on the same scores and print the best.
    #[arg(long)]
    pub sweep: bool,
    /// Print every query with its decision and best scores.
    #[arg(long)]
    pub verbose: bool,
    /// Keep computed embeddings in this directory (a sled directory) between runs.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Use the config's thresholds as they are instead of calibrating them on the knowledge
    /// base.
    #[arg(long)]
    pub fixed: bool,
    /// What the calibration keeps the estimated wrong-answer rate under.
    #[arg(long, default_value_t = 0.03)]
    pub max_wrong_rate: f64,
    /// Write every query's and every calibration sample's raw scores to this file (JSON
    /// lines), for studying the policy outside the daemon.
    #[arg(long, hide = true)]
    pub dump: Option<PathBuf>,
}

pub async fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let config = local_config();
    let entries = kb::read_jsonl(&args.kb)?;
    let queries = eval::read_queries(&args.queries)?;
    let model = match model_dir(args.model, config.as_ref()) {
        Some(dir) => Some(crate::app::load_model(&dir)?),
        None => None,
    };
    let bot = config.as_ref().map(|c| c.bot.clone()).unwrap_or_default();
    let mut policy = Policies {
        semantic: bot.semantic,
        lexical: bot.lexical,
    };
    let variants: usize = entries.iter().map(|e| e.questions.len()).sum();
    let bar = progress_bar(variants, "embedding questions");
    if model.is_none() || args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (_store, cache) = vector_cache(args.cache.as_deref()).await?;
    let t = Instant::now();
    let matcher = Matcher::build(
        entries,
        model.as_ref().map(|m| (m.clone(), cache.as_ref())),
        &|n| bar.inc(n as u64),
    )
    .context("building the index")?
    .with_model_languages(&bot.model_languages);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    bar.finish_and_clear();
    let t = Instant::now();
    let calibrations = if args.fixed {
        Vec::new()
    } else {
        calibrate::calibrate_policies(&matcher, &mut policy, args.max_wrong_rate)?
    };
    if !calibrations.is_empty() && !args.json {
        println!("calibrated in {:.1} s:", t.elapsed().as_secs_f64());
        for (name, c) in &calibrations {
            println!("  {name}: {}", describe_calibration(c));
        }
    }
    let decided = BotConfig {
        semantic: policy.semantic,
        lexical: policy.lexical,
        ..bot
    };
    let responder =
        crate::bot::live::responder(matcher, &decided, model.as_deref(), cache.as_ref())?;
    let matcher = responder.matcher();
    let scored = eval::score_all(matcher, &queries)?;
    let (decisions, latencies) = eval::decide_all(&responder, &queries);
    if let Some(path) = &args.dump {
        eval::dump(path, matcher, &queries, &scored)?;
    }
    if args.verbose {
        for ((q, s), d) in queries.iter().zip(&scored).zip(&decisions) {
            let ranked = policy.rank(s);
            let top: Vec<String> = ranked
                .iter()
                .take(2)
                .map(|(e, sc)| format!("{} {sc:.2}", matcher.entries()[*e].id))
                .collect();
            let (decision, detail) = match d {
                Decision::Answer { detail, .. } => ("answer", detail),
                Decision::Clarify { detail, .. } => ("clarify", detail),
                Decision::Reply { detail, .. } => ("reply", detail),
                Decision::Escalate { detail, .. } => ("hand over", detail),
            };
            println!(
                "{decision:9} {:40} expect {:28} best {} ({detail})",
                q.text,
                q.expect.as_deref().unwrap_or("(out of scope)"),
                top.join(" | ")
            );
        }
    }
    let report = eval::report(
        matcher, &policy, &queries, &scored, &decisions, latencies, build_ms,
    );
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["calibration"] = serde_json::to_value(
            calibrations
                .iter()
                .map(|(name, c)| (name.to_string(), c))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )?;
        println!("{json}");
    } else {
        print_report(&report);
    }
    if args.sweep {
        let all = |p: Policy| Policy {
            answer: f32::NEG_INFINITY,
            margin: 0.0,
            clarify: f32::NEG_INFINITY,
            ..p
        };
        let everything = Policies {
            semantic: all(policy.semantic),
            lexical: all(policy.lexical),
        };
        let t = eval::Tally::of(matcher, &everything, &queries, &scored);
        println!(
            "\nanswering every query with its best entry: accuracy {:.1}%, wrong {:.1}%",
            t.accuracy() * 100.0,
            t.wrong_rate() * 100.0
        );
        println!(
            "most accurate policies on this set with wrong answers <= 5%, out-of-scope recall >= 60%:"
        );
        for (p, t) in eval::sweep(matcher, &queries, &scored, &policy, 0.05, 0.6) {
            println!(
                "  answer {:.2} margin {:.2} lexical_weight {:.1} top_k {}: accuracy {:.1}%  oos recall {:.1}%  wrong {:.2}%",
                p.answer,
                p.margin,
                p.lexical_weight,
                p.top_k,
                t.accuracy() * 100.0,
                t.oos_recall() * 100.0,
                t.wrong_rate() * 100.0
            );
        }
    }
    Ok(())
}

/// One line: the thresholds a calibration chose and what it expects of them.
pub(crate) fn describe_calibration(c: &calibrate::Calibration) -> String {
    let p = &c.policy;
    let chosen = p.to_string();
    match &c.note {
        Some(note) => format!("{chosen} ({note})"),
        None => format!(
            "{chosen}; estimated from {} held-out questions and {} out of scope: {:.1}% answered right, {:.1}% wrong ({:.1}% of questions it knows, {:.1}% of held-out topics, {:.1}% of chit-chat), {:.1}% one tap away",
            c.in_scope_samples,
            c.out_of_scope_samples,
            c.in_scope_accuracy * 100.0,
            c.wrong_answer_rate * 100.0,
            c.in_scope_wrong * 100.0,
            c.held_out_answered * 100.0,
            c.off_topic_answered * 100.0,
            c.clarify_hit_rate * 100.0
        ),
    }
}

fn print_report(r: &eval::Report) {
    println!(
        "knowledge base: {} entries, {} question variants; index built in {:.0} ms; model: {}",
        r.entries,
        r.variants,
        r.index_build_ms,
        r.model.as_deref().unwrap_or("none (lexical only)")
    );
    println!(
        "queries: {} ({} in scope, {} out of scope)",
        r.queries, r.in_scope, r.out_of_scope
    );
    println!("in-scope accuracy     {:6.1}%", r.in_scope_accuracy * 100.0);
    println!(
        "out-of-scope recall   {:6.1}%",
        r.out_of_scope_recall * 100.0
    );
    println!("wrong-answer rate     {:6.2}%", r.wrong_answer_rate * 100.0);
    println!("clarify rate          {:6.1}%", r.clarify_rate * 100.0);
    println!(
        "clarify hit rate      {:6.1}%  (right entry offered; resolved {:.1}%)",
        r.clarify_hit_rate * 100.0,
        r.resolved_rate * 100.0
    );
    println!("escalate rate         {:6.1}%", r.escalate_rate * 100.0);
    println!(
        "conversation layer    {:6.1}%  (handed over or small talk before the knowledge base)",
        r.conversation_rate * 100.0
    );
    let f = &r.faq_only;
    println!(
        "knowledge base alone: accuracy {:.1}%, out-of-scope recall {:.1}%, wrong {:.2}%, resolved {:.1}%",
        f.in_scope_accuracy * 100.0,
        f.out_of_scope_recall * 100.0,
        f.wrong_answer_rate * 100.0,
        f.resolved_rate * 100.0
    );
    println!(
        "latency per decision  p50 {:.3} ms  p99 {:.3} ms",
        r.latency_p50_ms, r.latency_p99_ms
    );
    for (name, p) in [
        ("semantic", &r.semantic_policy),
        ("lexical", &r.lexical_policy),
    ] {
        println!("{name} policy: {p}");
    }
}

/// The config given, or the embedded default.
pub(crate) fn config_or_default(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p).map_err(|e| anyhow::anyhow!("{e}")),
        None => Config::parse(
            crate::config::DEFAULT_CONFIG,
            "<embedded config/switchboard.toml>",
        )
        .map_err(|e| anyhow::anyhow!("{e}")),
    }
}

/// The live knowledge base of the daemon's data directory (the daemon must be stopped:
/// sled allows one process at a time).
async fn open_live(config: &Config, model: bool) -> anyhow::Result<(Arc<dyn Store>, LiveKb)> {
    let store = crate::app::open_store(config).context(
        "opening the store (is the daemon running? stop it, or use POST /api/v1/kb/import)",
    )?;
    let model = match model_dir(None, Some(config)).filter(|_| model) {
        Some(dir) => Some(crate::app::load_model(&dir)?),
        None => None,
    };
    let kb = LiveKb::open(store.as_ref(), &config.bot, model).await?;
    Ok((store, kb))
}

/// `kb import FILE`: stores JSON Lines entries, then embeds their questions (with a model)
/// so the daemon starts without recomputing.
pub async fn import(file: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let config = config_or_default(config)?;
    let entries = kb::read_jsonl(file)?;
    let problems = crate::bot::live::check(&entries);
    for p in &problems {
        eprintln!("warning: {p}");
    }
    let (store, kb) = open_live(&config, true).await?;
    let version = kb
        .import(&entries, &format!("imported from {}", file.display()))
        .await?;
    let variants = kb
        .entries()
        .await?
        .iter()
        .map(|e| e.questions.len())
        .sum::<usize>();
    let bar = progress_bar(variants, "indexing questions");
    let responder = kb.build(kb.entries().await?, &|n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    drop(store); // flushes
    println!(
        "imported {} entries from {} (knowledge base version {version}; {} entries, {} questions in all{})",
        entries.len(),
        file.display(),
        responder.matcher().entries().len(),
        responder.matcher().variants(),
        if responder.matcher().has_model() {
            ", embeddings cached"
        } else {
            ""
        }
    );
    Ok(())
}

/// `kb export`: the live knowledge base as JSON Lines on stdout.
pub async fn export(config: Option<&Path>) -> anyhow::Result<()> {
    let config = config_or_default(config)?;
    let (_store, kb) = open_live(&config, false).await?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for e in kb.entries().await? {
        writeln!(out, "{}", serde_json::to_string(&e)?)?;
    }
    Ok(())
}

/// `kb check [FILE]`: problems in a JSON Lines file, or in the live knowledge base.
/// Returns whether it is clean.
pub async fn check(file: Option<&Path>, config: Option<&Path>) -> anyhow::Result<bool> {
    let entries = match file {
        Some(f) => kb::read_jsonl(f)?,
        None => {
            let config = config_or_default(config)?;
            open_live(&config, false).await?.1.entries().await?
        }
    };
    let problems = crate::bot::live::check(&entries);
    for p in &problems {
        println!("{p}");
    }
    println!(
        "{} entries, {} questions: {} problem(s)",
        entries.len(),
        entries.iter().map(|e| e.questions.len()).sum::<usize>(),
        problems.len()
    );
    // What calibration would choose by words (with the model, the daemon logs its own at
    // start and `kb eval` shows both).
    let matcher = Matcher::build(entries, None, &|_| {})?;
    let c = calibrate::calibrate(&matcher, false, Policy::LEXICAL, 0.03)?;
    println!("calibration, words only: {}", describe_calibration(&c));
    Ok(problems.is_empty())
}
