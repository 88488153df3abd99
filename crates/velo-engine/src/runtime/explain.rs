//! `velo explain`: a prepared job shown as text — its sources and how it
//! reads each, how it tells time, every connector's settings (secrets
//! masked), the job settings, and DataFusion's logical and physical plans.

use datafusion::physical_plan::displayable;

use crate::feed::DEFAULT_UNBOUNDED_TIMEOUT;
use crate::plan::PreparedJob;
use crate::time::TimeMode;

/// The `explain` text of a job: sources, sinks, config (secrets masked), plans.
pub fn explain_text(p: &PreparedJob) -> String {
    let mut s = format!(
        "Job '{}' ({:?}, line {})\n",
        p.plan.name, p.plan.statement.kind, p.plan.statement.line
    );
    s.push_str(&format!(
        "  Source (driving): {} — {} [{}]\n",
        p.driver.name(),
        p.driver.describe(),
        if p.driver.is_bounded() {
            "bounded"
        } else {
            "unbounded"
        }
    ));
    for (src, f) in &p.others {
        s.push_str(&format!(
            "  Source (stream, joined): {} — {} [{}]{}\n",
            src.name(),
            src.describe(),
            if src.is_bounded() {
                "bounded"
            } else {
                "unbounded"
            },
            match f.time() {
                Some(TimeMode::Event(t)) => format!(", event time {}", t.field),
                _ => String::new(),
            }
        ));
    }
    for l in &p.lookups {
        s.push_str(&format!(
            "  Source (lookup table): {} — {}{}\n",
            l.name(),
            l.describe(),
            l.refresh_interval()
                .map(|d| format!(
                    ", read again every {}",
                    crate::time::show_duration(d.as_millis() as i64)
                ))
                .unwrap_or_default()
        ));
    }
    s.push_str(&match &p.time {
        Some(TimeMode::Event(t)) => format!(
            "  Time: event time from {}.{} ({}), watermark {} behind the highest event time{}, late records: {}\n",
            p.driver.name(),
            t.field,
            match &t.format {
                velo_config::time::TimeFormat::Native => "as stored".to_string(),
                velo_config::time::TimeFormat::EpochMillis => "epoch_millis".to_string(),
                velo_config::time::TimeFormat::EpochSeconds => "epoch_seconds".to_string(),
                velo_config::time::TimeFormat::Iso8601 => "iso8601".to_string(),
                velo_config::time::TimeFormat::Pattern(p) => format!("pattern '{p}'"),
            },
            crate::time::show_duration(t.max_out_of_orderness.as_millis() as i64),
            t.idle_timeout
                .map(|d| format!(", idle parts ignored after {}", crate::time::show_duration(d.as_millis() as i64)))
                .unwrap_or_default(),
            match t.late {
                velo_config::time::LateData::Drop => "dropped and counted",
                velo_config::time::LateData::DeadLetter => "dead-lettered",
            }
        ),
        Some(TimeMode::Processing) => format!(
            "  Time: processing time (no event.time.field declared on '{}'); windows close by the wall clock\n",
            p.driver.name()
        ),
        None => format!(
            "  Time: processing time (no event.time.field declared on '{}')\n",
            p.driver.name()
        ),
    });
    for c in p
        .plan
        .sources
        .iter()
        .chain(p.plan.sinks.iter())
        .chain(p.plan.dlq.iter())
    {
        s.push_str(&format!(
            "  {} {} (type {}):\n",
            if c.role == velo_config::Role::Source {
                "source"
            } else {
                "sink"
            },
            c.name,
            c.kind
        ));
        for (k, v) in &c.props {
            s.push_str(&format!(
                "      {}.{k} = {}\n",
                c.name,
                velo_config::display_value(k, v)
            ));
        }
    }
    let j = &p.plan.job;
    s.push_str(&format!(
        "  Job: strategy {:?}, batch.size {}, batch.timeout {}, use_transactions {}, failure_strategy {:?}, max_retries {}, retry_backoff {:?}\n",
        j.strategy,
        match (j.batch_size, super::budget::epoch_records(j, !p.window_states.is_empty())) {
            (Some(b), _) => b.to_string(),
            (None, Some(d)) if !p.whole_input => format!("{d} (the default of a query that keeps state)"),
            _ => "unlimited".into(),
        },
        j.batch_timeout.map(|d| format!("{d:?}")).unwrap_or_else(|| if p.driver.is_bounded() { "none".into() } else { format!("{DEFAULT_UNBOUNDED_TIMEOUT:?}") }),
        j.use_transactions,
        j.failure_strategy,
        j.max_retries,
        j.retry_backoff
    ));
    for (k, v) in &p.plan.job_props {
        s.push_str(&format!(
            "      {k} = {}\n",
            velo_config::display_value(k, v)
        ));
    }
    if p.whole_input {
        s.push_str(&format!(
            "  Note: the query needs its whole (bounded) input: it runs {}\n",
            p.runs_as
        ));
    }
    if p.is_changelog() {
        s.push_str(&format!(
            "  Emit: changes: an updating stream keyed by ({}); every epoch writes the changed groups with {} = insert / update / delete\n",
            p.result_keys()
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
                .join(", "),
            crate::changelog::OP_COLUMN
        ));
    }
    s.push_str(&format!(
        "\n  Logical plan:\n{}\n",
        indent(&p.logical.display_indent().to_string())
    ));
    s.push_str(&format!(
        "  Physical plan:\n{}",
        indent(&displayable(p.physical.as_ref()).indent(true).to_string())
    ));
    s
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("    {l}\n")).collect()
}
