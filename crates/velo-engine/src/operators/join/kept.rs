//! One side of an interval join's state: the rows kept across epochs, in
//! chunks, with a hash index on the join keys that lives as long as the
//! rows. An epoch adds its new rows to the index and looks each new row's
//! key up on the other side, so it costs what its new rows cost, not what
//! the state holds (a join that keeps a day of a stream used to re-read,
//! re-hash and copy the whole day every epoch).
//!
//! Rows are numbered in arrival order (ids). What a lookup reads of a row
//! lives in flat vectors indexed by id: its key hash, event time and flags
//! (keyed, matched, alive), so walking a hash chain touches no chunk. The
//! index chains the ids of rows with the same key hash, newest first, in
//! one `next` vector (the layout of DataFusion's own `JoinHashMap`). A row
//! that can no longer match dies in place; once the dead outnumber the
//! living the side is compacted: the per-id vectors filtered in place,
//! only chunks with dead rows copied, and the index built again, so
//! compaction costs O(1) per row over time. Small chunks and chunks of
//! similar size merge at the tail, so the chunk count stays small without
//! copying a big epoch to absorb a few survivors.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::common::{NullEquality, Result};
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::HashTable;

use crate::time::Watermark;

/// Chunks are merged at the tail up to this many rows.
const CHUNK_ROWS: usize = 64 * 1024;
/// A chunk this small merges with the one before whatever its size (a
/// cheap copy that keeps survivors and tiny epochs from piling up).
const SMALL_CHUNK: usize = 4096;
/// Compaction waits for at least this many dead rows.
const MIN_DEAD: usize = 4096;

/// Row flags: the row takes part in key lookups (a null key never matches
/// unless nulls compare equal), has matched, can still match.
const KEYED: u8 = 1;
const MATCHED: u8 = 2;
const ALIVE: u8 = 4;

/// A run of consecutive rows (ids `start..start + len`).
struct Chunk {
    start: u64,
    rows: RecordBatch,
    /// The join keys of each row, evaluated once.
    keys: Vec<ArrayRef>,
    /// Rows still alive.
    live: usize,
    /// The lowest time of a living row (meaningless when none lives).
    min_alive: i64,
}

impl Chunk {
    fn len(&self) -> usize {
        self.rows.num_rows()
    }

    fn ids(&self) -> Range<usize> {
        self.start as usize..self.start as usize + self.len()
    }

    /// This chunk then `next`, as one.
    fn merged(self, next: Chunk) -> Result<Chunk> {
        let rows = arrow::compute::concat_batches(&self.rows.schema(), [&self.rows, &next.rows])?;
        let keys = self
            .keys
            .iter()
            .zip(&next.keys)
            .map(|(a, b)| arrow::compute::concat(&[a.as_ref(), b.as_ref()]))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Chunk {
            start: self.start,
            rows,
            keys,
            live: self.live + next.live,
            min_alive: self.min_alive.min(next.min_alive),
        })
    }

    /// Only the rows `keep` says, numbered from `start`.
    fn filtered(&self, keep: &BooleanArray, start: u64) -> Result<Chunk> {
        Ok(Chunk {
            start,
            rows: arrow::compute::filter_record_batch(&self.rows, keep)?,
            keys: self
                .keys
                .iter()
                .map(|k| arrow::compute::filter(k, keep))
                .collect::<std::result::Result<_, _>>()?,
            live: keep.true_count(),
            min_alive: self.min_alive,
        })
    }

    fn bytes(&self) -> usize {
        self.rows.get_array_memory_size()
            + self
                .keys
                .iter()
                .map(|k| k.get_array_memory_size())
                .sum::<usize>()
    }
}

/// Where a set of ids lies: all in one chunk (rows in it), or spread.
enum Positions {
    One(usize, UInt32Array),
    Spread(Vec<(usize, usize)>),
}

