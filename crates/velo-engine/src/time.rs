//! Event time and watermarks.
//!
//! The driving source's feed reads each batch's event time (converting the
//! declared column to a timestamp where a format is given), holds back
//! records older than the watermark (late data: dropped and counted, or
//! dead-lettered), and then moves the watermark: the lowest, over the
//! source's active parts, of the highest event time seen, minus the allowed
//! out-of-orderness. Windowed operators read the watermark when an epoch's
//! input ends and close every window it has passed. Without an event-time
//! column the watermark is the wall clock at the end of each epoch
//! (processing time). At the end of bounded input it jumps to the end of
//! time, which flushes every open window.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, TimestampMillisecondArray};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use velo_config::time::{EventTime, TimeFormat};

/// How a job tells time.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeMode {
    /// The event time of a column of the driving source.
    Event(EventTime),
    /// The wall clock when a record is processed.
    Processing,
}

/// A lower bound computed from other watermarks.
type Computed = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The watermark of one job, shared by its feed and its operators. A job
/// that reads several streams has one per stream (moved by its feed) and a
/// computed one for its operators: the lowest of the streams', held back by
/// how far a temporal join may pair rows apart ([`Self::hold_back`]); a
/// window over a window's or a join's output has one computed from its
/// input's lower bound ([`Self::from_fn`]).
pub struct Watermark {
    own: AtomicI64,
    /// Computed watermarks: what gives their value.
    computed: Option<Computed>,
    /// Computed watermarks: milliseconds behind that value.
    delay: AtomicI64,
    /// Wall-clock milliseconds of the last move forward.
    moved_at: AtomicI64,
}

impl std::fmt::Debug for Watermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watermark({})", show_millis(self.get()))
    }
}

/// `ms` moved by `by`, where none and the end of input stay as they are.
pub fn shift(ms: i64, by: i64) -> i64 {
    match ms {
        Watermark::NONE | Watermark::END => ms,
        _ => ms.saturating_add(by),
    }
}

impl Watermark {
    /// No watermark yet.
    pub const NONE: i64 = i64::MIN;
    /// The end of input: every window is complete.
    pub const END: i64 = i64::MAX;

    fn with(computed: Option<Computed>) -> Arc<Self> {
        Arc::new(Self {
            own: AtomicI64::new(Self::NONE),
            computed,
            delay: AtomicI64::new(0),
            moved_at: AtomicI64::new(now_millis()),
        })
    }

    /// A fresh watermark (none yet).
    pub fn new() -> Arc<Self> {
        Self::with(None)
    }

    /// The lowest of `inputs` (the watermark of a job over several streams).
    pub fn min_of(inputs: Vec<Arc<Watermark>>) -> Arc<Self> {
        Self::from_fn(Arc::new(move || {
            inputs.iter().map(|w| w.get()).min().unwrap_or(Self::NONE)
        }))
    }

    /// A watermark computed by `f` (the lower bound of an operator's input
    /// time column: a window over a window's or a join's output).
    pub fn from_fn(f: Computed) -> Arc<Self> {
        Self::with(Some(f))
    }

    /// A computed watermark stays `ms` further behind: a join that pairs
    /// rows up to `ms` apart can still produce rows that old.
    pub fn hold_back(&self, ms: i64) {
        self.delay.fetch_add(ms.max(0), Ordering::AcqRel);
    }

    /// The current watermark in epoch milliseconds.
    pub fn get(&self) -> i64 {
        match &self.computed {
            Some(f) => shift(f(), -self.delay.load(Ordering::Acquire)),
            None => self.own.load(Ordering::Acquire),
        }
    }

    /// Moves the watermark forward to `ms` (never back).
    pub fn advance(&self, ms: i64) {
        if self.own.fetch_max(ms, Ordering::AcqRel) < ms {
            self.moved_at.store(now_millis(), Ordering::Release);
        }
    }

    /// Whether it has not moved for `idle` (wall clock): its stream is
    /// idle, not slow.
    pub fn stalled(&self, idle: Duration) -> bool {
        now_millis() - self.moved_at.load(Ordering::Acquire) > idle.as_millis() as i64
    }

    /// Puts the watermark back to `ms` (restart from a checkpoint).
    pub fn reset(&self, ms: i64) {
        self.own.store(ms, Ordering::Release);
    }
}

