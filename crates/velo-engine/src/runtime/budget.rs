//! Where an epoch ends: the job's batch strategy turned into the budget
//! every feed reads an epoch under.

use std::time::{Duration, Instant};

use velo_config::{BatchStrategy, JobConfig};

use crate::feed::{Budget, DEFAULT_UNBOUNDED_TIMEOUT};

/// The epoch size of `AdaptiveSize`, moved after every epoch towards its
/// target latency.
pub(crate) struct Adaptive {
    size: usize,
}

impl Adaptive {
    pub fn new(job: &JobConfig) -> Self {
        Self {
            size: match job.strategy {
                BatchStrategy::AdaptiveSize { min_size, .. } => min_size,
                _ => 0,
            },
        }
    }

    /// After an epoch that `took`: a fast epoch grows the next one by half,
    /// a slow one shrinks it by a third.
    pub fn adapt(&mut self, job: &JobConfig, took: Duration) {
        if let BatchStrategy::AdaptiveSize {
            min_size,
            max_size,
            target_latency,
        } = job.strategy
        {
            self.size = if took < target_latency / 2 {
                (self.size * 3 / 2).max(self.size + 1).min(max_size)
            } else if took > target_latency {
                (self.size * 2 / 3).max(min_size)
            } else {
                self.size
            };
        }
    }
}

/// The budget of the next epoch. A query that needs its whole input reads
/// it in one epoch; an unbounded source ends an epoch after
/// [`DEFAULT_UNBOUNDED_TIMEOUT`] unless the job says otherwise.
pub(crate) fn budget(job: &JobConfig, bounded: bool, whole: bool, adaptive: &Adaptive) -> Budget {
    if whole {
        return Budget::default();
    }
    let timeout = job.batch_timeout.or(if bounded {
        None
    } else {
        Some(DEFAULT_UNBOUNDED_TIMEOUT)
    });
    let deadline = timeout.map(|t| Instant::now() + t);
    if !job.batch_enable {
        // no batching: every batch the source delivers is an epoch of its own
        return Budget {
            deadline,
            max_batches: Some(1),
            ..Default::default()
        };
    }
    match &job.strategy {
        BatchStrategy::FixedSize => Budget {
            max_records: job.batch_size,
            deadline,
            ..Default::default()
        },
        BatchStrategy::LowLatency {
            max_size,
            wait,
            eager,
        } => Budget {
            max_records: Some(*max_size),
            deadline: Some(Instant::now() + *wait),
            eager: *eager,
            ..Default::default()
        },
        BatchStrategy::AdaptiveSize { .. } => Budget {
            max_records: Some(adaptive.size),
            deadline,
            ..Default::default()
        },
        BatchStrategy::MemoryBased { bytes } => Budget {
            max_records: job.batch_size,
            max_bytes: Some(*bytes),
            deadline,
            ..Default::default()
        },
    }
}
