//! Generates columns straight into Arrow arrays. Every value is a hash of
//! (seed, column, row), so the output does not depend on batch sizes or on
//! how the job is split into epochs.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, PrimitiveArray, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit,
};

use super::config::{ColumnKind, DatagenConfig};
use crate::Result;
use crate::source::{Source, SourceEvent, SourceReader, relaxed};

/// The generator source.
#[derive(Debug)]
pub struct DatagenSource {
    name: String,
    cfg: DatagenConfig,
    schema: SchemaRef,
}

/// A hash of (seed, column, row): the generators' deterministic draws.
#[inline]
pub(crate) fn mix(seed: u64, col: u64, row: u64) -> u64 {
    // splitmix64 over the three inputs
    let mut z =
        seed ^ col.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ row.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash as a number in [0, 1).
#[inline]
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The values of `rows`, null where `null` says so; without a null draw no
/// validity bitmap is built.
fn primitive<T: ArrowPrimitiveType>(
    rows: std::ops::Range<u64>,
    null: Option<impl Fn(u64) -> bool>,
    value: impl Fn(u64) -> T::Native,
) -> PrimitiveArray<T> {
    match null {
        Some(null) => rows.map(|r| (!null(r)).then(|| value(r))).collect(),
        None => PrimitiveArray::from_iter_values(rows.map(value)),
    }
}

impl DatagenSource {
    /// A generator.
    pub fn new(name: &str, cfg: DatagenConfig) -> Self {
        let fields: Vec<Field> = cfg
            .columns
            .iter()
            .map(|c| {
                let (dt, nullable) = match c.kind {
                    ColumnKind::Sequence(_) => (DataType::Int64, false),
                    ColumnKind::Int(..) => (DataType::Int64, true),
                    ColumnKind::Float(..) => (DataType::Float64, true),
                    ColumnKind::Str(_) | ColumnKind::OneOf(_) => (DataType::Utf8, true),
                    ColumnKind::Bool => (DataType::Boolean, true),
                    ColumnKind::Timestamp(_) => {
                        (DataType::Timestamp(TimeUnit::Millisecond, None), false)
                    }
                };
                Field::new(&c.name, dt, nullable)
            })
            .collect();
        Self {
            name: name.to_string(),
            cfg,
            schema: relaxed(&Schema::new(fields)),
        }
    }

    /// Rows `[start, start + n)` as one batch; columns outside `wanted` are null.
    pub fn generate(
        cfg: &DatagenConfig,
        schema: &SchemaRef,
        start: u64,
        n: usize,
        wanted: Option<&[usize]>,
    ) -> Result<RecordBatch> {
        let seed = cfg.seed;
        let null_threshold = (cfg.null_rate * u64::MAX as f64) as u64;
        let is_null =
            |c: u64, r: u64| cfg.null_rate > 0.0 && mix(seed ^ 0xABCD, c, r) < null_threshold;
        // the null draw of column c, when the generator makes nulls at all
        let nulls = |c: u64| (cfg.null_rate > 0.0).then_some(move |r: u64| is_null(c, r));
        let rows = start..start + n as u64;
        let cols = cfg
            .columns
            .iter()
            .enumerate()
            .map(|(ci, c)| -> ArrayRef {
                if wanted.is_some_and(|w| !w.contains(&ci)) {
                    return arrow::array::new_null_array(schema.field(ci).data_type(), n);
                }
                let ci = ci as u64;
                match &c.kind {
                    ColumnKind::Sequence(s) => Arc::new(Int64Array::from_iter_values(
                        rows.clone().map(|r| s + r as i64),
                    )),
                    ColumnKind::Int(a, b) => {
                        let span = (b - a) as u64 + 1;
                        Arc::new(primitive::<Int64Type>(rows.clone(), nulls(ci), |r| {
                            a + (mix(seed, ci, r) % span) as i64
                        }))
                    }
                    ColumnKind::Float(a, b) => {
                        // two decimals, as money-like values read better
                        Arc::new(primitive::<Float64Type>(rows.clone(), nulls(ci), |r| {
                            ((a + unit(mix(seed, ci, r)) * (b - a)) * 100.0).round() / 100.0
                        }))
                    }
                    ColumnKind::Str(len) => {
                        const ALPHA: &[u8] =
                            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
                        Arc::new(StringArray::from_iter(rows.clone().map(|r| {
                            (!is_null(ci, r)).then(|| {
                                let mut h = mix(seed, ci, r);
                                (0..*len)
                                    .map(|i| {
                                        if i % 10 == 9 {
                                            h = mix(h, ci, r);
                                        }
                                        let ch = ALPHA[(h % ALPHA.len() as u64) as usize] as char;
                                        h /= ALPHA.len() as u64;
                                        ch
                                    })
                                    .collect::<String>()
                            })
                        })))
                    }
                    ColumnKind::OneOf(vals) => {
                        Arc::new(StringArray::from_iter(rows.clone().map(|r| {
                            (!is_null(ci, r)).then(|| {
                                vals[(mix(seed, ci, r) % vals.len() as u64) as usize].as_str()
                            })
                        })))
                    }
                    ColumnKind::Bool => Arc::new(BooleanArray::from_iter(
                        rows.clone()
                            .map(|r| (!is_null(ci, r)).then(|| mix(seed, ci, r) & 1 == 1)),
                    )),
                    ColumnKind::Timestamp(step) => {
                        Arc::new(TimestampMillisecondArray::from_iter_values(
                            rows.clone().map(|r| cfg.start_time + r as i64 * step),
                        ))
                    }
                }
            })
            .collect();
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    }
}

impl Source for DatagenSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.cfg.rows.is_some()
    }

    fn describe(&self) -> String {
        format!(
            "datagen {} rows{}",
            self.cfg
                .rows
                .map(|r| r.to_string())
                .unwrap_or_else(|| "unbounded".into()),
            self.cfg
                .rate
                .map(|r| format!(" at {r} rows/s"))
                .unwrap_or_default()
        )
    }

    fn open(&self, batch_size: usize, projection: Option<&[usize]>) -> Result<SourceReader> {
        let wanted: Option<Vec<usize>> = projection.map(<[usize]>::to_vec);
        let cfg = self.cfg.clone();
        let schema = self.schema.clone();
        let batch = cfg.batch_size.min(batch_size.max(1));
        crate::source::spawn_generator(
            format!("velo-gen-{}", self.name),
            cfg.rate,
            move |row, cap| {
                let n = match cfg.rows {
                    Some(total) if row >= total => return None,
                    Some(total) => ((total - row) as usize).min(batch),
                    None => batch,
                };
                // paced: batches small enough to keep latency low
                let n = cap.map_or(n, |c| n.min(c as usize));
                let ev = match DatagenSource::generate(&cfg, &schema, row, n, wanted.as_deref()) {
                    Ok(b) => SourceEvent::Batch(b),
                    Err(e) => SourceEvent::Error(e.to_string()),
                };
                Some((ev, row + n as u64))
            },
        )
    }
}
