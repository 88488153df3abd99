//! Reading the user's text files (SQL applications, YAML config files, the
//! global config) as the user's other tools read them, within bounds.
//!
//! A file is read with a size limit, so that `extends: /dev/zero` or a huge
//! file by mistake is an error, not memory growing until the machine gives
//! up; a UTF-8 byte-order mark is skipped (editors on Windows write one);
//! UTF-16 and other non-UTF-8 text is refused with a message naming the
//! encoding and how to convert it.

use std::io::Read;
use std::path::Path;

use crate::{ConfigError, Result};

/// The largest SQL application or config file read: 16 MiB.
pub const MAX_TEXT_BYTES: u64 = 16 << 20;

/// Reads the text file `path` (a `what`: "SQL", "config"), at most `limit`
/// bytes, as UTF-8 without a byte-order mark.
pub fn read_text(path: &Path, what: &str, limit: u64) -> Result<String> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.is_dir() {
        return Err(bad(path, format!("is a directory, not a {what} file")));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(bad(
            path,
            format!(
                "is larger than {} MiB, the most velo reads of a {what} file; is it the file you meant?",
                limit >> 20
            ),
        ));
    }
    decode(path, bytes)
}

/// `bytes` of the file `path` as text (see [`read_text`]).
pub fn decode(path: &Path, bytes: Vec<u8>) -> Result<String> {
    match utf16_order(&bytes) {
        Some(order) => Err(bad(
            path,
            format!(
                "is UTF-16 ({order}) text; velo reads UTF-8: convert it, e.g. `iconv -f UTF-16 -t UTF-8 '{}' > out`",
                path.display()
            ),
        )),
        None => {
            let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
            match std::str::from_utf8(body) {
                Ok(s) => Ok(s.to_string()),
                Err(e) => Err(bad(
                    path,
                    format!(
                        "is not UTF-8 text (byte {} is not valid UTF-8); save it as UTF-8",
                        e.valid_up_to() + (bytes.len() - body.len())
                    ),
                )),
            }
        }
    }
}

/// Whether `bytes` look like UTF-16 text, and in which byte order: a
/// byte-order mark, or NUL in every other byte of the first characters.
pub fn utf16_order(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\xFF\xFE") {
        return Some("little-endian");
    }
    if bytes.starts_with(b"\xFE\xFF") {
        return Some("big-endian");
    }
    let head = &bytes[..bytes.len().min(64) & !1];
    if head.len() >= 4 {
        let pairs = head.chunks(2);
        if pairs.clone().all(|p| p[1] == 0 && p[0] != 0) {
            return Some("little-endian");
        }
        if pairs.clone().all(|p| p[0] == 0 && p[1] != 0) {
            return Some("big-endian");
        }
    }
    None
}

fn bad(path: &Path, message: String) -> ConfigError {
    ConfigError::BadFile {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn a_utf8_bom_is_skipped() {
        let f = file(b"\xEF\xBB\xBFSELECT 1");
        assert_eq!(read_text(f.path(), "SQL", 100).unwrap(), "SELECT 1");
    }

    #[test]
    fn utf16_is_named_with_how_to_convert() {
        let text: Vec<u8> = "\u{feff}SELECT 1"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let e = read_text(file(&text).path(), "SQL", 100)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("UTF-16 (little-endian)") && e.contains("iconv"),
            "{e}"
        );
        // without a byte-order mark too
        let text: Vec<u8> = "SELECT 1"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        let e = read_text(file(&text).path(), "SQL", 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("UTF-16 (big-endian)"), "{e}");
    }

    #[test]
    fn other_bytes_are_refused_with_their_offset() {
        let e = read_text(file(b"ab\xFFcd").path(), "SQL", 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("byte 2"), "{e}");
    }

    #[test]
    fn an_endless_file_stops_at_the_limit() {
        let e = read_text(Path::new("/dev/zero"), "config", 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        let e = read_text(Path::new("/"), "config", 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
    }
}