/// Milliseconds since 1970 of the wall clock.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A constant interval, duration or whole number as milliseconds (`None`
/// for months and years, which vary in length).
pub fn fixed_millis(v: &datafusion::common::ScalarValue) -> Option<i64> {
    use datafusion::common::ScalarValue;
    Some(match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            i.days as i64 * 86_400_000 + i.nanoseconds / 1_000_000
        }
        ScalarValue::IntervalDayTime(Some(i)) => i.days as i64 * 86_400_000 + i.milliseconds as i64,
        ScalarValue::DurationMillisecond(Some(v)) => *v,
        ScalarValue::DurationSecond(Some(v)) => v * 1000,
        ScalarValue::DurationMicrosecond(Some(v)) => v / 1000,
        ScalarValue::DurationNanosecond(Some(v)) => v / 1_000_000,
        ScalarValue::Int64(Some(v)) => *v,
        ScalarValue::Int32(Some(v)) => *v as i64,
        _ => return None,
    })
}

/// Renders epoch milliseconds as ISO 8601 (UTC) for messages.
pub fn show_millis(ms: i64) -> String {
    match ms {
        Watermark::NONE => "none".into(),
        Watermark::END => "end of input".into(),
        _ => chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| ms.to_string()),
    }
}

/// A length of time in milliseconds as `5m`, `30s` or `250ms` (explain).
pub fn show_duration(ms: i64) -> String {
    if ms != 0 && ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Follows the highest event time of each part of a source.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    lag_ms: i64,
    idle: Option<Duration>,
    parts: HashMap<String, (i64, Instant)>,
}

impl WatermarkTracker {
    /// A tracker for `time`.
    pub fn new(time: &EventTime) -> Self {
        Self {
            lag_ms: time.max_out_of_orderness.as_millis() as i64,
            idle: time.idle_timeout,
            parts: HashMap::new(),
        }
    }

    /// Notes that `part` delivered records up to event time `max_ts`.
    pub fn observe(&mut self, part: &str, max_ts: i64, now: Instant) {
        let e = self
            .parts
            .entry(part.to_string())
            .or_insert((Watermark::NONE, now));
        e.0 = e.0.max(max_ts);
        e.1 = now;
    }

    /// The source reads exactly `parts` now: new ones hold the watermark
    /// until they deliver (or are idle), the others are forgotten.
    pub fn assign(&mut self, parts: &[std::sync::Arc<str>], now: Instant) {
        self.parts
            .retain(|p, _| parts.iter().any(|q| q.as_ref() == p.as_str()));
        for p in parts {
            self.parts
                .entry(p.to_string())
                .or_insert((Watermark::NONE, now));
        }
    }

    /// `part` has ended: it no longer holds the watermark back.
    pub fn forget(&mut self, part: &str) {
        self.parts.remove(part);
    }

    /// The watermark the parts allow now: the lowest highest-event-time over
    /// the parts that are not idle, minus the allowed lateness.
    pub fn watermark(&self, now: Instant) -> Option<i64> {
        let active = self
            .parts
            .values()
            .filter(|(_, seen)| self.idle.is_none_or(|t| now.duration_since(*seen) < t));
        let low = active.map(|(ts, _)| *ts).min()?;
        Some(low.saturating_sub(self.lag_ms))
    }
}

/// Why the event time of a row could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeError {
    /// The row.
    pub row: usize,
    /// What was wrong.
    pub error: String,
}

/// The event-time column of a batch read as epoch milliseconds, and the
/// column to put back in its place (a timestamp, when a format converts it).
pub struct ReadTime {
    /// Epoch milliseconds per row (null where unreadable).
    pub millis: Int64Array,
    /// The replacement column, if the column's type changes.
    pub column: Option<ArrayRef>,
    /// Rows whose time could not be read.
    pub errors: Vec<TimeError>,
}

/// The type the event-time column has in the table, given its source type.
pub fn table_type(source: &DataType, format: &TimeFormat) -> DataType {
    match (format, source) {
        (TimeFormat::Native, DataType::Timestamp(_, _)) => source.clone(),
        (TimeFormat::Native, t) if t.is_integer() => source.clone(),
        _ => DataType::Timestamp(TimeUnit::Millisecond, None),
    }
}

/// The earliest event time a record may carry: 0001-01-01T00:00:00Z.
pub const MIN_EVENT_TIME: i64 = -62_135_596_800_000;
/// The latest event time a record may carry: 9999-12-31T23:59:59.999Z.
pub const MAX_EVENT_TIME: i64 = 253_402_300_799_999;

