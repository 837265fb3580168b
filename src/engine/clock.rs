//! The engine's clock: wall time in unix milliseconds, behind a seam so tests can move it.
//!
//! Everything the engine stamps or compares with a deadline (a change's time, snooze
//! wake-ups, outbox back-off, SLA and routing times) reads [`Clock::now_ms`]. The daemon
//! uses the system's clock; tests use [`TokioClock`], which follows tokio's clock, so under
//! `tokio::time::pause` an hour passes in one `tokio::time::advance` and the timers that
//! sleep with tokio wake at the same instant the clock says.

/// Wall time for the engine.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        switchboard_channel::now_ms()
    }
}

/// Wall time from an anchor, moved on by tokio's clock (paused and advanced in tests).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor_ms: i64,
    anchor: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the system's time now.
    pub fn new() -> TokioClock {
        TokioClock::starting_at(switchboard_channel::now_ms())
    }

    /// Starts at `anchor_ms`.
    pub fn starting_at(anchor_ms: i64) -> TokioClock {
        TokioClock {
            anchor_ms,
            anchor: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.anchor_ms + self.anchor.elapsed().as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_moves_with_tokio_time_only() {
        let clock = TokioClock::starting_at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms(), 1_000 + 3_600_000);
    }
}
