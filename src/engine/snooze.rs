//! The timer that wakes snoozed conversations.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError};
use crate::model::{Action, Actor, Status};

/// How often snoozed conversations are checked for their wake-up time.
const SNOOZE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Wakes snoozed conversations whose time has come (also those that came due while the daemon
/// was down: the time is in the record).
pub(super) async fn wake_snoozed(engine: Arc<Engine>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SNOOZE_TICK) => {}
        }
        let now = engine.now_ms();
        let mut query = crate::store::ConversationQuery {
            status: Some(Status::Snoozed),
            limit: 200,
            ..Default::default()
        };
        loop {
            let page = match engine.store.list_conversations(&query).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list snoozed conversations");
                    break;
                }
            };
            for conv in page
                .items
                .iter()
                .filter(|c| c.snoozed_until_ms.is_some_and(|t| t <= now))
            {
                match engine
                    .act(conv.id, Actor::System, Action::Wake, "snooze ended")
                    .await
                {
                    Ok(_) | Err(EngineError::Transition(_)) => {}
                    Err(e) => tracing::warn!(conversation = %conv.id, error = %e, "could not wake"),
                }
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
    }
}
