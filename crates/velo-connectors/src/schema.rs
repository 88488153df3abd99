//! Explicit schemas: `'id BIGINT, name VARCHAR, amount DOUBLE, ts TIMESTAMP'`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{ConnectorError, Result};

/// Whether a query column of type `q` can be written to a table column of
/// type `t` without losing values: the same type, or a wider one of the
/// same kind.
pub fn widens(q: &DataType, t: &DataType) -> bool {
    use DataType::*;
    let int = |d: &DataType| match d {
        Int8 => Some(1),
        Int16 => Some(2),
        Int32 => Some(4),
        Int64 => Some(8),
        _ => None,
    };
    match (q, t) {
        _ if q == t => true,
        (Null, _) => true,
        (a, b) if int(a).is_some() && int(b).is_some() => int(a) <= int(b),
        (Float32, Float64) => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Timestamp(_, a), Timestamp(_, b)) => a.is_some() == b.is_some(),
        (Date32 | Date64, Date32) => true,
        (Decimal128(p, s), Decimal128(p2, s2)) => s == s2 && p <= p2,
        (Struct(a), Struct(b)) => a.iter().all(|f| {
            b.iter()
                .find(|g| g.name() == f.name())
                .is_some_and(|g| widens(f.data_type(), g.data_type()))
        }),
        (List(a) | LargeList(a), List(b) | LargeList(b)) => widens(a.data_type(), b.data_type()),
        _ => false,
    }
}

/// A table sink's `schema.mode`: `merge` (true) adds the query's new
/// columns to the table; `strict` (false, the default) refuses them.
pub fn merge_mode(
    cfg: &velo_config::ConnectorConfig,
) -> std::result::Result<bool, velo_config::ConfigError> {
    match cfg
        .get("schema.mode")
        .map(|m| m.trim().to_ascii_lowercase())
    {
        None => Ok(false),
        Some(m) if m == "strict" => Ok(false),
        Some(m) if m == "merge" => Ok(true),
        Some(m) => Err(cfg.invalid("schema.mode", &m, "strict or merge")),
    }
}

/// Maps a SQL type name to Arrow.
pub fn sql_type(t: &str) -> Option<DataType> {
    let t = t.trim().to_ascii_uppercase();
    let base = t.split('(').next().unwrap_or("").trim();
    Some(match base {
        "BIGINT" | "INT8" | "LONG" | "INT64" => DataType::Int64,
        "INT" | "INTEGER" | "INT4" | "INT32" => DataType::Int32,
        "SMALLINT" | "INT2" | "INT16" => DataType::Int16,
        "TINYINT" | "INT1" => DataType::Int8,
        "BIGINT UNSIGNED" | "UBIGINT" => DataType::UInt64,
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT8" | "FLOAT64" => DataType::Float64,
        "FLOAT" | "REAL" | "FLOAT4" | "FLOAT32" => DataType::Float32,
        "VARCHAR" | "STRING" | "TEXT" | "CHAR" | "CHARACTER VARYING" | "UTF8" => DataType::Utf8,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "DATETIME" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "TIMESTAMPTZ" => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        "BYTEA" | "BINARY" | "VARBINARY" | "BLOB" | "BYTES" => DataType::Binary,
        "DECIMAL" | "NUMERIC" => {
            let args = t
                .split_once('(')
                .map(|(_, a)| a.trim_end_matches(')'))
                .unwrap_or("38,10");
            let mut it = args.split(',').map(|x| x.trim().parse::<u8>());
            let p = it.next().and_then(|r| r.ok()).unwrap_or(38);
            let s = it.next().and_then(|r| r.ok()).unwrap_or(0);
            DataType::Decimal128(p, s as i8)
        }
        _ => return None,
    })
}

/// Parses `name TYPE, name TYPE, ...` (types may carry `(p, s)`).
pub fn parse_schema(spec: &str) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    let mut parts = Vec::new();
    for c in spec.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (name, ty) = part.split_once(char::is_whitespace).ok_or_else(|| {
            ConnectorError::Other(format!(
                "schema column '{part}' has no type; write 'name TYPE', e.g. 'id BIGINT'"
            ))
        })?;
        let mut ty = ty.trim().to_string();
        let nullable = !ty.to_ascii_uppercase().ends_with("NOT NULL");
        if !nullable {
            ty.truncate(ty.len() - 8);
        }
        let dt = sql_type(&ty).ok_or_else(|| ConnectorError::Other(format!("unknown type '{}' for schema column '{name}'; use BIGINT, INT, DOUBLE, VARCHAR, BOOLEAN, DATE, TIMESTAMP, DECIMAL(p,s) or BYTEA", ty.trim())))?;
        fields.push(Field::new(name.trim_matches('"'), dt, nullable));
    }
    if fields.is_empty() {
        return Err(ConnectorError::Other("the schema is empty".into()));
    }
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schema() {
        let s =
            parse_schema("id BIGINT NOT NULL, amount DECIMAL(10, 2), name VARCHAR, ts TIMESTAMP")
                .unwrap();
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert!(!s.field(0).is_nullable());
        assert_eq!(s.field(1).data_type(), &DataType::Decimal128(10, 2));
        assert!(
            parse_schema("id WHATEVER")
                .unwrap_err()
                .to_string()
                .contains("unknown type 'WHATEVER'")
        );
    }

    #[test]
    fn types_widen_only_without_loss() {
        assert!(widens(&DataType::Int32, &DataType::Int64));
        assert!(!widens(&DataType::Int64, &DataType::Int32));
        assert!(widens(&DataType::Utf8View, &DataType::Utf8));
        assert!(!widens(&DataType::Utf8, &DataType::Int64));
        assert!(!widens(&DataType::Float64, &DataType::Float32));
        assert!(widens(
            &DataType::Decimal128(10, 2),
            &DataType::Decimal128(12, 2)
        ));
        assert!(!widens(
            &DataType::Decimal128(10, 2),
            &DataType::Decimal128(12, 3)
        ));
    }
}
