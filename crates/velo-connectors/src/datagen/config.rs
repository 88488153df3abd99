//! Typed configuration of the generator.

use velo_config::keys::{KeySpec, KeyType};
use velo_config::{ConfigError, ConnectorConfig};

/// Keys of `datagen`.
pub const KEYS: &[KeySpec] = &[
    KeySpec::new(
        "columns",
        KeyType::String,
        Some("id:sequence, key:int(0,99), value:float(0,1000), ts:timestamp"),
        "Column specs `name:kind(args)`; kinds: sequence(start), int(min,max), float(min,max), string(len), oneof(a|b|c), bool, timestamp(step_ms)",
    ),
    KeySpec::new(
        "rows",
        KeyType::UInt,
        Some("1000 (unbounded if a rate is set)"),
        "Rows to generate, then stop",
    ),
    KeySpec::new(
        "rate",
        KeyType::UInt,
        None,
        "Rows per second (paced); alias rows_per_second",
    ),
    KeySpec::new("rows_per_second", KeyType::UInt, None, "Alias of rate"),
    KeySpec::new(
        "seed",
        KeyType::UInt,
        Some("42"),
        "Seed: the same seed gives the same rows",
    ),
    KeySpec::new(
        "batch_size",
        KeyType::UInt,
        Some("8192"),
        "Rows per generated batch",
    ),
    KeySpec::new(
        "start_time",
        KeyType::UInt,
        Some("1704067200000"),
        "First timestamp (epoch millis) of timestamp columns",
    ),
    KeySpec::new(
        "null_rate",
        KeyType::Float,
        Some("0"),
        "Fraction of nulls in non-sequence columns",
    ),
];

/// The longest generated string.
const MAX_STRING_LEN: usize = 1 << 20;
/// The most rows of one generated batch.
const MAX_BATCH_SIZE: u64 = 1 << 20;
/// The latest `start_time`: 9999-12-31T23:59:59.999Z.
const MAX_START_TIME: u64 = 253_402_300_799_999;

/// One generated column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    /// start, start+1, ...
    Sequence(i64),
    /// Uniform integers in [min, max].
    Int(i64, i64),
    /// Uniform floats in [min, max).
    Float(f64, f64),
    /// Random alphanumeric strings of this length.
    Str(usize),
    /// One of these values.
    OneOf(Vec<String>),
    /// true/false.
    Bool,
    /// start_time + row * step_ms (event time in row order).
    Timestamp(i64),
}

/// A column spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// What to generate.
    pub kind: ColumnKind,
}

/// Typed generator configuration.
#[derive(Debug, Clone)]
pub struct DatagenConfig {
    /// Columns.
    pub columns: Vec<ColumnSpec>,
    /// Rows in total (None = unbounded).
    pub rows: Option<u64>,
    /// Rows per second.
    pub rate: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Rows per batch.
    pub batch_size: usize,
    /// First timestamp.
    pub start_time: i64,
    /// Null fraction.
    pub null_rate: f64,
}

fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses `name:kind(args), ...`.
pub fn parse_columns(spec: &str) -> Result<Vec<ColumnSpec>, String> {
    let mut cols = Vec::new();
    for part in split_top(spec) {
        let (name, kind) = part.split_once(':').ok_or_else(|| {
            format!("column spec '{part}' needs 'name:kind', e.g. 'amount:float(1,500)'")
        })?;
        let kind = kind.trim();
        let (k, args) = match kind.split_once('(') {
            Some((k, a)) => (
                k.trim().to_ascii_lowercase(),
                a.trim_end_matches(')').to_string(),
            ),
            None => (kind.to_ascii_lowercase(), String::new()),
        };
        let nums = |n: usize| -> Result<Vec<f64>, String> {
            let v: Vec<f64> = args
                .split(',')
                .map(|x| x.trim())
                .filter(|x| !x.is_empty())
                .map(|x| {
                    x.parse::<f64>()
                        .map_err(|_| format!("'{x}' is not a number in '{part}'"))
                })
                .collect::<Result<_, _>>()?;
            if v.len() != n && !v.is_empty() {
                return Err(format!("'{part}' takes {n} numbers"));
            }
            Ok(v)
        };
        // whole numbers as 64-bit integers (a float would round the large ones)
        let ints = |n: usize| -> Result<Vec<i64>, String> {
            let v: Vec<i64> = args
                .split(',')
                .map(|x| x.trim())
                .filter(|x| !x.is_empty())
                .map(|x| {
                    x.parse::<i64>().map_err(|_| {
                        format!("'{x}' in '{part}' is not a whole number between -2^63 and 2^63-1")
                    })
                })
                .collect::<Result<_, _>>()?;
            if v.len() != n && !v.is_empty() {
                return Err(format!("'{part}' takes {n} numbers"));
            }
            Ok(v)
        };
        let kind = match k.as_str() {
            "sequence" | "seq" => ColumnKind::Sequence(ints(1)?.first().copied().unwrap_or(1)),
            "int" | "integer" | "bigint" => {
                let v = ints(2)?;
                let (a, b) = if v.is_empty() {
                    (0, 1000)
                } else {
                    (v[0], v[1])
                };
                if a > b {
                    return Err(format!("'{part}': min is greater than max"));
                }
                ColumnKind::Int(a, b)
            }
            "float" | "double" => {
                let v = nums(2)?;
                let (a, b) = if v.is_empty() {
                    (0.0, 1.0)
                } else {
                    (v[0], v[1])
                };
                if a > b {
                    return Err(format!("'{part}': min is greater than max"));
                }
                if !(b - a).is_finite() {
                    return Err(format!(
                        "'{part}': min and max must be finite numbers with a finite difference"
                    ));
                }
                ColumnKind::Float(a, b)
            }
            "string" | "str" | "varchar" => {
                let len = ints(1)?.first().copied().unwrap_or(8);
                if !(1..=MAX_STRING_LEN as i64).contains(&len) {
                    return Err(format!(
                        "'{part}': a generated string is 1 to {MAX_STRING_LEN} characters long"
                    ));
                }
                ColumnKind::Str(len as usize)
            }
            "oneof" | "enum" => {
                let vals: Vec<String> = args
                    .split('|')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if vals.is_empty() {
                    return Err(format!("'{part}' needs values: oneof(a|b|c)"));
                }
                ColumnKind::OneOf(vals)
            }
            "bool" | "boolean" => ColumnKind::Bool,
            "timestamp" | "ts" => ColumnKind::Timestamp(ints(1)?.first().copied().unwrap_or(1000)),
            other => {
                return Err(format!(
                    "unknown generator kind '{other}' in '{part}'; use sequence, int, float, string, oneof, bool or timestamp"
                ));
            }
        };
        cols.push(ColumnSpec {
            name: name.trim().to_string(),
            kind,
        });
    }
    if cols.is_empty() {
        return Err("no columns given".into());
    }
    Ok(cols)
}