/// The kept rows of one side of a join (see the module docs).
pub(super) struct Kept {
    schema: SchemaRef,
    /// The side's join key expressions (none: every pair is a candidate).
    on: Vec<Arc<dyn PhysicalExpr>>,
    time: usize,
    null_equality: NullEquality,
    chunks: Vec<Chunk>,
    /// Per id: the key hash.
    hashes: Vec<u64>,
    /// Per id: the event time in milliseconds; a null time is `i64::MIN`.
    times: Vec<i64>,
    /// Per id: `KEYED`, `MATCHED`, `ALIVE`.
    flags: Vec<u8>,
    /// (key hash, newest id with it plus one), found by the hash itself.
    heads: HashTable<(u64, u64)>,
    /// Per id: the previous id with the same key hash, plus one (0: none).
    next: Vec<u64>,
    live: usize,
    dead: usize,
}

impl Kept {
    pub fn new(
        schema: SchemaRef,
        on: Vec<Arc<dyn PhysicalExpr>>,
        time: usize,
        null_equality: NullEquality,
    ) -> Self {
        Self {
            schema,
            on,
            time,
            null_equality,
            chunks: Vec::new(),
            hashes: Vec::new(),
            times: Vec::new(),
            flags: Vec::new(),
            heads: HashTable::new(),
            next: Vec::new(),
            live: 0,
            dead: 0,
        }
    }

    /// Rows that can still match.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The id the next row gets: the rows added from here on are newer.
    pub fn end(&self) -> u64 {
        self.flags.len() as u64
    }

    /// Adds `rows` (whether each has matched: `matched`, or none has),
    /// indexed by key. Phases: the keys evaluated, the per-id facts
    /// recorded, the new ids linked into the index, the chunk appended.
    pub fn push(&mut self, rows: RecordBatch, matched: Option<Vec<bool>>) -> Result<()> {
        let n = rows.num_rows();
        if n == 0 {
            return Ok(());
        }
        let start = self.end();
        let keys = self
            .on
            .iter()
            .map(|e| e.evaluate(&rows)?.into_array(n))
            .collect::<Result<Vec<_>>>()?;
        let min_alive = self.record(&rows, &keys, matched.as_deref())?;
        self.link(start);
        self.live += n;
        self.chunks.push(Chunk {
            start,
            rows,
            keys,
            live: n,
            min_alive,
        });
        self.merge_tail()
    }

    /// Appends the per-id facts of new rows: key hashes, times and flags.
    /// The lowest time.
    fn record(
        &mut self,
        rows: &RecordBatch,
        keys: &[ArrayRef],
        matched: Option<&[bool]>,
    ) -> Result<i64> {
        let n = rows.num_rows();
        let from = self.hashes.len();
        self.hashes.resize(from + n, 0);
        if !keys.is_empty() {
            create_hashes(keys, &RandomState::with_seed(0), &mut self.hashes[from..])?;
        }
        let times = crate::operators::window::to_millis(rows.column(self.time))?;
        let mut min = i64::MAX;
        self.times.extend(times.iter().map(|t| {
            let t = t.unwrap_or(i64::MIN);
            min = min.min(t);
            t
        }));
        let null_keys = self.null_equality == NullEquality::NullEqualsNothing
            && keys.iter().any(|k| k.null_count() > 0);
        self.flags.extend((0..n).map(|i| {
            let keyed = !null_keys || keys.iter().all(|k| k.is_valid(i));
            let matched = matched.is_some_and(|m| m[i]);
            ALIVE | if keyed { KEYED } else { 0 } | if matched { MATCHED } else { 0 }
        }));
        Ok(min)
    }

    /// Puts the ids from `from` to the end at the heads of their hashes'
    /// chains, in order.
    fn link(&mut self, from: u64) {
        for id in from..self.end() {
            let i = id as usize;
            if self.flags[i] & KEYED == 0 {
                self.next.push(0);
                continue;
            }
            let h = self.hashes[i];
            match self.heads.find_mut(h, |&(k, _)| k == h) {
                Some((_, head)) => {
                    self.next.push(*head);
                    *head = id + 1;
                }
                None => {
                    self.heads.insert_unique(h, (h, id + 1), |&(k, _)| k);
                    self.next.push(0);
                }
            }
        }
    }

    /// Merges the newest two chunks while they are of similar size, or the
    /// newest is small (sizes grow geometrically: a row is copied a few
    /// times at most, and a big chunk is not copied to absorb a small one).
    fn merge_tail(&mut self) -> Result<()> {
        while let [.., a, b] = self.chunks.as_slice() {
            let (a, b) = (a.len(), b.len());
            let mergeable = a + b <= CHUNK_ROWS && a <= 2 * b && (b <= 2 * a || b <= SMALL_CHUNK);
            if !mergeable {
                break;
            }
            let b = self.chunks.pop().expect("two chunks");
            let a = self.chunks.pop().expect("two chunks");
            self.chunks.push(a.merged(b)?);
        }
        Ok(())
    }

