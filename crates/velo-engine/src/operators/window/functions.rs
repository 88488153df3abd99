//! The window functions (`tumble`, `hop`, `session` and their ends) as
//! DataFusion scalar functions.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::*;

/// The window functions as DataFusion scalar functions. `tumble` and
/// `tumble_end` compute their value (so a batch run of the same query is the
/// oracle of the streaming one); the others exist only inside the window
/// operator.
pub fn udfs() -> Vec<ScalarUDF> {
    let mut v: Vec<ScalarUDF> = [
        "tumble",
        "tumble_end",
        "hop",
        "hop_end",
        "session",
        "session_end",
    ]
    .into_iter()
    .map(|n| {
        ScalarUDF::new_from_impl(WindowFn {
            name: n.to_string(),
            signature: Signature::any(
                if n.starts_with("hop") { 3 } else { 2 },
                Volatility::Immutable,
            ),
        })
    })
    .collect();
    v.push(ScalarUDF::new_from_impl(WindowFn {
        name: PROCTIME.to_string(),
        signature: Signature::nullary(Volatility::Volatile),
    }));
    v
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct WindowFn {
    name: String,
    signature: Signature,
}

pub(super) fn time_type(t: &DataType) -> Result<DataType> {
    match t {
        DataType::Timestamp(_, tz) => Ok(DataType::Timestamp(TimeUnit::Millisecond, tz.clone())),
        t if t.is_integer() => Ok(DataType::Timestamp(TimeUnit::Millisecond, None)),
        t => Err(DataFusionError::Plan(format!(
            "a window's time column must be a timestamp or epoch milliseconds, not {t}; declare '<source>.event.time.format' to read text as time"
        ))),
    }
}

/// Epoch milliseconds of a time column (timestamp of any unit, or integers).
pub fn to_millis(a: &ArrayRef) -> Result<Int64Array> {
    let ms = match a.data_type() {
        DataType::Timestamp(_, _) => {
            arrow::compute::cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?
        }
        _ => a.clone(),
    };
    Ok(arrow::compute::cast(&ms, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// The longest window (or session gap): 1,000 years.
pub(super) const MAX_WINDOW_MS: i64 = 1_000 * 366 * 86_400_000;
/// The most windows a HOP window may put one record in (size / slide).
pub(super) const MAX_WINDOWS_PER_RECORD: i64 = 10_000;

/// Refuses windows whose bounds could overflow or that put a record in
/// more windows than can be kept.
pub(super) fn check_window(kind: &WindowKind) -> Result<()> {
    let (size, slide) = match *kind {
        WindowKind::Tumble { size } => (size, size),
        WindowKind::Hop { slide, size } => (size, slide),
        WindowKind::Session { gap } => (gap, gap),
        WindowKind::Global => return Ok(()),
    };
    if size > MAX_WINDOW_MS || slide > MAX_WINDOW_MS {
        return Err(DataFusionError::Plan(format!(
            "a window of {} is longer than the 1,000 years a window may span; use a shorter interval",
            crate::time::show_duration(size.max(slide))
        )));
    }
    if size / slide > MAX_WINDOWS_PER_RECORD {
        return Err(DataFusionError::Plan(format!(
            "a HOP window of {} sliding every {} puts each record in {} windows, more than the {MAX_WINDOWS_PER_RECORD} a record may be in; slide by at least {}",
            crate::time::show_duration(size),
            crate::time::show_duration(slide),
            size / slide,
            crate::time::show_duration((size / MAX_WINDOWS_PER_RECORD).max(1))
        )));
    }
    Ok(())
}

pub(super) fn interval_millis(v: &ScalarValue) -> Result<i64> {
    let Some(ms) = crate::time::fixed_millis(v) else {
        return Err(DataFusionError::Plan(format!(
            "a window size must be a fixed interval such as INTERVAL '1' MINUTE (months and years vary in length), not {v}"
        )));
    };
    if ms <= 0 {
        return Err(DataFusionError::Plan(format!(
            "a window size must be positive, not {ms} ms"
        )));
    }
    Ok(ms)
}

impl ScalarUDFImpl for WindowFn {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if self.name == PROCTIME {
            return Ok(DataType::Timestamp(TimeUnit::Millisecond, None));
        }
        time_type(&arg_types[0])
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        if self.name == PROCTIME {
            return Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
                Some(crate::time::now_millis()),
                None,
            )));
        }
        if !self.name.starts_with("tumble") {
            return Err(DataFusionError::Execution(format!(
                "{}() is computed by the window operator of a streaming GROUP BY and cannot be used elsewhere",
                self.name
            )));
        }
        let size = match &args.args[1] {
            ColumnarValue::Scalar(s) => interval_millis(s)?,
            _ => {
                return Err(DataFusionError::Plan(
                    "a window size must be a constant interval".into(),
                ));
            }
        };
        let ts = to_millis(&args.args[0].to_array(n)?)?;
        let end = self.name.ends_with("_end");
        let out: Int64Array = ts.unary(|t| {
            let s = t.div_euclid(size) * size;
            if end { s + size } else { s }
        });
        let tz = match args.return_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let arr = TimestampMillisecondArray::new(out.values().clone(), out.nulls().cloned())
            .with_timezone_opt(tz);
        Ok(ColumnarValue::Array(Arc::new(arr)))
    }
}
