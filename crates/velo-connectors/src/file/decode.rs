//! Line-oriented decoding (CSV, JSON Lines, JSON arrays) straight into Arrow,
//! unit by unit, with bad-record isolation.
//!
//! The fast path hands a unit of up to `batch_size` complete records to the
//! arrow-csv / arrow-json decoder in one call. Only when that fails is the
//! unit decoded record by record, to tell good records (kept) from bad ones
//! (reported with their line and raw text): a bad line costs its own unit
//! some speed, never the rest of the file.

use std::io::Read;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use bytes::Bytes;

/// Which decoder.
#[derive(Debug, Clone)]
pub(crate) enum LineFormat {
    /// arrow-json.
    Json,
    /// arrow-csv with delimiter and quote.
    Csv { delimiter: u8, quote: u8 },
}

pub(crate) enum Dec {
    Json(arrow::json::reader::Decoder),
    Csv(Box<arrow::csv::reader::Decoder>),
}

impl Dec {
    /// A decoder of `schema` (the file's full data schema) that builds only
    /// the `projection` columns.
    fn new(
        fmt: &LineFormat,
        schema: &SchemaRef,
        projection: Option<&[usize]>,
        batch_size: usize,
    ) -> Result<Self, ArrowError> {
        Ok(match fmt {
            // arrow-json skips fields that are not in its schema
            LineFormat::Json => {
                let schema = match projection {
                    Some(p) => Arc::new(schema.project(p)?),
                    None => schema.clone(),
                };
                Dec::Json(
                    arrow::json::ReaderBuilder::new(schema)
                        .with_batch_size(batch_size)
                        .build_decoder()?,
                )
            }
            LineFormat::Csv { delimiter, quote } => {
                let mut b = arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_header(false)
                    .with_delimiter(*delimiter)
                    .with_quote(*quote)
                    .with_batch_size(batch_size);
                if let Some(p) = projection {
                    b = b.with_projection(p.to_vec());
                }
                Dec::Csv(Box::new(b.build_decoder()))
            }
        })
    }

    fn decode(&mut self, b: &[u8]) -> Result<usize, ArrowError> {
        match self {
            Dec::Json(d) => d.decode(b),
            Dec::Csv(d) => d.decode(b),
        }
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        match self {
            Dec::Json(d) => d.flush(),
            Dec::Csv(d) => d.flush(),
        }
    }

    /// Decodes all of `bytes` into batches.
    fn decode_all(
        &mut self,
        mut bytes: &[u8],
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), ArrowError> {
        while !bytes.is_empty() {
            let n = self.decode(bytes)?;
            bytes = &bytes[n..];
            if n == 0 {
                match self.flush()? {
                    Some(b) => out.push(b),
                    None => return Err(ArrowError::ParseError("decoder made no progress".into())),
                }
            }
        }
        if let Some(b) = self.flush()? {
            out.push(b);
        }
        Ok(())
    }
}

/// A record the decoder refused.
pub(crate) struct Rejected {
    pub line: u64,
    pub error: String,
    pub raw: String,
}

/// What a file's units are decoded with (shared by the decoding threads).
#[derive(Debug)]
pub(crate) struct UnitFormat {
    pub fmt: LineFormat,
    /// The file's full data schema.
    pub schema: SchemaRef,
    /// Data columns to build (None: all).
    pub projection: Option<Vec<usize>>,
    pub batch_size: usize,
    /// Compute the first line of every good record (for `_row_number`).
    pub want_lines: bool,
}

/// A run of complete records cut from a file.
pub(crate) struct Unit {
    /// A slice of the splitter's segment.
    pub bytes: Bytes,
    /// 1-based physical line of the first byte.
    pub first_line: u64,
    /// The physical line just after it: where reading resumes.
    pub next_line: u64,
    /// At least the length of its longest line (exact for a line across
    /// a block's edge, [`BLOCK`] for those inside one). JSON: a well-formed
    /// line nests at most half its length deep, so only a unit with a line
    /// longer than twice the deepest nesting allowed needs the depth scan
    /// before the whole-unit decode; a malformed one fails that decode and
    /// every record is then checked on its own.
    pub longest: usize,
}

/// Where the next unit lies in the splitter's buffer.
struct Span {
    start: usize,
    end: usize,
    /// Physical lines it covers.
    lines: u64,
    /// A bound of its longest line (JSON).
    longest: usize,
    /// Records it holds.
    records: usize,
}

/// What decoding a unit gives: batches, the line of each good record (if
/// asked), and the records the decoder refused.
pub(crate) type Decoded = (Vec<RecordBatch>, Vec<u64>, Vec<Rejected>);