    /// The chunk holding `id`, and the row in it.
    fn locate(&self, id: u64) -> (usize, usize) {
        let c = self.chunks.partition_point(|c| c.start <= id) - 1;
        (c, (id - self.chunks[c].start) as usize)
    }

    /// Whether row `id` has matched; marks it matched. True when this is
    /// its first match.
    pub fn mark(&mut self, id: u64) -> bool {
        let f = &mut self.flags[id as usize];
        let first = *f & MATCHED == 0;
        *f |= MATCHED;
        first
    }

    /// The candidate pairs of the rows `from..` of `probe` with the living
    /// rows of this side older than `below`: same key hash (every row when
    /// the join has no keys), as the probe's ids and this side's ids.
    pub fn candidates(&self, probe: &Kept, from: u64, below: u64) -> (Vec<u64>, Vec<u64>) {
        let (mut theirs, mut mine) = (Vec::new(), Vec::new());
        for p in from..probe.end() {
            let i = p as usize;
            if probe.flags[i] & KEYED == 0 {
                continue;
            }
            let h = probe.hashes[i];
            let Some(&(_, head)) = self.heads.find(h, |&(k, _)| k == h) else {
                continue;
            };
            let mut at = head;
            while at != 0 {
                let id = at - 1;
                at = self.next[id as usize];
                if id < below && self.flags[id as usize] & ALIVE != 0 {
                    theirs.push(p);
                    mine.push(id);
                }
            }
        }
        (theirs, mine)
    }

    /// Which candidate pairs (this side's ids `mine`, `other`'s ids
    /// `theirs`) have equal keys: the hash only said they may.
    pub fn keys_equal(&self, mine: &[u64], other: &Kept, theirs: &[u64]) -> Result<BooleanArray> {
        let mut all: Option<BooleanArray> = None;
        for k in 0..self.on.len() {
            let (a, b) = (self.gather_key(mine, k)?, other.gather_key(theirs, k)?);
            let nested = a.data_type().is_nested();
            let eq = match (self.null_equality, nested) {
                (NullEquality::NullEqualsNothing, false) => {
                    arrow::compute::kernels::cmp::eq(&a, &b)?
                }
                (NullEquality::NullEqualsNull, false) => {
                    arrow::compute::kernels::cmp::not_distinct(&a, &b)?
                }
                (NullEquality::NullEqualsNothing, true) => {
                    datafusion::physical_expr_common::datum::compare_op_for_nested(
                        datafusion::logical_expr::Operator::Eq,
                        &a,
                        &b,
                    )?
                }
                (NullEquality::NullEqualsNull, true) => {
                    datafusion::physical_expr_common::datum::compare_op_for_nested(
                        datafusion::logical_expr::Operator::IsNotDistinctFrom,
                        &a,
                        &b,
                    )?
                }
            };
            all = Some(match all {
                None => eq,
                Some(all) => arrow::compute::and(&all, &eq)?,
            });
        }
        // no keys: every pair is a candidate for the filter alone
        Ok(all.unwrap_or_else(|| BooleanArray::from(vec![true; mine.len()])))
    }

    /// The rows `ids`, in that order.
    pub fn gather(&self, ids: &[u64]) -> Result<RecordBatch> {
        if ids.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        Ok(match self.positions(ids) {
            Positions::One(c, rows) => {
                arrow::compute::take_record_batch(&self.chunks[c].rows, &rows)?
            }
            Positions::Spread(at) => {
                let batches: Vec<&RecordBatch> = self.chunks.iter().map(|c| &c.rows).collect();
                arrow::compute::interleave_record_batch(&batches, &at)?
            }
        })
    }

    /// Column `col` of the rows `ids`.
    pub fn gather_column(&self, ids: &[u64], col: usize) -> Result<ArrayRef> {
        self.pick(
            ids,
            |c| c.rows.column(col),
            || self.schema.field(col).data_type().clone(),
        )
    }

