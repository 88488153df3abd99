//! The runtime: prepared jobs run epoch by epoch. [`run_app`] runs the
//! jobs of an application concurrently, each as a task; [`job`] is one
//! job's run, phase by phase (sinks created, state restored, then per
//! epoch: read, execute, fan out, prepare, checkpoint, commit), with the
//! commit protocol in [`commit`], restart and failure handling in
//! [`recover`], epoch sizes in [`budget`], the sinks in [`outputs`] and
//! `velo explain`'s text in [`explain`].

pub mod budget;
mod commit;
pub mod explain;
pub mod handle;
mod job;
mod outputs;
mod recover;

use std::sync::Arc;
use std::time::Duration;

pub use crate::plan::{PreparedJob, Purpose, prepare_job};
pub use explain::explain_text;
pub use handle::{JobHandle, JobMonitor, JobState, JobStatus, Published, Tap};

use crate::stats::{Counters, JobExecutionStats};
use crate::{AppPlan, Result};

/// Stops running jobs after their current epoch.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
    rx: tokio::sync::watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Self {
            tx: Arc::new(tx),
            rx,
        }
    }
}

impl Shutdown {
    /// Asks every job to commit its current epoch and stop.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
    /// Whether a stop was asked.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
    pub(crate) fn receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.rx.clone()
    }
}

/// A progress callback: job name and its live counters, every half second.
pub type Progress = Arc<dyn Fn(&str, &Counters) + Send + Sync>;

/// Runs every job of `app` concurrently, each as a task on the runtime's
/// workers (not on the caller's thread); returns their stats.
pub async fn run_app(
    app: &AppPlan,
    shutdown: Shutdown,
    progress: Option<Progress>,
) -> Result<Vec<JobExecutionStats>> {
    run_app_watched(app, shutdown, progress, None).await
}

/// Told the monitors of an application's jobs once they have started
/// (`velo run --metrics-addr` serves their metrics).
pub type Started = Box<dyn FnOnce(Vec<JobMonitor>) + Send>;

/// [`run_app`], telling `started` the jobs' monitors once they run.
pub async fn run_app_watched(
    app: &AppPlan,
    shutdown: Shutdown,
    progress: Option<Progress>,
    started: Option<Started>,
) -> Result<Vec<JobExecutionStats>> {
    let mut prepared = Vec::new();
    for j in &app.jobs {
        prepared.push(prepare_job(j, &shutdown, Purpose::Run).await?);
    }
    let handles: Vec<JobHandle> = prepared
        .into_iter()
        .map(|p| JobHandle::start(p, shutdown.clone()))
        .collect();
    if let Some(f) = started {
        f(handles.iter().map(JobHandle::monitor).collect());
    }
    let ticker = progress.map(|f| {
        let live: Vec<_> = handles
            .iter()
            .map(|h| (h.name().to_string(), h.counters()))
            .collect();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(500));
            loop {
                iv.tick().await;
                for (name, c) in &live {
                    f(name, c);
                }
            }
        })
    });
    let runs = handles.into_iter().map(JobHandle::wait);
    let stats = futures::future::join_all(runs).await;
    if let Some(t) = ticker {
        t.abort();
    }
    stats.into_iter().collect()
}