/// Splits a byte stream into units of complete records (quote-aware for
/// CSV). The stream is read in segments of about [`UNITS_PER_SEGMENT`]
/// units (sized from the records read so far, between [`MIN_SEGMENT`] and
/// [`MAX_SEGMENT`] bytes) and each unit is a slice of its segment, shared
/// with the decoding threads without a copy: a unit may end early at its
/// segment's last complete record, and only a record cut by the segment's
/// end is carried into the next one (copied).
pub(crate) struct UnitSplitter<R: Read> {
    r: R,
    /// The current segment; `seg[pos..]` is unread.
    seg: Bytes,
    pos: usize,
    eof: bool,
    /// 1-based physical line of `seg[pos]`.
    line: u64,
    fmt: LineFormat,
    /// Buffers of segments no unit holds any more.
    spare: Spare,
    /// How the next segment's size is chosen.
    sizing: Sizing,
    /// Bytes and records of the units cut so far.
    cut: (usize, usize),
}

/// How many bytes a segment reads (beside the record carried over).
#[derive(Clone, Copy, Debug)]
enum Sizing {
    /// About [`UNITS_PER_SEGMENT`] units of the records seen so far.
    Adaptive,
    /// Always this many (tests: segment ends at known offsets).
    #[cfg(test)]
    Fixed(usize),
}

/// Bytes read into a segment at most (records of ~64 bytes and more).
const MAX_SEGMENT: usize = 4 << 20;

/// Bytes read into a segment at least.
const MIN_SEGMENT: usize = 256 << 10;

/// The first segment's size, before any record's length is known: a unit
/// of records up to ~100 bytes fits (JSON Lines of 8,192 orders: ~800 KB).
const FIRST_SEGMENT: usize = 1 << 20;

/// Units a segment holds, once the records' length is known. Each segment
/// ends with a unit cut short and carries a cut record over, so a segment
/// holds several units; but short records need no 4 MB segments (1BRC's
/// 17-byte lines: 8 units of 8,192 are ~1.1 MB), which keeps the buffers
/// a file source holds (up to [`SPARE_BUFFERS`] kept and a few in use)
/// small. (Measured on 1BRC: no CPU difference beyond this VM's noise
/// against 4 MB segments; benches/RESULTS.md, 2026-12-07.)
const UNITS_PER_SEGMENT: usize = 8;

/// Bytes whose newlines are counted at once when cutting units.
const BLOCK: usize = 512;

/// Segment buffers kept for the next segments. A fresh 4 MB buffer costs
/// the kernel freshly zeroed pages on the read into it (measured: a tenth
/// of a JSON Lines job's CPU); a segment's buffer comes back here when the
/// last unit cut from it is decoded.
#[derive(Clone, Default)]
struct Spare(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Buffers kept at most: the units in flight span two or three segments.
const SPARE_BUFFERS: usize = 4;

impl Spare {
    /// A buffer of at least `len` (initialized) bytes, a kept one if there
    /// is one (a new one has a sixteenth more room, for the record carried
    /// over, so that it fits the next segments too). Kept buffers stay
    /// initialized, so that a segment is read with one `read` call into
    /// its whole length instead of `read_to_end`'s growing ones (which go
    /// through the file's `BufReader` and copy the bytes twice).
    fn take(&self, len: usize) -> Vec<u8> {
        let kept = self.0.lock().ok().and_then(|mut v| v.pop());
        match kept {
            Some(buf) if buf.len() >= len => buf,
            _ => vec![0; len + len / 16],
        }
    }
}

/// A segment's buffer, handed back to its [`Spare`] when dropped; the
/// segment is its first `len` bytes.
struct SegmentBuf {
    buf: Vec<u8>,
    len: usize,
    spare: Spare,
}

impl AsRef<[u8]> for SegmentBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for SegmentBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // one record longer than a segment made it big: not kept
        if buf.len() > 2 * MAX_SEGMENT {
            return;
        }
        if let Ok(mut kept) = self.spare.0.lock() {
            if kept.len() < SPARE_BUFFERS {
                kept.push(buf);
            }
        }
    }
}

impl<R: Read> UnitSplitter<R> {
    pub fn new(r: R, fmt: LineFormat) -> Self {
        Self {
            r,
            seg: Bytes::new(),
            pos: 0,
            eof: false,
            line: 1,
            fmt,
            spare: Spare::default(),
            sizing: Sizing::Adaptive,
            cut: (0, 0),
        }
    }

