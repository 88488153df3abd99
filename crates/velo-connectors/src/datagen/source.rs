//! Generates columns straight into Arrow arrays. Every value is a hash of
//! (seed, column, row), so the output does not depend on batch sizes, on
//! how the job is split into epochs, or on how many readers share the rows.

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
use crate::source::{Source, SourceReader, relaxed};

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

    /// Rows `[start, start + n)` as one batch; the columns `left_out` has
    /// are not generated but null. A sequence or timestamp column that
    /// would pass the largest value it can hold is an error, never a
    /// wrapped value.
    pub fn generate(
        cfg: &DatagenConfig,
        schema: &SchemaRef,
        start: u64,
        n: usize,
        left_out: Option<&crate::source::NullColumns>,
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
            .map(|(ci, c)| -> Result<ArrayRef> {
                if let Some(nulls) = left_out.and_then(|x| x.get(ci, n)) {
                    return Ok(nulls);
                }
                let ci = ci as u64;
                Ok(match &c.kind {
                    ColumnKind::Sequence(s) => {
                        // the last row's value must be a 64-bit integer too
                        let last = start.saturating_add(n.saturating_sub(1) as u64);
                        if i64::try_from(last)
                            .ok()
                            .and_then(|l| s.checked_add(l))
                            .is_none()
                        {
                            return Err(past_the_end(&c.name, "sequence", last));
                        }
                        Arc::new(Int64Array::from_iter_values(
                            rows.clone().map(|r| s + r as i64),
                        ))
                    }
                    ColumnKind::Int(a, b) => {
                        // the span of the full i64 range is 2^64: count in i128
                        let span = (i128::from(*b) - i128::from(*a) + 1) as u128;
                        let (a, seed) = (i128::from(*a), seed);
                        Arc::new(primitive::<Int64Type>(rows.clone(), nulls(ci), move |r| {
                            (a + (u128::from(mix(seed, ci, r)) % span) as i128) as i64
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
                        let last = start.saturating_add(n.saturating_sub(1) as u64);
                        let at = |r: u64| {
                            i64::try_from(r)
                                .ok()
                                .and_then(|r| r.checked_mul(*step))
                                .and_then(|d| cfg.start_time.checked_add(d))
                        };
                        if at(last).is_none_or(|t| !(MIN_TIME..=MAX_TIME).contains(&t)) {
                            return Err(past_the_end(&c.name, "timestamp", last));
                        }
                        Arc::new(TimestampMillisecondArray::from_iter_values(
                            rows.clone().map(|r| cfg.start_time + r as i64 * step),
                        ))
                    }
                })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
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
        self.open_part(batch_size, projection, 0, 1)
    }

    fn splittable(&self) -> bool {
        true
    }

    /// Part `part` of `parts` generates every `parts`-th block of rows,
    /// starting at block `part`, at its share of the rate: the values are a
    /// function of the row number, so the parts together make exactly the
    /// rows one reader would.
    fn open_part(
        &self,
        batch_size: usize,
        projection: Option<&[usize]>,
        part: usize,
        parts: usize,
    ) -> Result<SourceReader> {
        let cfg = self.cfg.clone();
        let schema = self.schema.clone();
        let block = cfg.batch_size.min(batch_size.max(1)) as u64;
        let nulls = crate::source::NullColumns::new(
            &schema,
            |i| projection.is_none_or(|p| p.contains(&i)),
            block as usize,
        );
        crate::source::generator_part(
            format!("velo-gen-{}", self.name),
            cfg.rate,
            cfg.rows,
            block,
            part,
            parts,
            move |row, n| DatagenSource::generate(&cfg, &schema, row, n as usize, Some(&nulls)),
        )
    }
}

/// The earliest timestamp a generator makes: 0001-01-01T00:00:00Z.
const MIN_TIME: i64 = -62_135_596_800_000;
/// The latest timestamp a generator makes: 9999-12-31T23:59:59.999Z.
const MAX_TIME: i64 = 253_402_300_799_999;

/// The error of a column that would run past what it can hold at `row`.
fn past_the_end(column: &str, kind: &str, row: u64) -> crate::ConnectorError {
    crate::ConnectorError::Other(format!(
        "datagen column '{column}': the {kind} runs past the largest value it can hold by row {row} (a {kind} stays within 64-bit integers, timestamps within the years 0001-9999); lower its start, its step or 'rows'"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagen::config::ColumnSpec;
    use arrow::array::AsArray;

    fn config(rows: u64, rate: Option<u64>, batch_size: usize) -> DatagenConfig {
        DatagenConfig {
            columns: vec![
                ColumnSpec {
                    name: "id".into(),
                    kind: ColumnKind::Sequence(0),
                },
                ColumnSpec {
                    name: "v".into(),
                    kind: ColumnKind::Int(0, 1_000_000),
                },
            ],
            rows: Some(rows),
            rate,
            seed: 7,
            batch_size,
            start_time: 0,
            null_rate: 0.0,
        }
    }

    /// (id, v) of every row `reader` delivers, in order.
    fn drain(reader: SourceReader) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for b in crate::source::drain_batches(reader) {
            let id = b.column(0).as_primitive::<Int64Type>();
            let v = b.column(1).as_primitive::<Int64Type>();
            out.extend(id.values().iter().copied().zip(v.values().iter().copied()));
        }
        out
    }

    /// The parts of a split generator together make exactly the rows of one
    /// reader (same values), each part in row order, also when paced.
    #[test]
    fn parts_together_make_the_rows_of_one_reader() {
        for (rows, rate, batch) in [
            (10_007, None, 100),
            (5_000, None, 8_192),
            (3_001, Some(50_000), 1_000),
        ] {
            let src = DatagenSource::new("g", config(rows, rate, batch));
            let whole = drain(src.open(batch, None).unwrap());
            assert_eq!(whole.len() as u64, rows);
            for parts in 2..=3 {
                let mut all = Vec::new();
                for part in 0..parts {
                    let got = drain(src.open_part(batch, None, part, parts).unwrap());
                    assert!(
                        got.windows(2).all(|w| w[0].0 < w[1].0),
                        "part {part} of {parts} in row order"
                    );
                    // a part has rows once there are blocks enough for all
                    let blocks =
                        rows.div_ceil(
                            batch.min(rate.map_or(batch, |r| r as usize / 10 / parts)) as u64
                        );
                    assert_eq!(
                        got.is_empty(),
                        blocks <= part as u64,
                        "part {part} of {parts}"
                    );
                    all.extend(got);
                }
                all.sort();
                assert_eq!(all, whole, "{rows} rows, rate {rate:?}, {parts} parts");
            }
        }
    }
}