    fn gather_key(&self, ids: &[u64], k: usize) -> Result<ArrayRef> {
        self.pick(
            ids,
            |c| &c.keys[k],
            || {
                self.on[k]
                    .data_type(&self.schema)
                    .unwrap_or(arrow::datatypes::DataType::Null)
            },
        )
    }

    /// The values of the rows `ids` in the array `of` each chunk holds (of
    /// type `ty`): one `take` when they lie in one chunk.
    fn pick(
        &self,
        ids: &[u64],
        of: impl Fn(&Chunk) -> &ArrayRef,
        ty: impl Fn() -> arrow::datatypes::DataType,
    ) -> Result<ArrayRef> {
        if ids.is_empty() || self.chunks.is_empty() {
            return Ok(arrow::array::new_empty_array(&ty()));
        }
        Ok(match self.positions(ids) {
            Positions::One(c, rows) => arrow::compute::take(of(&self.chunks[c]), &rows, None)?,
            Positions::Spread(at) => {
                let arrays: Vec<&dyn Array> = self.chunks.iter().map(|c| of(c).as_ref()).collect();
                arrow::compute::interleave(&arrays, &at)?
            }
        })
    }

    /// Where the (not empty) `ids` lie.
    fn positions(&self, ids: &[u64]) -> Positions {
        let (lo, hi) = ids
            .iter()
            .fold((u64::MAX, 0), |(lo, hi), &id| (lo.min(id), hi.max(id)));
        let (c, _) = self.locate(lo);
        let chunk = &self.chunks[c];
        if hi < chunk.start + chunk.len() as u64 {
            let rows = ids.iter().map(|&id| (id - chunk.start) as u32).collect();
            return Positions::One(c, rows);
        }
        Positions::Spread(ids.iter().map(|&id| self.locate(id)).collect())
    }

    /// Rows that can no longer match die: a row while a row of the other
    /// side to come (at or after `bound`, the other side's lower bound)
    /// may still be within `reach` of it lives; a row without a time dies
    /// once there is a watermark. The ids of the rows that died without
    /// ever matching (outer and anti joins emit them).
    pub fn expire(&mut self, bound: i64, reach: i64) -> Vec<u64> {
        if bound == Watermark::NONE {
            return Vec::new();
        }
        let end = bound == Watermark::END;
        let mut settled = Vec::new();
        let mut died = 0;
        for c in &mut self.chunks {
            if c.live == 0 || (!end && c.min_alive.saturating_add(reach) >= bound) {
                continue;
            }
            let mut min_alive = i64::MAX;
            for id in c.ids() {
                let f = self.flags[id];
                if f & ALIVE == 0 {
                    continue;
                }
                let t = self.times[id];
                if !end && t != i64::MIN && t.saturating_add(reach) >= bound {
                    min_alive = min_alive.min(t);
                    continue;
                }
                self.flags[id] = f & !ALIVE;
                c.live -= 1;
                died += 1;
                if f & MATCHED == 0 {
                    settled.push(id as u64);
                }
            }
            c.min_alive = min_alive;
        }
        self.live -= died;
        self.dead += died;
        settled
    }

    /// Once the dead outnumber the living, keeps only the living, ids from
    /// 0. Phases: the chunks' living rows (a chunk without dead rows is
    /// kept as it is), the per-id facts filtered in place, the index built
    /// again from the kept hashes.
    pub fn compact(&mut self) -> Result<()> {
        if self.dead <= self.live || (self.dead < MIN_DEAD && self.live > 0) {
            return Ok(());
        }
        let old = std::mem::take(&mut self.chunks);
        let mut start = 0;
        for c in old {
            if c.live == 0 {
                continue;
            }
            let chunk = if c.live == c.len() {
                Chunk { start, ..c }
            } else {
                c.filtered(&self.alive(c.ids()), start)?
            };
            start += chunk.len() as u64;
            self.chunks.push(chunk);
            self.merge_tail()?;
        }
        let mut kept = 0;
        for id in 0..self.flags.len() {
            if self.flags[id] & ALIVE != 0 {
                self.hashes[kept] = self.hashes[id];
                self.times[kept] = self.times[id];
                self.flags[kept] = self.flags[id];
                kept += 1;
            }
        }
        self.hashes.truncate(kept);
        self.times.truncate(kept);
        self.flags.truncate(kept);
        self.heads.clear();
        self.next.clear();
        self.link(0);
        self.live = kept;
        self.dead = 0;
        Ok(())
    }