impl DatagenConfig {
    /// From the resolved connector config.
    pub fn from_config(cfg: &ConnectorConfig) -> Result<Self, ConfigError> {
        let spec = cfg
            .get("columns")
            .unwrap_or("id:sequence, key:int(0,99), value:float(0,1000), ts:timestamp");
        let columns = parse_columns(spec).map_err(|m| cfg.invalid("columns", spec, &m))?;
        let rate = match cfg.uint("rate")? {
            Some(r) => Some(r),
            None => cfg.uint("rows_per_second")?,
        }
        .filter(|r| *r > 0);
        let rows = match cfg.uint("rows")? {
            Some(r) => Some(r),
            None if rate.is_some() => None,
            None => Some(1000),
        };
        let batch_size = cfg.uint("batch_size")?.unwrap_or(8192).max(1);
        if batch_size > MAX_BATCH_SIZE {
            return Err(cfg.invalid(
                "batch_size",
                &batch_size.to_string(),
                &format!("at most {MAX_BATCH_SIZE} rows"),
            ));
        }
        let start_time = cfg.uint("start_time")?.unwrap_or(1_704_067_200_000);
        if start_time > MAX_START_TIME {
            return Err(cfg.invalid(
                "start_time",
                &start_time.to_string(),
                &format!("epoch milliseconds up to {MAX_START_TIME} (9999-12-31)"),
            ));
        }
        let null_rate = match cfg.get("null_rate") {
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(|| cfg.invalid("null_rate", v, "a number between 0 and 1"))?,
            None => 0.0,
        };
        Ok(Self {
            columns,
            rows,
            rate,
            seed: cfg.uint("seed")?.unwrap_or(42),
            batch_size: batch_size as usize,
            start_time: start_time as i64,
            null_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let c = parse_columns("id:sequence(10), a:int(1,5), f:float(0, 2.5), s:string(4), o:oneof(X|Y), b:bool, t:timestamp(60000)").unwrap();
        assert_eq!(c[0].kind, ColumnKind::Sequence(10));
        assert_eq!(c[2].kind, ColumnKind::Float(0.0, 2.5));
        assert_eq!(c[4].kind, ColumnKind::OneOf(vec!["X".into(), "Y".into()]));
        assert_eq!(c[6].kind, ColumnKind::Timestamp(60000));
        assert!(
            parse_columns("x:wat")
                .unwrap_err()
                .contains("unknown generator kind")
        );
        assert!(parse_columns("x").is_err());
    }

    #[test]
    fn specs_at_the_edges_are_refused_or_exact() {
        let c = parse_columns(
            "a:int(-9223372036854775808,9223372036854775807), s:sequence(9007199254740993)",
        )
        .unwrap();
        assert_eq!(c[0].kind, ColumnKind::Int(i64::MIN, i64::MAX));
        assert_eq!(c[1].kind, ColumnKind::Sequence(9_007_199_254_740_993));
        for bad in [
            "a:int(0,99999999999999999999)",
            "f:float(-inf,inf)",
            "f:float(-1e308,1e308)",
            "f:float(NaN,1)",
            "s:string(1000000000000)",
            "s:string(0)",
            "t:timestamp(1.5)",
        ] {
            assert!(parse_columns(bad).is_err(), "{bad}");
        }
    }
}