/// Reads `col` as event time.
pub fn read_time(col: &ArrayRef, format: &TimeFormat, field: &str) -> ReadTime {
    let n = col.len();
    let mut errors = Vec::new();
    let safe = CastOptions {
        safe: true,
        ..Default::default()
    };
    let ms_type = DataType::Timestamp(TimeUnit::Millisecond, None);
    let as_int = |a: &ArrayRef| -> Int64Array {
        arrow::compute::cast_with_options(a, &DataType::Int64, &safe)
            .map(|c| c.as_primitive::<Int64Type>().clone())
            .unwrap_or_else(|_| Int64Array::new_null(n))
    };
    let (millis, convert): (Int64Array, bool) = match (format, col.data_type()) {
        (TimeFormat::Native | TimeFormat::Iso8601, DataType::Timestamp(_, _)) => {
            let c = arrow::compute::cast_with_options(col, &ms_type, &safe)
                .unwrap_or_else(|_| arrow::array::new_null_array(&ms_type, n));
            (as_int(&c), false)
        }
        (TimeFormat::Native, t) if t.is_integer() => (as_int(col), false),
        (TimeFormat::EpochMillis, t) if t.is_integer() => (as_int(col), true),
        (TimeFormat::EpochMillis, _) => {
            let f = arrow::compute::cast_with_options(col, &DataType::Float64, &safe)
                .map(|c| c.as_primitive::<arrow::datatypes::Float64Type>().clone());
            let v = match f {
                Ok(f) => f.unary_opt::<_, Int64Type>(|x| x.is_finite().then_some(x as i64)),
                Err(_) => Int64Array::new_null(n),
            };
            (v, true)
        }
        (TimeFormat::EpochSeconds, _) => {
            let f = arrow::compute::cast_with_options(col, &DataType::Float64, &safe)
                .map(|c| c.as_primitive::<arrow::datatypes::Float64Type>().clone());
            let v = match f {
                Ok(f) => f.unary_opt::<_, Int64Type>(|x| {
                    x.is_finite().then_some((x * 1000.0).round() as i64)
                }),
                Err(_) => Int64Array::new_null(n),
            };
            (v, true)
        }
        (TimeFormat::Native | TimeFormat::Iso8601, _) => {
            let c = arrow::compute::cast_with_options(col, &ms_type, &safe)
                .unwrap_or_else(|_| arrow::array::new_null_array(&ms_type, n));
            (as_int(&c), true)
        }
        (TimeFormat::Pattern(p), _) => {
            let text = arrow::compute::cast_with_options(col, &DataType::Utf8, &safe)
                .unwrap_or_else(|_| arrow::array::new_null_array(&DataType::Utf8, n));
            let text = text.as_string::<i32>();
            let v: Int64Array = text
                .iter()
                .map(|s| {
                    let s = s?;
                    chrono::NaiveDateTime::parse_from_str(s, p)
                        .map(|t| t.and_utc().timestamp_millis())
                        .or_else(|_| {
                            chrono::NaiveDate::parse_from_str(s, p).map(|d| {
                                d.and_hms_opt(0, 0, 0)
                                    .map(|t| t.and_utc().timestamp_millis())
                                    .unwrap_or(0)
                            })
                        })
                        .ok()
                })
                .collect();
            (v, true)
        }
    };
    // times beyond the years 0001-9999 are errors of their records: window
    // bounds and watermarks around them would overflow
    let in_range = |v: i64| (MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&v);
    let mut outside = Vec::new();
    let millis = match (arrow::compute::min(&millis), arrow::compute::max(&millis)) {
        (Some(lo), Some(hi)) if !in_range(lo) || !in_range(hi) => {
            let kept: Int64Array = millis
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Some(v) if !in_range(v) => {
                        outside.push((i, v));
                        None
                    }
                    v => v,
                })
                .collect();
            kept
        }
        _ => millis,
    };
    let mut outside = outside.into_iter().peekable();
    for i in 0..n {
        if outside.peek().is_some_and(|(row, _)| *row == i) {
            let (_, v) = outside.next().expect("peeked");
            errors.push(TimeError {
                row: i,
                error: format!(
                    "the event time '{field}' ({v} ms since 1970) is outside the years 0001 to 9999; fix the record"
                ),
            });
            continue;
        }
        if millis.is_null(i) {
            let how = match format {
                TimeFormat::Native => "a timestamp".to_string(),
                TimeFormat::EpochMillis => "epoch_millis".to_string(),
                TimeFormat::EpochSeconds => "epoch_seconds".to_string(),
                TimeFormat::Iso8601 => "iso8601".to_string(),
                TimeFormat::Pattern(p) => format!("the pattern '{p}'"),
            };
            let error = if col.is_null(i) {
                format!("the event time '{field}' is missing")
            } else {
                format!(
                    "the event time '{field}' could not be read as {how}; fix the record or set event.time.format"
                )
            };
            errors.push(TimeError { row: i, error });
        }
    }
    let column = convert.then(|| {
        Arc::new(TimestampMillisecondArray::new(
            millis.values().clone(),
            millis.nulls().cloned(),
        )) as ArrayRef
    });
    ReadTime {
        millis,
        column,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    #[test]
    fn interval_literals_are_milliseconds() {
        use datafusion::arrow::datatypes::IntervalMonthDayNano;
        use datafusion::common::ScalarValue;
        let i =
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 1, 2_000_000_000)));
        assert_eq!(fixed_millis(&i), Some(86_402_000));
        assert_eq!(fixed_millis(&ScalarValue::Int64(Some(5))), Some(5));
        let months = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(1, 0, 0)));
        assert_eq!(fixed_millis(&months), None, "a month has no fixed length");
    }

    fn et(ooo: u64, idle: Option<u64>) -> EventTime {
        EventTime {
            field: "ts".into(),
            format: TimeFormat::Native,
            max_out_of_orderness: Duration::from_millis(ooo),
            idle_timeout: idle.map(Duration::from_millis),
            late: velo_config::time::LateData::Drop,
        }
    }

    #[test]
    fn watermark_is_the_slowest_active_part_minus_the_lag() {
        let mut t = WatermarkTracker::new(&et(100, Some(1_000)));
        let t0 = Instant::now();
        assert_eq!(t.watermark(t0), None);
        t.observe("a", 5_000, t0);
        t.observe("b", 2_000, t0);
        assert_eq!(t.watermark(t0), Some(1_900));
        t.observe("a", 9_000, t0 + Duration::from_millis(1_500));
        // b has been idle for 1.5 s: it no longer holds the watermark back
        assert_eq!(t.watermark(t0 + Duration::from_millis(1_500)), Some(8_900));
    }

    #[test]
    fn formats() {
        let col: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2024-01-01T00:00:01Z"),
            Some("nope"),
            None,
        ]));
        let r = read_time(&col, &TimeFormat::Iso8601, "ts");
        assert_eq!(r.millis.value(0), 1_704_067_201_000);
        assert_eq!(r.errors.len(), 2);
        assert!(r.errors[0].error.contains("iso8601"), "{:?}", r.errors);
        assert!(r.errors[1].error.contains("missing"), "{:?}", r.errors);
        let col: ArrayRef = Arc::new(StringArray::from(vec!["2024-01-01 00:00:02"]));
        let r = read_time(&col, &TimeFormat::Pattern("%Y-%m-%d %H:%M:%S".into()), "ts");
        assert_eq!(r.millis.value(0), 1_704_067_202_000);
        assert!(r.column.is_some());
        let col: ArrayRef = Arc::new(Int64Array::from(vec![1_704_067_203]));
        let r = read_time(&col, &TimeFormat::EpochSeconds, "ts");
        assert_eq!(r.millis.value(0), 1_704_067_203_000);
        let col: ArrayRef = Arc::new(StringArray::from(vec!["1704067204000"]));
        let r = read_time(&col, &TimeFormat::EpochMillis, "ts");
        assert_eq!(r.millis.value(0), 1_704_067_204_000);
    }

    #[test]
    fn times_at_the_edges_of_i64_are_errors_of_their_rows() {
        let col: ArrayRef = Arc::new(Int64Array::from(vec![i64::MIN, 5, i64::MAX, i64::MIN + 1]));
        let r = read_time(&col, &TimeFormat::EpochMillis, "ts");
        assert_eq!(r.millis.value(1), 5);
        let rows: Vec<usize> = r.errors.iter().map(|e| e.row).collect();
        assert_eq!(rows, vec![0, 2, 3]);
        assert!(
            r.errors[0].error.contains("outside the years"),
            "{:?}",
            r.errors
        );
        assert!(r.millis.is_null(0) && r.millis.is_null(2));
    }
}
