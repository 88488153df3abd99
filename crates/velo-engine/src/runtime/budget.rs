//! Where an epoch ends: the job's batch strategy turned into the budget
//! every feed reads an epoch under.

use std::time::{Duration, Instant};

use velo_config::{BatchStrategy, JobConfig};

use crate::feed::{Budget, DEFAULT_UNBOUNDED_TIMEOUT};

/// Records per epoch of a job whose operators keep state (windows, joins
/// of streams, row windows, updating aggregates) when `batch.size` is not
/// set. A window closes, and its state goes, only at an epoch's end: one
/// epoch over a large bounded input held every window open to the end
/// (Nexmark q7 on 10M events: 11.8 s and 1.4 GB of memory as one epoch,
/// 0.79 s and 177 MB in epochs of 100,000).
pub const DEFAULT_STATEFUL_EPOCH: usize = 100_000;

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

/// Records per epoch (not for a query that needs its whole input):
/// `batch.size`, else [`DEFAULT_STATEFUL_EPOCH`] for a `stateful` job, else
/// no limit.
pub(crate) fn epoch_records(job: &JobConfig, stateful: bool) -> Option<usize> {
    job.batch_size
        .or(stateful.then_some(DEFAULT_STATEFUL_EPOCH))
}

/// The budget of the next epoch. A query that needs its whole input reads
/// it in one epoch; an unbounded source ends an epoch after
/// [`DEFAULT_UNBOUNDED_TIMEOUT`] unless the job says otherwise; a job with
/// `stateful` operators and no `batch.size` ends one after
/// [`DEFAULT_STATEFUL_EPOCH`] records.
pub(crate) fn budget(
    job: &JobConfig,
    bounded: bool,
    whole: bool,
    stateful: bool,
    adaptive: &Adaptive,
) -> Budget {
    if whole {
        return Budget::default();
    }
    let records = epoch_records(job, stateful);
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
            max_records: records,
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
            max_records: records,
            max_bytes: Some(*bytes),
            deadline,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stateful_job_without_a_batch_size_reads_epochs_of_the_default() {
        let job = JobConfig::default();
        let adaptive = Adaptive::new(&job);
        let records = |bounded, whole, stateful| {
            budget(&job, bounded, whole, stateful, &adaptive).max_records
        };
        assert_eq!(records(true, false, true), Some(DEFAULT_STATEFUL_EPOCH));
        assert_eq!(records(false, false, true), Some(DEFAULT_STATEFUL_EPOCH));
        // stateless: the whole bounded input is one epoch, as before
        assert_eq!(records(true, false, false), None);
        // a query that needs its whole input reads it at once
        assert_eq!(records(true, true, true), None);
        // batch.size wins
        let job = JobConfig {
            batch_size: Some(500),
            ..JobConfig::default()
        };
        assert_eq!(
            budget(&job, true, false, true, &adaptive).max_records,
            Some(500)
        );
    }
}
