//! Bot workers: each takes customer messages of its share of conversations, in order, asks the
//! [`Responder`](crate::bot::Responder), and commits the reply and any hand-over.
//!
//! Work items are also kept in the store's bot queue (written with the message), so a crash
//! between storing a message and answering it is picked up on the next start.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::draft::Reply;
use super::plan::{BotPlan, LastEntry, Misses, Say, bot_may_speak, bot_plan};
use super::{Engine, EngineError};
use crate::bot::{BotInput, Decision, EscalationReason};
use crate::model::{
    Action, Actor, BotVerdict, ConversationId, Escalation, EventKind, Message, VerdictKind,
};

/// How far back a numbered reply may look for the options it picks from.
const OPTIONS_LOOKBACK: u64 = 6;

/// The options of the bot's latest message before `seq`, if it offered any.
async fn offered_before(
    engine: &Engine,
    conv: ConversationId,
    seq: u64,
) -> Result<Vec<switchboard_channel::Button>, EngineError> {
    for earlier in (seq.saturating_sub(OPTIONS_LOOKBACK).max(1)..seq).rev() {
        match engine.store.message(conv, earlier).await? {
            Some(m) if m.author == crate::model::Author::Bot => return Ok(m.buttons),
            _ => {}
        }
    }
    Ok(vec![])
}

/// What the bot reads of a customer message: the payload of a button they pressed (or of the
/// option whose number they wrote back, where the bot offered numbered options), else the
/// subject that starts a topic and the text.
pub(crate) fn bot_reads(message: &Message, offered: &[switchboard_channel::Button]) -> String {
    if let Some(payload) = &message.payload {
        return payload.clone();
    }
    if let Some(button) = option_number(&message.text)
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| offered.get(i))
    {
        return button.payload.clone();
    }
    match &message.subject {
        Some(subject) => format!("{subject}\n{}", message.text),
        None => message.text.clone(),
    }
}

/// The number a reply consists of: "2", "２", "#2", "2.", "第2个", "(2)".
pub(crate) fn option_number(text: &str) -> Option<usize> {
    let digits: String = text
        .trim()
        .chars()
        .map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            c => c,
        })
        .collect();
    let core = digits
        .trim_start_matches(['#', '第', '(', '（'])
        .trim_end_matches([
            '.', '。', ')', '）', '、', '个', '個', '项', '項', '!', '！',
        ])
        .trim();
    if core.is_empty() || core.len() > 2 || !core.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    core.parse().ok().filter(|n| *n > 0)
}

/// How long a claimed bot turn is this engine's: far longer than a decision takes (the
/// model's pass, the typing courtesy, one commit).
const BOT_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

/// Longest a "typing…" indicator may take; it is only a courtesy.
const TYPING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) async fn run(
    engine: Arc<Engine>,
    mut inbox: mpsc::UnboundedReceiver<super::BotWork>,
    shutdown: CancellationToken,
) {
    loop {
        let super::BotWork { conv, seq, message } = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = inbox.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        if let Err(e) = handle(&engine, conv, seq, message).await {
            // The item stays in the store's bot queue and is retried on the next start.
            tracing::error!(conversation = %conv, seq, error = %e, "bot could not handle message");
        }
        engine
            .bot_outstanding
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Work the bot may hold in memory at once; the backlog feeder waits above it.
const MAX_OUTSTANDING: usize = 4096;
/// Backlog read from the store per step.
const BACKLOG_PAGE: usize = 1024;

/// Feeds work left in the store's bot queue by a previous run to the workers, a page at a time
/// and only as fast as they take it, so a large backlog neither delays start-up nor fills
/// memory. An item can arrive twice (here and from a new message); `handle` skips one that is
/// no longer pending.
pub(crate) async fn feed_backlog(engine: Arc<Engine>, shutdown: CancellationToken) {
    let mut after = None;
    let mut fed = 0usize;
    loop {
        let page = match engine.store.bot_queue(after, BACKLOG_PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the bot queue; its backlog waits for a restart");
                return;
            }
        };
        let Some(&last) = page.last() else { break };
        for (conv, seq) in page {
            while engine
                .bot_outstanding
                .load(std::sync::atomic::Ordering::Relaxed)
                >= MAX_OUTSTANDING
            {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                }
            }
            engine.enqueue_bot(conv, seq, None);
            fed += 1;
        }
        after = Some(last);
    }
    if fed > 0 {
        tracing::info!(
            messages = fed,
            "bot backlog from the previous run handed to the workers"
        );
    }
}

