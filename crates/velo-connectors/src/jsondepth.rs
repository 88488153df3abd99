//! Deeply nested JSON is a bad record, not a crash.
//!
//! arrow-json reads any nesting into its tape without recursion, but when
//! a value does not fit the schema it formats the value for its error
//! message recursively, one stack frame per level: a record nested 100,000
//! levels deep overflows the reading thread's stack and aborts the process.
//! Records nested deeper than [`MAX_JSON_DEPTH`] are therefore set aside
//! before they reach the decoder, and routed as bad records.
//!
//! The check is one `memchr` pass that counts brackets per record; only a
//! record with more than [`MAX_JSON_DEPTH`] brackets is scanned exactly.

/// The deepest nesting of objects and arrays a JSON record may have.
pub const MAX_JSON_DEPTH: usize = 1000;

/// The error of a record nested too deeply.
pub fn too_deep_message() -> String {
    format!(
        "the record nests objects or arrays more than {MAX_JSON_DEPTH} levels deep; velo reads JSON up to that depth"
    )
}

/// Whether some record among the newline-separated `records` may nest
/// deeper than [`MAX_JSON_DEPTH`] (exactly: some record does).
pub fn any_too_deep(records: &[u8]) -> bool {
    let mut brackets = 0usize;
    let mut start = 0usize;
    for i in memchr::memchr3_iter(b'\n', b'[', b'{', records) {
        if records[i] == b'\n' {
            if brackets > MAX_JSON_DEPTH && too_deep(&records[start..i]) {
                return true;
            }
            brackets = 0;
            start = i + 1;
        } else {
            brackets += 1;
        }
    }
    brackets > MAX_JSON_DEPTH && too_deep(&records[start..])
}

/// Whether one JSON value nests deeper than [`MAX_JSON_DEPTH`] (brackets
/// inside strings do not count).
pub fn too_deep(value: &[u8]) -> bool {
    if memchr::memchr2_iter(b'[', b'{', value)
        .nth(MAX_JSON_DEPTH)
        .is_none()
    {
        return false;
    }
    let (mut depth, mut in_string, mut escape) = (0usize, false, false);
    for &b in value {
        if in_string {
            match b {
                _ if escape => escape = false,
                b'\\' => escape = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_counted_outside_strings() {
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(!too_deep(deep(MAX_JSON_DEPTH - 1).as_bytes()));
        assert!(too_deep(deep(MAX_JSON_DEPTH).as_bytes()));
        let in_string = format!("{{\"a\":\"{}\"}}", "[".repeat(5000));
        assert!(!too_deep(in_string.as_bytes()));
        let records = format!("{{\"a\":1}}\n{}\n{{\"a\":2}}\n", deep(100_000));
        assert!(any_too_deep(records.as_bytes()));
        let flat = "{\"a\":[1]}\n".repeat(10_000);
        assert!(!any_too_deep(flat.as_bytes()));
    }
}
