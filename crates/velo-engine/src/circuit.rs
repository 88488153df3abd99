//! Each sink's health, and its circuit breaker when it has one
//! (`<sink>.circuit_breaker.failure_threshold` / `.reset_timeout`).
//!
//! Where it sits: in the sink's worker ([`crate::fanout`]), around every
//! epoch the sink takes part in. An epoch that fails on the sink (begin,
//! write, prepare or commit) counts one failure; one that commits closes
//! the circuit. After `failure_threshold` failures in a row the circuit
//! opens: for `reset_timeout` the sink is not called at all (its epochs
//! fail at once, without the retries and timeouts of a target that is
//! down), then one epoch probes it (half-open). The runtime decides what
//! an open circuit means for the job: RetryWithBackoff holds the epoch
//! until the probe, LogAndContinue counts the sink's records as failed.
//! Without a breaker the tracker still says how the sink is doing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use velo_config::keys::CircuitBreaker;

/// Where a sink's circuit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// The sink is called.
    Closed,
    /// The sink is not called until its probe.
    Open,
    /// The next epoch probes the sink.
    HalfOpen,
}

impl CircuitState {
    /// The state's name in the status document and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A sink's health at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkHealth {
    /// Its circuit (always closed without a breaker).
    pub state: CircuitState,
    /// Epochs that failed on it in a row, up to now.
    pub failures_in_row: u32,
    /// Epochs that failed on it (attempts, not the ones an open circuit
    /// refused).
    pub errors: u64,
    /// Times its circuit opened.
    pub opened: u64,
    /// Its last failure.
    pub last_error: Option<String>,
    /// Records it failed to write (its epochs that failed under
    /// LogAndContinue while the other sinks published).
    pub records_failed: u64,
    /// How long each call handing it a batch took (retries included).
    pub write_seconds: Option<crate::stats::HistogramSnapshot>,
    /// How long preparing and publishing each epoch took on it.
    pub commit_seconds: Option<crate::stats::HistogramSnapshot>,
}

#[derive(Debug)]
struct Inner {
    failures_in_row: u32,
    errors: u64,
    opened: u64,
    open_until: Option<Instant>,
    probing: bool,
    last_error: Option<String>,
}

/// One sink's tracker.
#[derive(Debug)]
pub struct Circuit {
    breaker: Option<CircuitBreaker>,
    inner: Mutex<Inner>,
}

impl Circuit {
    /// A tracker, with `breaker` if the sink has one.
    pub fn new(breaker: Option<CircuitBreaker>) -> Self {
        Self {
            breaker,
            inner: Mutex::new(Inner {
                failures_in_row: 0,
                errors: 0,
                opened: 0,
                open_until: None,
                probing: false,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the sink has a circuit breaker.
    pub fn has_breaker(&self) -> bool {
        self.breaker.is_some()
    }

    /// Before an epoch: `Err` with why while the circuit is open; a
    /// circuit whose timeout passed lets this epoch through as its probe.
    pub fn admit(&self) -> Result<(), String> {
        let mut i = self.lock();
        match i.open_until {
            Some(t) if Instant::now() < t => Err(format!(
                "the sink's circuit is open after {} failed epochs in a row (last: {}); it is probed again in {:.1}s",
                i.failures_in_row,
                i.last_error.as_deref().unwrap_or("unknown"),
                (t - Instant::now()).as_secs_f64()
            )),
            Some(_) => {
                i.open_until = None;
                i.probing = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// An epoch committed on the sink: the circuit closes.
    pub fn success(&self) {
        let mut i = self.lock();
        if i.probing || i.failures_in_row > 0 {
            tracing::info!("sink recovered after {} failed epochs", i.failures_in_row);
        }
        i.failures_in_row = 0;
        i.probing = false;
        i.open_until = None;
    }

    /// An epoch failed on the sink with `message`: the circuit opens at
    /// the threshold, or again after a failed probe.
    pub fn failure(&self, message: &str) {
        let mut i = self.lock();
        i.failures_in_row = i.failures_in_row.saturating_add(1);
        i.errors += 1;
        i.last_error = Some(message.to_string());
        if let Some(b) = self.breaker {
            if i.probing || i.failures_in_row >= b.failure_threshold {
                i.open_until = Some(Instant::now() + b.reset_timeout);
                i.opened += 1;
                tracing::warn!(
                    "the sink failed {} epochs in a row: its circuit opens for {:?}",
                    i.failures_in_row,
                    b.reset_timeout
                );
            }
        }
        i.probing = false;
    }

    /// How long a failed epoch of this sink should wait before it is read
    /// again: until the probe while the circuit is open, else `backoff`;
    /// `None` without a breaker.
    pub fn hold(&self, backoff: Duration) -> Option<Duration> {
        self.breaker?;
        let i = self.lock();
        Some(match i.open_until {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => backoff,
        })
    }

    /// The sink's health now.
    pub fn health(&self) -> SinkHealth {
        let i = self.lock();
        let state = match (i.open_until, i.probing) {
            (Some(t), _) if Instant::now() < t => CircuitState::Open,
            (Some(_), _) | (None, true) => CircuitState::HalfOpen,
            (None, false) => CircuitState::Closed,
        };
        SinkHealth {
            state,
            failures_in_row: i.failures_in_row,
            errors: i.errors,
            opened: i.opened,
            last_error: i.last_error.clone(),
            records_failed: 0,
            write_seconds: None,
            commit_seconds: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_the_threshold_probes_after_the_timeout_and_closes_on_success() {
        let c = Circuit::new(Some(CircuitBreaker {
            failure_threshold: 2,
            reset_timeout: Duration::from_millis(50),
        }));
        assert!(c.admit().is_ok());
        c.failure("disk full");
        assert_eq!(c.health().state, CircuitState::Closed);
        assert!(c.admit().is_ok());
        c.failure("disk full");
        let h = c.health();
        assert_eq!((h.state, h.opened, h.errors), (CircuitState::Open, 1, 2));
        let refused = c.admit().unwrap_err();
        assert!(refused.contains("disk full"), "{refused}");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.health().state, CircuitState::HalfOpen);
        assert!(c.admit().is_ok());
        c.failure("still full");
        assert_eq!(c.health().state, CircuitState::Open);
        assert_eq!(c.health().opened, 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.admit().is_ok());
        c.success();
        let h = c.health();
        assert_eq!((h.state, h.failures_in_row), (CircuitState::Closed, 0));
    }

    #[test]
    fn without_a_breaker_it_only_counts() {
        let c = Circuit::new(None);
        for _ in 0..10 {
            c.failure("x");
            assert!(c.admit().is_ok());
        }
        assert_eq!(c.health().failures_in_row, 10);
        assert_eq!(c.hold(Duration::from_secs(1)), None);
    }
}