#[tracing::instrument(name = "bot", skip_all, fields(conversation = conv.0, seq))]
async fn handle(
    engine: &Arc<Engine>,
    conv: ConversationId,
    seq: u64,
    message: Option<Message>,
) -> Result<(), EngineError> {
    if !engine
        .store
        .claim_bot(conv, seq, engine.holder, BOT_LEASE)
        .await?
    {
        // Done already, or another worker has it.
        return Ok(());
    }
    let message = match message {
        Some(m) => m,
        None => match engine.store.message(conv, seq).await? {
            Some(m) => m,
            None => return Ok(()),
        },
    };
    let Some(current) = engine.store.conversation(conv).await? else {
        return Ok(());
    };
    if !bot_may_speak(current.status) {
        // A person owns it now: nothing to say, only the queue entry to drop.
        engine.store.bot_done(conv, seq);
        return Ok(());
    }
    if let Some(channel) = engine
        .channel(&current.channel)
        .filter(|c| c.capabilities().typing)
    {
        // "typing…" while the bot decides; best effort, never in the way of the answer.
        let thread = current.thread.clone();
        tokio::spawn(async move {
            let typing = tokio::time::timeout(TYPING_TIMEOUT, channel.typing(&thread)).await;
            if let Ok(Err(e)) = typing {
                tracing::debug!(error = %e, "typing indicator failed");
            }
        });
    }
    let responder = engine.responder.read().expect("responder lock").clone();
    let offered = offered_before(engine, conv, seq).await?;
    let text = bot_reads(&message, &offered);
    let misses = current.bot_misses;
    let last_entry = current.bot_last_entry.clone();
    let decision = if text.trim().is_empty() && !message.attachments.is_empty() {
        Decision::Escalate {
            reason: EscalationReason::FilesOnly,
            detail: format!(
                "the customer sent {} without words: {}",
                if message.attachments.len() == 1 {
                    "a file"
                } else {
                    "files"
                },
                message
                    .attachments
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    } else if let Some(d) = responder.recent(&BotInput {
        text: &text,
        misses,
        last_entry: last_entry.as_deref(),
    }) {
        d
    } else {
        let d = tokio::task::spawn_blocking(move || {
            responder.decide(&BotInput {
                text: &text,
                misses,
                last_entry: last_entry.as_deref(),
            })
        })
        .await;
        match d {
            Ok(d) => d,
            Err(e) => Decision::Escalate {
                reason: EscalationReason::BotError,
                detail: format!("responder failed: {e}"),
            },
        }
    };
    engine.metrics.bot(
        match &decision {
            Decision::Answer { .. } => "answer",
            Decision::Clarify { .. } => "clarify",
            Decision::Reply { .. } => "reply",
            Decision::Escalate { .. } => "escalate",
        },
        match &decision {
            Decision::Escalate { reason, .. } => Some(reason.as_str()),
            Decision::Answer {
                escalate_after: true,
                ..
            } => Some(EscalationReason::Sensitive.as_str()),
            _ => None,
        },
    );
    // Nothing the bot may say (waiting for a person, with nothing new to tell): only the
    // queue entry to drop, without touching the conversation.
    if bot_plan(current.status, current.bot_last_entry.as_deref(), &decision) == BotPlan::Silent {
        engine.store.bot_done(conv, seq);
        return Ok(());
    }
    let language = crate::model::lang::language_of(&message.text);
    let handoff = engine
        .handoff_message(engine.now_ms(), &current, language)
        .await;
    let in_reply_to = message.external_id.clone();
    engine
        .update(conv, Actor::Bot, |d| {
            d.change.bot_queue_remove.push((conv, seq));
            // Planned again on the record read for this commit: a person may have taken
            // over while the bot was thinking, and then it is silent.
            let BotPlan::Speak {
                say,
                misses,
                last_entry,
                escalate,
            } = bot_plan(d.conv.status, d.conv.bot_last_entry.as_deref(), &decision)
            else {
                return Ok(());
            };
            let verdict = verdict_of(&decision);
            d.event(EventKind::BotDecided {
                seq,
                verdict: verdict.clone(),
            });
            match misses {
                Misses::Keep => {}
                Misses::Reset => d.conv.bot_misses = 0,
                Misses::Add => d.conv.bot_misses += 1,
            }
            match last_entry {
                LastEntry::Keep => {}
                LastEntry::Set(entry) => d.conv.bot_last_entry = Some(entry.to_owned()),
                LastEntry::Clear => d.conv.bot_last_entry = None,
            }
            let (text, buttons) = match say {
                Say::Text { text, buttons } => (text.to_owned(), buttons.to_vec()),
                Say::HandOff => (handoff.clone(), vec![]),
            };
            d.push_outbound(Reply {
                buttons,
                verdict: Some(verdict),
                ..Reply::bot(text, in_reply_to.clone())
            });
            if let Some((reason, detail)) = escalate {
                hand_over(d, reason, &detail)?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

fn hand_over(
    d: &mut super::draft::Draft,
    reason: EscalationReason,
    detail: &str,
) -> Result<(), EngineError> {
    d.conv.escalation = Some(Escalation {
        reason,
        detail: detail.to_owned(),
        at_ms: d.now,
    });
    d.transition(
        Action::Escalate,
        &format!("escalated: {} ({detail})", reason.as_str()),
    )?;
    Ok(())
}

fn verdict_of(d: &Decision) -> BotVerdict {
    match d {
        Decision::Answer {
            entry,
            score,
            escalate_after,
            detail,
            ..
        } => BotVerdict {
            decision: VerdictKind::Answer,
            entry: Some(entry.clone()),
            score: Some(*score),
            reason: if *escalate_after {
                format!("sensitive entry, then a person: {detail}")
            } else {
                detail.clone()
            },
        },
        Decision::Reply { detail, .. } => BotVerdict {
            decision: VerdictKind::Reply,
            entry: None,
            score: None,
            reason: detail.clone(),
        },
        Decision::Clarify { score, detail, .. } => BotVerdict {
            decision: VerdictKind::Clarify,
            entry: None,
            score: *score,
            reason: detail.clone(),
        },
        Decision::Escalate { reason, detail } => BotVerdict {
            decision: VerdictKind::Escalate,
            entry: None,
            score: None,
            reason: format!("{}: {detail}", reason.as_str()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::option_number;

    #[test]
    fn a_reply_that_is_only_a_number_picks_an_option() {
        let table = [
            ("2", Some(2)),
            (" 2 ", Some(2)),
            ("２", Some(2)),
            ("#3", Some(3)),
            ("3.", Some(3)),
            ("(1)", Some(1)),
            ("第2个", Some(2)),
            ("第１項", Some(1)),
            ("12", Some(12)),
            ("0", None),
            ("123", None),
            ("2 please", None),
            ("order 2", None),
            ("", None),
            ("two", None),
        ];
        for (text, want) in table {
            assert_eq!(option_number(text), want, "{text:?}");
        }
    }
}