    /// A splitter whose segments read `segment` bytes each.
    #[cfg(test)]
    fn with_segment(r: R, fmt: LineFormat, segment: usize) -> Self {
        Self {
            sizing: Sizing::Fixed(segment),
            ..Self::new(r, fmt)
        }
    }

    /// Bytes the next segment reads, for units of up to `max` records:
    /// [`UNITS_PER_SEGMENT`] units of the records cut so far.
    fn segment_len(&self, max: usize) -> usize {
        let (bytes, records) = self.cut;
        match self.sizing {
            #[cfg(test)]
            Sizing::Fixed(n) => n,
            Sizing::Adaptive if records == 0 => FIRST_SEGMENT,
            Sizing::Adaptive => (bytes / records)
                .max(1)
                .saturating_mul(max)
                .saturating_mul(UNITS_PER_SEGMENT)
                .clamp(MIN_SEGMENT, MAX_SEGMENT),
        }
    }

    /// Skips one record (a CSV header). Returns false at end of input.
    pub fn skip_record(&mut self) -> std::io::Result<bool> {
        Ok(self.next(1)?.is_some())
    }

    /// The next unit of up to `max` records, or None at end of input.
    pub fn next(&mut self, max: usize) -> std::io::Result<Option<Unit>> {
        let Some(Span {
            start,
            end,
            lines,
            longest,
            records,
        }) = self.next_unit(max)?
        else {
            return Ok(None);
        };
        let unit = Unit {
            bytes: self.seg.slice(start..end),
            first_line: self.line,
            next_line: self.line + lines,
            longest,
        };
        self.pos = end;
        self.line += lines;
        self.cut = (
            self.cut.0.saturating_add(end - start),
            self.cut.1.saturating_add(records),
        );
        Ok(Some(unit))
    }

    /// The 1-based physical line of the next unread byte.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Finds the next unit of up to `max` records in the segment (reading
    /// the next one when not even one record is complete), or None at end
    /// of input.
    ///
    /// The segment is cut in blocks of [`BLOCK`] bytes. A block outside
    /// quotes that holds no quote character (always so for JSON) and not
    /// the `max`-th record's end is counted at once (a SIMD count of its
    /// newlines, each one ending a record); any other block is walked
    /// newline by newline, quote-aware.
    fn next_unit(&mut self, max: usize) -> std::io::Result<Option<Span>> {
        let quote = match self.fmt {
            LineFormat::Csv { quote, .. } => Some(quote),
            LineFormat::Json => None,
        };
        let mut scan = self.pos;
        let mut records = 0usize;
        let mut lines = 0u64;
        let mut in_quote = false;
        // where the current line starts, and a bound of the longest line
        // so far (exact for lines that cross a block's edge)
        let mut line_start = self.pos;
        let mut longest = 0usize;
        // the end of the last complete record, with the lines, the
        // longest line and the records up to it
        let mut complete: Option<(usize, u64, usize, usize)> = None;
        loop {
            // counted blocks
            while !in_quote && records < max {
                let Some(block) = self.seg.get(scan..scan + BLOCK) else {
                    break;
                };
                if quote.is_some_and(|q| memchr::memchr(q, block).is_some()) {
                    break;
                }
                let n = memchr::memchr_iter(b'\n', block).count();
                if records + n >= max {
                    break;
                }
                // a block inside a long line: it only moves on
                if n == 0 {
                    scan += BLOCK;
                    continue;
                }
                if let (Some(first), Some(last)) =
                    (memchr::memchr(b'\n', block), memchr::memrchr(b'\n', block))
                {
                    // the lines between them lie inside the block
                    longest = longest.max(scan + first - line_start).max(BLOCK);
                    line_start = scan + last + 1;
                    records += n;
                    lines += n as u64;
                    complete = Some((line_start, lines, longest, records));
                }
                scan += BLOCK;
            }
            // one block (or the segment's rest) walked record by record
            let stop = if records < max && scan + BLOCK < self.seg.len() {
                scan + BLOCK
            } else {
                self.seg.len()
            };
            let hay = &self.seg[scan..stop];
            match quote {
                None => {
                    for i in memchr::memchr_iter(b'\n', hay) {
                        longest = longest.max(scan + i - line_start);
                        line_start = scan + i + 1;
                        lines += 1;
                        records += 1;
                        complete = Some((line_start, lines, longest, records));
                        if records == max {
                            break;
                        }
                    }
                }
                Some(q) => {
                    for i in memchr::memchr2_iter(b'\n', q, hay) {
                        if hay[i] == q {
                            in_quote = !in_quote;
                            continue;
                        }
                        lines += 1;
                        if !in_quote {
                            longest = longest.max(scan + i - line_start);
                            line_start = scan + i + 1;
                            records += 1;
                            complete = Some((line_start, lines, longest, records));
                            if records == max {
                                break;
                            }
                        }
                    }
                }
            }
            scan = stop;
            if records < max && scan < self.seg.len() {
                continue;
            }
            let span = |(end, lines, longest, records)| Span {
                start: self.pos,
                end,
                lines,
                longest,
                records,
            };
            if records == max || (!self.eof && complete.is_some()) {
                return Ok(complete.map(span));
            }
            if self.eof {
                // the rest, a record left open by a quote included (the
                // last line ends with a newline: `refill` adds it)
                let end = self.seg.len();
                let longest = longest.max(end - line_start);
                // a record left open counts as one
                let records = records + usize::from(end > line_start);
                return Ok((end > self.pos).then(|| span((end, lines, longest, records))));
            }
            // not one complete record: the next segment, this one's
            // partial record carried over
            scan -= self.pos;
            line_start -= self.pos;
            self.refill(max)?;
        }
    }