    /// Which of the rows `ids` are alive.
    fn alive(&self, ids: Range<usize>) -> BooleanArray {
        self.flags[ids]
            .iter()
            .map(|f| Some(f & ALIVE != 0))
            .collect()
    }

    /// Bytes held: rows, keys, per-row facts and the index.
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::bytes).sum::<usize>()
            + self.hashes.capacity() * 8
            + self.times.capacity() * 8
            + self.flags.capacity()
            + self.next.capacity() * 8
            + self.heads.capacity() * 17
    }

    /// The living rows and whether each has matched (for checkpoints).
    pub fn snapshot(&self) -> Result<(RecordBatch, Vec<bool>)> {
        let mut parts = Vec::new();
        for c in self.chunks.iter().filter(|c| c.live > 0) {
            parts.push(if c.live == c.len() {
                c.rows.clone()
            } else {
                arrow::compute::filter_record_batch(&c.rows, &self.alive(c.ids()))?
            });
        }
        let matched = self
            .flags
            .iter()
            .filter(|f| *f & ALIVE != 0)
            .map(|f| f & MATCHED != 0)
            .collect();
        let rows = arrow::compute::concat_batches(&self.schema, &parts)?;
        Ok((rows, matched))
    }

    /// Replaces the rows with `rows` (from a checkpoint).
    pub fn restore(&mut self, rows: RecordBatch, matched: Vec<bool>) -> Result<()> {
        *self = Kept::new(
            self.schema.clone(),
            std::mem::take(&mut self.on),
            self.time,
            self.null_equality,
        );
        self.push(rows, Some(matched))
    }
}

