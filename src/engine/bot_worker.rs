//! Bot workers: each takes customer messages of its share of conversations, in order, asks the
//! [`Responder`](crate::bot::Responder), and commits the reply and any hand-over.
//!
//! Work items are also kept in the store's bot queue (written with the message), so a crash
//! between storing a message and answering it is picked up on the next start.

use std::sync::Arc;

use switchboard_channel::Button;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError};
use crate::bot::{BotInput, Decision, EscalationReason};
use crate::model::{
    Action, Actor, Author, BotVerdict, ConversationId, Escalation, EventKind, Status,
};

pub(crate) async fn run(
    engine: Arc<Engine>,
    mut inbox: mpsc::UnboundedReceiver<super::BotWork>,
    shutdown: CancellationToken,
) {
    loop {
        let (conv, seq) = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = inbox.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        if let Err(e) = handle(&engine, conv, seq).await {
            // The item stays in the store's bot queue and is retried on the next start.
            tracing::error!(conversation = %conv, seq, error = %e, "bot could not handle message");
        }
    }
}

async fn handle(engine: &Arc<Engine>, conv: ConversationId, seq: u64) -> Result<(), EngineError> {
    let Some(message) = engine.store.message(conv, seq)? else {
        return Ok(());
    };
    let Some(current) = engine.store.conversation(conv)? else {
        return Ok(());
    };
    let responder = engine.responder.read().expect("responder lock").clone();
    let text = message.text.clone();
    let misses = current.bot_misses;
    let decision = if current.status == Status::Bot {
        let d = tokio::task::spawn_blocking(move || {
            responder.decide(&BotInput {
                text: &text,
                misses,
            })
        })
        .await;
        match d {
            Ok(d) => Some(d),
            Err(e) => Some(Decision::Escalate {
                reason: EscalationReason::BotError,
                detail: format!("responder failed: {e}"),
            }),
        }
    } else {
        None
    };
    let handoff = engine.settings.handoff_message.clone();
    let in_reply_to = message.external_id.clone();
    engine
        .update(conv, Actor::Bot, |d| {
            d.change.bot_queue_remove.push((conv, seq));
            // A person may have taken over while the bot was thinking: then the bot is silent.
            let Some(decision) = decision.as_ref().filter(|_| d.conv.status == Status::Bot) else {
                return Ok(());
            };
            let verdict = verdict_of(decision);
            d.event(EventKind::BotDecided {
                seq,
                verdict: verdict.clone(),
            })?;
            match decision {
                Decision::Answer {
                    text,
                    escalate_after,
                    entry,
                    ..
                } => {
                    d.conv.bot_misses = 0;
                    d.push_outbound(
                        Author::Bot,
                        None,
                        text.clone(),
                        vec![],
                        in_reply_to.clone(),
                        Some(verdict),
                    )?;
                    if *escalate_after {
                        escalate(
                            d,
                            EscalationReason::Sensitive,
                            &format!("knowledge-base entry {entry} is marked sensitive"),
                        )?;
                    }
                }
                Decision::Clarify { text, options, .. } => {
                    d.conv.bot_misses += 1;
                    let buttons: Vec<Button> = options.clone();
                    d.push_outbound(
                        Author::Bot,
                        None,
                        text.clone(),
                        buttons,
                        in_reply_to.clone(),
                        Some(verdict),
                    )?;
                }
                Decision::Escalate { reason, detail } => {
                    d.conv.bot_misses = 0;
                    d.push_outbound(
                        Author::Bot,
                        None,
                        handoff.clone(),
                        vec![],
                        in_reply_to.clone(),
                        Some(verdict),
                    )?;
                    escalate(d, *reason, detail)?;
                }
            }
            Ok(())
        })
        .await?;
    Ok(())
}

fn escalate(
    d: &mut super::draft::Draft<'_>,
    reason: EscalationReason,
    detail: &str,
) -> Result<(), EngineError> {
    d.conv.escalation = Some(Escalation {
        reason: reason.as_str().to_owned(),
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
            ..
        } => BotVerdict {
            decision: "answer".into(),
            entry: Some(entry.clone()),
            score: Some(*score),
            reason: if *escalate_after {
                "sensitive entry".into()
            } else {
                "confident match".into()
            },
        },
        Decision::Clarify { score, .. } => BotVerdict {
            decision: "clarify".into(),
            entry: None,
            score: *score,
            reason: "no confident match".into(),
        },
        Decision::Escalate { reason, detail } => BotVerdict {
            decision: "escalate".into(),
            entry: None,
            score: None,
            reason: format!("{}: {detail}", reason.as_str()),
        },
    }
}