    /// Starts a new segment with the unread part of the current one and up
    /// to [`Self::segment_len`] more bytes, or as many as that part holds
    /// if it is longer (a record longer than a segment is then copied a
    /// logarithmic number of times, not once per segment it spans); at end
    /// of input, a last line without a newline gets one.
    fn refill(&mut self, max: usize) -> std::io::Result<()> {
        let tail = &self.seg[self.pos..];
        let len = self.segment_len(max).max(tail.len());
        let want = tail.len() + len;
        // room for the newline added at the end of input
        let mut v = self.spare.take(want + 1);
        v[..tail.len()].copy_from_slice(tail);
        let mut filled = tail.len();
        while filled < want {
            match self.r.read(&mut v[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled < want {
            self.eof = true;
            if filled > 0 && v[filled - 1] != b'\n' {
                v[filled] = b'\n';
                filled += 1;
            }
        }
        self.seg = Bytes::from_owner(SegmentBuf {
            buf: v,
            len: filled,
            spare: self.spare.clone(),
        });
        self.pos = 0;
        Ok(())
    }
}

/// Decodes one unit with the fast path (the whole unit in one decoder call)
/// and, only if that fails, record by record to set the bad ones aside.
/// `cache` keeps the decoder (and its warmed-up buffers) between units.
pub(crate) fn decode_unit(
    f: &UnitFormat,
    unit: &Unit,
    cache: &mut Option<Dec>,
) -> Result<Decoded, ArrowError> {
    let new_dec = |batch_size| Dec::new(&f.fmt, &f.schema, f.projection.as_deref(), batch_size);
    let bytes = &unit.bytes[..];
    let mut out = Vec::with_capacity(1);
    let dec = match cache {
        Some(d) => d,
        None => cache.insert(new_dec(f.batch_size)?),
    };
    let json = matches!(f.fmt, LineFormat::Json);
    let too_deep = json
        && unit.longest > 2 * crate::jsondepth::MAX_JSON_DEPTH
        && crate::jsondepth::any_too_deep(bytes);
    if !too_deep && dec.decode_all(bytes, &mut out).is_ok() {
        let lines = if f.want_lines {
            record_lines(bytes, unit.first_line, &f.fmt)
                .into_iter()
                .map(|(l, _, _)| l)
                .collect()
        } else {
            vec![]
        };
        return Ok((out, lines, vec![]));
    }
    out.clear();
    // the shared decoder may hold half a record now
    *cache = None;
    let mut good = Vec::with_capacity(bytes.len());
    let mut good_lines = Vec::new();
    let mut bad = Vec::new();
    for (line, s, e) in record_lines(bytes, unit.first_line, &f.fmt) {
        let rec = &bytes[s..e];
        let checked = if json && crate::jsondepth::too_deep(rec) {
            Err(ArrowError::JsonError(crate::jsondepth::too_deep_message()))
        } else {
            new_dec(1)?.decode_all(rec, &mut Vec::new())
        };
        match checked {
            Ok(()) => {
                good.extend_from_slice(rec);
                good_lines.push(line);
            }
            Err(err) => bad.push(Rejected {
                line,
                error: clean_error(&err),
                raw: String::from_utf8_lossy(&rec[..rec.len().min(4096)])
                    .trim_end()
                    .to_string(),
            }),
        }
    }
    new_dec(f.batch_size)?.decode_all(&good, &mut out)?;
    Ok((out, good_lines, bad))
}

/// The decoder's message without its prefix and without the line numbers
/// of the one-record probe decoder (we report the real line ourselves).
fn clean_error(e: &ArrowError) -> String {
    let s = e.to_string();
    let mut s = s
        .trim_start_matches("Json error: ")
        .trim_start_matches("Parser error: ")
        .trim_start_matches("Csv error: ")
        .to_string();
    for pat in [" at line ", "for line "] {
        if let Some(i) = s.find(pat) {
            let digits = s[i + pat.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let mut end = i + pat.len() + digits;
            if s[end..].starts_with(", ") && pat == "for line " {
                end += 2;
            }
            s.replace_range(i..end, "");
        }
    }
    s.replace("  ", " ")
        .replace("fields expected", "fields: expected")
        .trim()
        .to_string()
}

/// (first physical line, start, end) of each non-blank record in `unit`.
fn record_lines(unit: &[u8], first_line: u64, fmt: &LineFormat) -> Vec<(u64, usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut line = first_line;
    let mut rec_line = first_line;
    let mut in_quote = false;
    let quote = match fmt {
        LineFormat::Csv { quote, .. } => Some(*quote),
        LineFormat::Json => None,
    };
    for (i, &b) in unit.iter().enumerate() {
        if Some(b) == quote {
            in_quote = !in_quote;
        } else if b == b'\n' {
            line += 1;
            if !in_quote {
                let rec = &unit[start..=i];
                if rec.iter().any(|c| !c.is_ascii_whitespace()) {
                    out.push((rec_line, start, i + 1));
                }
                start = i + 1;
                rec_line = line;
            }
        }
    }
    if start < unit.len() && unit[start..].iter().any(|c| !c.is_ascii_whitespace()) {
        out.push((rec_line, start, unit.len()));
    }
    out
}

/// Turns a JSON array document (`[ {...}, {...} ]`, possibly pretty-printed)
/// into one object per line, streaming, so the line decoder can take it.
pub(crate) struct JsonArrayToLines<R: Read> {
    inner: R,
    depth: u32,
    in_string: bool,
    escape: bool,
    pending: Vec<u8>,
}

impl<R: Read> JsonArrayToLines<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            depth: 0,
            in_string: false,
            escape: false,
            pending: Vec::new(),
        }
    }
}

impl<R: Read> Read for JsonArrayToLines<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(out.len());
                out[..n].copy_from_slice(&self.pending[..n]);
                self.pending.drain(..n);
                return Ok(n);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            for &b in &chunk[..n] {
                if self.in_string {
                    self.pending.push(b);
                    if self.escape {
                        self.escape = false;
                    } else if b == b'\\' {
                        self.escape = true;
                    } else if b == b'"' {
                        self.in_string = false;
                    }
                    continue;
                }
                match b {
                    b'[' if self.depth == 0 => self.depth = 1,
                    b']' if self.depth == 1 => self.depth = 0,
                    b',' if self.depth == 1 => {}
                    b'\n' | b'\r' => self.pending.push(b' '),
                    b'{' | b'[' => {
                        self.depth += 1;
                        self.pending.push(b);
                    }
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        self.pending.push(b);
                        if self.depth == 1 {
                            self.pending.push(b'\n');
                        }
                    }
                    b'"' => {
                        self.in_string = true;
                        self.pending.push(b);
                    }
                    _ if self.depth >= 2 => self.pending.push(b),
                    _ if b.is_ascii_whitespace() => {}
                    _ => self.pending.push(b), // junk at depth 0/1: let the decoder reject it
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn format(fmt: LineFormat) -> UnitFormat {
        UnitFormat {
            fmt,
            schema: schema(),
            projection: None,
            batch_size: 1024,
            want_lines: true,
        }
    }

    const CSV: LineFormat = LineFormat::Csv {
        delimiter: b',',
        quote: b'"',
    };

    /// The segment size of the tests that need to know where segments end.
    const SEGMENT: usize = 64 << 10;

    #[test]
    fn units_end_between_records_even_inside_quoted_newlines() {
        let text = "a,1\n\"b\nc\",2\nd,3\n";
        let mut s = UnitSplitter::new(text.as_bytes(), CSV);
        let first = s.next(2).unwrap().unwrap();
        assert_eq!(&first.bytes[..], b"a,1\n\"b\nc\",2\n");
        assert_eq!((first.first_line, first.next_line), (1, 4));
        let second = s.next(2).unwrap().unwrap();
        assert_eq!(&second.bytes[..], b"d,3\n");
        assert_eq!(second.first_line, 4);
        assert!(s.next(2).unwrap().is_none());
    }

    /// Hands out at most 7,777 bytes a read, as a pipe or a decompressor may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let k = buf.len().min(7777).min(self.0.len());
            buf[..k].copy_from_slice(&self.0[..k]);
            self.0 = &self.0[k..];
            Ok(k)
        }
    }

    #[test]
    fn units_cover_the_stream_across_segments_and_a_record_longer_than_one() {
        // lines across three segment ends, one longer than a segment, and
        // a last line without a newline
        let mut text = String::new();
        let mut n = 0u64;
        while text.len() < 3 * MAX_SEGMENT {
            text.push_str(&format!("{{\"k\":\"{n}\"}}\n"));
            n += 1;
        }
        text.push_str(&format!("{{\"k\":\"{}\"}}\n", "x".repeat(MAX_SEGMENT + 10)));
        text.push_str("{\"k\":\"last\"}");
        n += 2;
        let mut s = UnitSplitter::new(Trickle(text.as_bytes()), LineFormat::Json);
        let (mut all, mut line) = (Vec::new(), 1);
        while let Some(u) = s.next(5000).unwrap() {
            let k = u.bytes.iter().filter(|b| **b == b'\n').count() as u64;
            assert!((1..=5000).contains(&k), "{k} records");
            assert_eq!((u.first_line, u.next_line), (line, line + k));
            assert_eq!(u.bytes.last(), Some(&b'\n'), "a unit ends with its record");
            line = u.next_line;
            all.extend_from_slice(&u.bytes);
        }
        assert_eq!(line, n + 1);
        assert_eq!(all, format!("{text}\n").into_bytes());
    }

    /// Records of random length (some longer than a block, some beyond
    /// the JSON depth gate), CSV ones with quoted fields and quoted
    /// newlines here and there, cut with `max` records a unit: the units
    /// cover the input, end at record ends, hold `max` records unless a
    /// segment or the input ends, and bound their longest line.
    fn check_units(fmt: LineFormat, max: usize, seed: u64) {
        let mut x = seed;
        let mut rand = |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let csv = matches!(fmt, LineFormat::Csv { .. });
        let (mut text, mut records) = (String::new(), Vec::new());
        let mut line = 1u64;
        while text.len() < 2 * SEGMENT + 12345 {
            let len = match rand(100) {
                0 => 2000 + rand(3000),
                1..=5 => 300 + rand(900),
                _ => rand(60),
            } as usize;
            let body = "x".repeat(len);
            let rec = match (csv, rand(50)) {
                (true, 0) => format!("\"{body}\nq\",1\n"),
                (true, 1) => format!("\"{body}\",2\n"),
                (true, _) => format!("{body},3\n"),
                (false, _) => format!("{{\"k\":\"{body}\"}}\n"),
            };
            let newlines = rec.matches('\n').count() as u64;
            records.push((line, rec.len() - 1));
            line += newlines;
            text.push_str(&rec);
        }
        let mut s = UnitSplitter::with_segment(Trickle(text.as_bytes()), fmt, SEGMENT);
        let (mut all, mut at, mut line) = (Vec::<u8>::new(), 0usize, 1u64);
        while let Some(u) = s.next(max).unwrap() {
            assert_eq!(u.first_line, line);
            // the records it holds, by their lengths
            let (mut len, mut k, mut longest) = (0usize, 0usize, 0usize);
            while len < u.bytes.len() {
                len += records[at + k].1 + 1;
                longest = longest.max(records[at + k].1);
                k += 1;
            }
            assert_eq!(len, u.bytes.len(), "a unit ends at a record's end");
            assert!((1..=max).contains(&k), "{k} records, max {max}");
            // fewer only when the next record ends past the segment (the
            // segments of a trickled stream end at multiples of SEGMENT)
            let end = all.len() + len;
            let short_ok = at + k == records.len()
                || end + records[at + k].1 + 1 > end.div_ceil(SEGMENT) * SEGMENT;
            assert!(k == max || short_ok, "a short unit: {k} of {max}");
            assert!(u.longest >= longest, "{} < {longest}", u.longest);
            at += k;
            line = records.get(at).map_or(u.next_line, |r| r.0);
            assert_eq!(u.next_line, line);
            all.extend_from_slice(&u.bytes);
        }
        assert_eq!(at, records.len());
        assert_eq!(all, text.into_bytes());
    }

    #[test]
    fn units_counted_by_blocks_are_those_of_a_record_by_record_walk() {
        for (i, max) in [1, 7, 100, 8192].into_iter().enumerate() {
            check_units(LineFormat::Json, max, i as u64);
            check_units(CSV, max, 10 + i as u64);
        }
    }

    #[test]
    fn a_segments_buffer_is_reused_once_its_units_are_decoded() {
        let text = "{\"k\":\"abc\"}\n".repeat(3 * SEGMENT / 12);
        let json = LineFormat::Json;
        let mut s = UnitSplitter::with_segment(Trickle(text.as_bytes()), json, SEGMENT);
        let first = s.next(usize::MAX).unwrap().unwrap();
        let second = s.next(usize::MAX).unwrap().unwrap();
        assert_ne!(first.bytes.as_ptr(), second.bytes.as_ptr());
        assert!(s.spare.0.lock().unwrap().is_empty(), "the first is held");
        drop(first);
        assert_eq!(s.spare.0.lock().unwrap().len(), 1, "and now kept");
        let ptr = s.spare.0.lock().unwrap()[0].as_ptr();
        let third = s.next(usize::MAX).unwrap().unwrap();
        assert_eq!(third.bytes.as_ptr(), ptr, "the third segment reads into it");
    }

    #[test]
    fn a_quoted_newline_across_a_segment_end_stays_in_its_record() {
        // `"b\nc",2` starts four bytes before the first segment's end
        let mut text = "a,1\n".repeat(SEGMENT / 4 - 1);
        text.push_str("\"b\nc\",2\nd,3\n");
        let mut s = UnitSplitter::with_segment(Trickle(text.as_bytes()), CSV, SEGMENT);
        let mut units = Vec::new();
        while let Some(u) = s.next(100_000).unwrap() {
            units.push(u);
        }
        let quoted = units
            .iter()
            .find(|u| u.bytes.starts_with(b"\"b\n"))
            .expect("a unit starts at the quoted record");
        assert!(quoted.bytes.starts_with(b"\"b\nc\",2\n"));
        assert_eq!(
            quoted.next_line - quoted.first_line,
            3,
            "its two lines and d's"
        );
        let all: Vec<u8> = units.iter().flat_map(|u| u.bytes.to_vec()).collect();
        assert_eq!(all, text.into_bytes());
    }

    #[test]
    fn a_record_longer_than_a_segment_doubles_the_segments_it_is_read_into() {
        let long = format!("{}\n", "x".repeat(1 << 20));
        let text = format!("{long}{}", "a,1\n".repeat(SEGMENT));
        let mut s = UnitSplitter::with_segment(Trickle(text.as_bytes()), CSV, SEGMENT);
        let first = s.next(10).unwrap().unwrap();
        assert_eq!(&first.bytes[..long.len()], long.as_bytes());
        // read 64 KB more per segment, it would end within 64 KB after
        // the record; doubled, it reads well past it
        assert!(s.seg.len() > long.len() + SEGMENT, "{}", s.seg.len());
        let mut all = first.bytes.to_vec();
        while let Some(u) = s.next(10).unwrap() {
            all.extend_from_slice(&u.bytes);
        }
        assert_eq!(all, text.as_bytes());
    }

    /// A [`Trickle`] interrupted every other call, failing for good once
    /// `fail_at` bytes are read (if set).
    struct Flaky<'a> {
        inner: Trickle<'a>,
        calls: usize,
        fail_at: Option<usize>,
        read: usize,
    }

    impl<'a> Flaky<'a> {
        fn new(text: &'a str, fail_at: Option<usize>) -> Self {
            Self {
                inner: Trickle(text.as_bytes()),
                calls: 0,
                fail_at,
                read: 0,
            }
        }
    }

    impl Read for Flaky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            if self.fail_at.is_some_and(|at| self.read >= at) {
                return Err(std::io::Error::other("the disk went away"));
            }
            let k = self.inner.read(buf)?;
            self.read += k;
            Ok(k)
        }
    }

    #[test]
    fn a_read_interrupted_is_retried_and_a_failed_one_is_an_error() {
        let text = "a,1\n".repeat(3 * SEGMENT / 4);
        let mut s = UnitSplitter::with_segment(Flaky::new(&text, None), CSV, SEGMENT);
        let mut all = Vec::new();
        while let Some(u) = s.next(1000).unwrap() {
            all.extend_from_slice(&u.bytes);
        }
        assert_eq!(all, text.as_bytes());
        let flaky = Flaky::new(&text, Some(SEGMENT + 7));
        let mut s = UnitSplitter::with_segment(flaky, CSV, SEGMENT);
        let err = loop {
            match s.next(1000) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the failed read ended the input quietly"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.to_string(), "the disk went away");
    }

    /// The segments read after the first hold about
    /// [`UNITS_PER_SEGMENT`] units of the records seen, within bounds, and
    /// the units still cover the input (a record longer than the learnt
    /// segment included).
    #[test]
    fn segments_are_sized_from_the_records_length() {
        let json = format!("{{\"k\":\"{}\"}}\n", "x".repeat(86));
        let cases: [(&str, LineFormat, usize, usize); 3] = [
            // 1BRC's lines: 8 units of 8,192 records in about 1 MB
            (
                "Station123;-12.3\n",
                CSV,
                8192,
                17 * 8192 * UNITS_PER_SEGMENT,
            ),
            // JSON Lines of 95 bytes: capped
            (&json, LineFormat::Json, 8192, MAX_SEGMENT),
            // tiny records, small units: at least the floor
            ("1\n", CSV, 100, MIN_SEGMENT),
        ];
        for (record, fmt, max, want) in cases {
            let mut text = record.repeat(3 * MAX_SEGMENT / record.len());
            text.push_str(&format!("{}\n", "y".repeat(MAX_SEGMENT + 1)));
            let mut s = UnitSplitter::new(Trickle(text.as_bytes()), fmt);
            assert_eq!(s.segment_len(max), FIRST_SEGMENT, "before any record");
            // a header first: a unit of one record
            let mut all = s.next(1).unwrap().unwrap().bytes.to_vec();
            // the length of each segment read
            let mut segments = vec![s.seg.len()];
            while let Some(u) = s.next(max).unwrap() {
                all.extend_from_slice(&u.bytes);
                // a segment's first unit starts where it does
                if u.bytes.as_ptr() == s.seg.as_ptr() {
                    segments.push(s.seg.len());
                }
            }
            assert_eq!(all, text.as_bytes(), "{record:?}");
            assert_eq!(segments[0], FIRST_SEGMENT, "{record:?}");
            // the second one: its size and the record carried into it
            assert!(
                (want..want + record.len()).contains(&segments[1]),
                "{record:?}: {segments:?}, want {want}"
            );
        }
    }

    #[test]
    fn a_bad_record_is_set_aside_with_its_line_and_the_others_decoded() {
        let text = "{\"k\":\"a\",\"v\":1}\n\n{\"k\":\"b\",\"v\":\"x\"}\n{\"k\":\"c\",\"v\":3}\n";
        let mut s = UnitSplitter::new(text.as_bytes(), LineFormat::Json);
        let unit = s.next(100).unwrap().unwrap();
        let (batches, lines, bad) =
            decode_unit(&format(LineFormat::Json), &unit, &mut None).unwrap();
        let v: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(v, vec![1, 3]);
        assert_eq!(lines, vec![1, 4], "the blank line 2 counts as a line");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 3);
        assert!(bad[0].raw.contains("\"x\""), "{}", bad[0].raw);
        assert!(
            !bad[0].error.contains("line"),
            "our line, not the probe's: {}",
            bad[0].error
        );
    }

    #[test]
    fn a_too_deep_json_record_is_refused_without_recursing() {
        let deep = format!(
            "{{\"k\":\"a\",\"v\":1,\"x\":{}{}}}\n{{\"k\":\"b\",\"v\":2}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let mut s = UnitSplitter::new(deep.as_bytes(), LineFormat::Json);
        let unit = s.next(100).unwrap().unwrap();
        let (batches, _, bad) = decode_unit(&format(LineFormat::Json), &unit, &mut None).unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 1);
    }

    #[test]
    fn a_csv_unit_decodes_with_quotes_and_projection() {
        let mut f = format(CSV);
        f.projection = Some(vec![0]);
        let unit = UnitSplitter::new("\"a,b\",1\nc,2\n".as_bytes(), CSV)
            .next(10)
            .unwrap()
            .unwrap();
        let (batches, _, bad) = decode_unit(&f, &unit, &mut None).unwrap();
        assert!(bad.is_empty());
        let b = &batches[0];
        assert_eq!(b.num_columns(), 1);
        let k = b.column(0).as_string::<i32>();
        assert_eq!((k.value(0), k.value(1), k.len()), ("a,b", "c", 2));
    }

    #[test]
    fn a_json_array_document_becomes_one_object_per_line() {
        let doc = "[\n  {\"k\": \"a, ]\", \"v\": [1, 2]},\n  {\"k\": \"b\"}\n]\n";
        let mut out = String::new();
        JsonArrayToLines::new(doc.as_bytes())
            .read_to_string(&mut out)
            .unwrap();
        let lines: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            lines,
            vec![r#"{"k": "a, ]", "v": [1, 2]}"#, r#"{"k": "b"}"#]
        );
    }
}