/// A batch of the columns `cols` over `schema` with `n` rows (a filter's
/// intermediate batch, which may have no columns).
pub(super) fn batch_of(schema: SchemaRef, cols: Vec<ArrayRef>, n: usize) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new_with_options(
        schema,
        cols,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn side() -> Kept {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("t", DataType::Int64, true),
        ]));
        Kept::new(
            schema,
            vec![Arc::new(Column::new("k", 0))],
            1,
            NullEquality::NullEqualsNothing,
        )
    }

    fn rows(k: &Kept, keys: &[Option<&str>], times: &[Option<i64>]) -> RecordBatch {
        RecordBatch::try_new(
            k.schema.clone(),
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(times.to_vec())),
            ],
        )
        .unwrap()
    }

    /// The ids of `probe`'s rows from `from` with equal keys on `build`.
    fn pairs(build: &Kept, probe: &Kept, from: u64, below: u64) -> Vec<(u64, u64)> {
        let (p, b) = build.candidates(probe, from, below);
        let eq = build.keys_equal(&b, probe, &p).unwrap();
        let mut out: Vec<_> = p
            .into_iter()
            .zip(b)
            .zip(eq.iter())
            .filter(|(_, e)| e == &Some(true))
            .map(|(c, _)| c)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn new_rows_find_their_keys_among_the_kept_and_null_keys_match_nothing() {
        let mut build = side();
        let mut probe = side();
        for e in 0..3 {
            let r = rows(
                &build,
                &[Some("a"), Some("b"), None],
                &[Some(e), Some(e), Some(e)],
            );
            build.push(r, None).unwrap();
        }
        // three epochs of three rows: merged into fewer chunks, ids kept
        assert!(build.chunks.len() < 3);
        assert_eq!(build.end(), 9);
        probe
            .push(
                rows(&probe, &[Some("a"), None, Some("c")], &[Some(0); 3]),
                None,
            )
            .unwrap();
        // "a" is ids 0, 3 and 6; the null key and "c" find nothing
        assert_eq!(pairs(&build, &probe, 0, 9), vec![(0, 0), (0, 3), (0, 6)]);
        // only rows older than `below`
        assert_eq!(pairs(&build, &probe, 0, 4), vec![(0, 0), (0, 3)]);
        assert_eq!(
            build.gather_column(&[6, 1], 0).unwrap().as_ref(),
            &StringArray::from(vec!["a", "b"]) as &dyn Array
        );
    }

    #[test]
    fn rows_die_when_no_partner_can_come_and_compaction_keeps_the_living() {
        let mut k = side();
        let n = 3 * MIN_DEAD as i64;
        let keys: Vec<Option<String>> = (0..n).map(|i| Some(format!("k{}", i % 7))).collect();
        let keys: Vec<Option<&str>> = keys.iter().map(|k| k.as_deref()).collect();
        let times: Vec<Option<i64>> = (0..n).map(Some).collect();
        k.push(rows(&k, &keys, &times), None).unwrap();
        assert!(k.mark(5));
        assert!(!k.mark(5), "a second match is not a first");
        // no watermark yet: everything lives
        assert!(k.expire(Watermark::NONE, 0).is_empty());
        // rows before 2n/3 (reach 0) die; all but row 5 never matched
        let settled = k.expire(2 * n / 3, 0);
        assert_eq!(settled.len() as i64, 2 * n / 3 - 1);
        assert!(!settled.contains(&5));
        assert_eq!(k.live() as i64, n - 2 * n / 3);
        k.compact().unwrap();
        assert_eq!(k.end() as i64, n - 2 * n / 3, "ids start again from 0");
        let (snap, matched) = k.snapshot().unwrap();
        assert_eq!(snap.num_rows() as i64, n / 3);
        assert!(matched.iter().all(|m| !m));
        // the index was rebuilt: key k0 finds exactly the living k0 rows
        let mut probe = side();
        probe
            .push(rows(&probe, &[Some("k0")], &[Some(0)]), None)
            .unwrap();
        let found = pairs(&k, &probe, 0, k.end());
        let expected = (2 * n / 3..n).filter(|i| i % 7 == 0).count();
        assert_eq!(found.len(), expected);
        let t = k
            .gather_column(&found.iter().map(|p| p.1).collect::<Vec<_>>(), 1)
            .unwrap();
        let t = t.as_any().downcast_ref::<Int64Array>().unwrap();
        assert!(
            t.iter()
                .all(|t| t.unwrap() % 7 == 0 && t.unwrap() >= 2 * n / 3)
        );
        // the end of input: everything dies
        assert_eq!(k.expire(Watermark::END, i64::MAX).len() as i64, n / 3);
        assert_eq!(k.live(), 0);
    }

    #[test]
    fn survivors_do_not_absorb_a_big_epoch_and_gathers_span_chunks() {
        let mut k = side();
        let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
        let keys: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
        let times = |from: i64, n: usize| (from..from + n as i64).map(Some).collect::<Vec<_>>();
        k.push(
            rows(&k, &keys[..MIN_DEAD * 2], &times(0, MIN_DEAD * 2)),
            None,
        )
        .unwrap();
        // all but the last ten die, and the side is compacted
        k.expire(MIN_DEAD as i64 * 2 - 10, 0);
        k.compact().unwrap();
        assert_eq!((k.end(), k.chunks.len()), (10, 1));
        // a big epoch is not copied to absorb the ten survivors
        k.push(rows(&k, &keys, &times(10_000, 20_000)), None)
            .unwrap();
        assert_eq!(k.chunks.len(), 2);
        assert_eq!(k.end(), 20_010);
        let t = |ids: &[u64]| {
            let a = k.gather_column(ids, 1).unwrap();
            a.as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        // in one chunk (a take) and across both (an interleave)
        assert_eq!(t(&[12, 10]), vec![10_002, 10_000]);
        assert_eq!(
            t(&[11, 0, 9]),
            vec![10_001, 2 * MIN_DEAD as i64 - 10, 2 * MIN_DEAD as i64 - 1]
        );
        assert_eq!(k.gather(&[20_009, 3]).unwrap().num_rows(), 2);
    }

    #[test]
    fn rows_at_the_end_of_time_still_die_at_the_end_of_input() {
        let mut k = side();
        k.push(rows(&k, &[Some("a"), None], &[Some(i64::MAX), None]), None)
            .unwrap();
        assert!(
            k.expire(i64::MAX - 1, 0).len() == 1,
            "only the timeless row dies"
        );
        assert_eq!(k.expire(Watermark::END, 0).len(), 1);
        assert_eq!(k.live(), 0);
        k.compact().unwrap();
        assert_eq!((k.end(), k.chunks.len()), (0, 0));
    }
}
