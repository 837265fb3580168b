//! `switchboard bench bot`: one bot decision (rules, retrieval, policy) on a large knowledge
//! base, words only and with the embedding model, in one run; index build time and memory.
//!
//! The knowledge base is cut to `--variants` question variants, taken evenly from every
//! entry; the queries are labelled customer messages (only their text is used).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::rss_mb;
use crate::app::load_model;
use crate::bot::config::BotConfig;
use crate::bot::kb::{Entry, read_jsonl};
use crate::bot::matcher::Matcher;
use crate::bot::responder::KbResponder;
use crate::bot::{BotInput, Responder, eval};
use crate::kb_cli::vector_cache;

/// Arguments of `switchboard bench bot`.
#[derive(clap::Args)]
pub struct BotArgs {
    /// Knowledge base, JSON Lines.
    #[arg(long, default_value = "../shared/eval/clinc150/kb.jsonl")]
    pub kb: PathBuf,
    /// Customer messages, JSON Lines with a "text" field.
    #[arg(long, default_value = "../shared/eval/clinc150/queries-dev.jsonl")]
    pub queries: PathBuf,
    /// Question variants to index.
    #[arg(long, default_value_t = 10_000)]
    pub variants: usize,
    /// Sentence-transformers directory; without one, words only.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// Passes over the queries per measurement.
    #[arg(long, default_value_t = 2)]
    pub passes: usize,
    /// Keep embeddings in this sled directory between runs (skips the cold embedding).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// `variants` questions in all, the same share from every entry (round robin).
fn cut(entries: Vec<Entry>, variants: usize) -> Vec<Entry> {
    let mut sources: Vec<std::vec::IntoIter<String>> = Vec::new();
    let mut out: Vec<Entry> = Vec::new();
    for mut e in entries {
        sources.push(std::mem::take(&mut e.questions).into_iter());
        out.push(e);
    }
    let mut left = variants;
    let mut took = true;
    while left > 0 && took {
        took = false;
        for (entry, source) in out.iter_mut().zip(&mut sources) {
            if left == 0 {
                break;
            }
            if let Some(q) = source.next() {
                entry.questions.push(q);
                left -= 1;
                took = true;
            }
        }
    }
    out.retain(|e| !e.questions.is_empty());
    out
}

struct Timing {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    answered: usize,
    decisions: usize,
}

/// Times `responder.decide` for every query, `passes` times over (the first pass warms up
/// caches and is measured too: customers do not wait for a warm-up).
fn time_decisions(responder: &KbResponder, queries: &[eval::Query], passes: usize) -> Timing {
    let mut samples = Vec::with_capacity(queries.len() * passes);
    let mut answered = 0;
    for _ in 0..passes {
        for q in queries {
            let input = BotInput {
                text: &q.text,
                misses: 0,
                last_entry: None,
            };
            let t = Instant::now();
            let decision = responder.decide(&input);
            samples.push(t.elapsed().as_secs_f64() * 1e3);
            if matches!(decision, crate::bot::Decision::Answer { .. }) {
                answered += 1;
            }
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    Timing {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: samples.last().copied().unwrap_or(0.0),
        answered,
        decisions: samples.len(),
    }
}

fn print_row(what: &str, build_ms: f64, rss: f64, t: &Timing) {
    println!(
        "{what:<24} {build_ms:>10.0} {rss:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>9.1}%",
        t.p50_ms,
        t.p99_ms,
        t.max_ms,
        100.0 * t.answered as f64 / t.decisions.max(1) as f64
    );
}

fn rss_now() -> f64 {
    rss_mb(std::process::id()).unwrap_or(0.0)
}

pub async fn bot(args: BotArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.passes > 0, "--passes must be at least 1");
    let entries = cut(read_jsonl(&args.kb)?, args.variants);
    let variants: usize = entries.iter().map(|e| e.questions.len()).sum();
    let queries = eval::read_queries(&args.queries)?;
    anyhow::ensure!(
        !queries.is_empty(),
        "{}: no queries",
        args.queries.display()
    );
    let config = BotConfig::default();
    println!(
        "knowledge base: {} entries, {variants} question variants; {} queries x {} passes",
        entries.len(),
        queries.len(),
        args.passes
    );
    println!(
        "{:<24} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "matching", "build ms", "RSS MiB", "p50 ms", "p99 ms", "max ms", "answered"
    );
    let rss_start = rss_now();

    let t = Instant::now();
    let lexical = Matcher::build(entries.clone(), None, &|_| {})?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let responder = KbResponder::new(lexical, &config);
    let rss = rss_now();
    let timing = time_decisions(&responder, &queries, args.passes);
    print_row("words only", build_ms, rss, &timing);
    drop(responder);

    if !args.model.join("config.json").exists() {
        println!(
            "no model at {} (scripts/fetch-model gets all-MiniLM-L6-v2); words only measured",
            args.model.display()
        );
        return Ok(());
    }
    let model = load_model(&args.model)?;
    let (_store, cache) = vector_cache(args.cache.as_deref()).await?;
    let t = Instant::now();
    let semantic = Matcher::build(entries, Some((Arc::clone(&model), cache.as_ref())), &|_| {})
        .context("embedding the questions")?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let responder = KbResponder::new(semantic, &config);
    let rss = rss_now();
    let timing = time_decisions(&responder, &queries, args.passes);
    let label = if args.cache.is_some() {
        "with model (cache)"
    } else {
        "with model (cold)"
    };
    print_row(label, build_ms, rss, &timing);
    println!(
        "process RSS before building: {rss_start:.0} MiB; model {}",
        model.id()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, n: usize) -> Entry {
        Entry {
            id: id.into(),
            questions: (0..n).map(|i| format!("{id} {i}")).collect(),
            ..Entry::default()
        }
    }

    #[test]
    fn cut_takes_evenly_and_exactly() {
        let cut = cut(vec![entry("a", 5), entry("b", 2), entry("c", 5)], 9);
        let sizes: Vec<usize> = cut.iter().map(|e| e.questions.len()).collect();
        assert_eq!(sizes, vec![4, 2, 3]);
        assert_eq!(cut[0].questions[0], "a 0");
    }

    #[test]
    fn cut_keeps_everything_when_asked_for_more() {
        let cut = cut(vec![entry("a", 2), entry("b", 1)], 100);
        assert_eq!(cut.iter().map(|e| e.questions.len()).sum::<usize>(), 3);
    }
}
