//! One side of an interval join's state: the rows kept across epochs, in
//! chunks, with a hash index on the join keys that lives as long as the
//! rows. An epoch adds its new rows to the index and looks each new row's
//! key up on the other side, so it costs what its new rows cost, not what
//! the state holds (a join that keeps a day of a stream used to re-read,
//! re-hash and copy the whole day every epoch).
//!
//! Rows are numbered in arrival order (ids); the index chains the ids of
//! rows with the same key hash, newest first, in one `next` vector (the
//! layout of DataFusion's own `JoinHashMap`). A row that can no longer
//! match dies in place; once the dead outnumber the living the side is
//! compacted: the living rows copied into fresh chunks and the index built
//! again, so compaction costs O(1) per row over time. Small chunks (one
//! epoch's rows) are merged at the tail, so the chunk count stays small.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::common::{NullEquality, Result};
use datafusion::physical_expr::PhysicalExpr;

use crate::time::Watermark;

/// Chunks are merged at the tail up to this many rows.
const CHUNK_ROWS: usize = 64 * 1024;
/// Compaction waits for at least this many dead rows.
const MIN_DEAD: usize = 4096;

/// A run of consecutive rows (ids `start..start + len`).
struct Chunk {
    start: u64,
    rows: RecordBatch,
    /// The join keys of each row, evaluated once.
    keys: Vec<ArrayRef>,
    hashes: Vec<u64>,
    /// Whether a row takes part in key lookups (a null key never matches
    /// unless nulls compare equal).
    keyed: Vec<bool>,
    /// Event time in milliseconds; a null time is `i64::MIN`.
    times: Vec<i64>,
    matched: Vec<bool>,
    alive: Vec<bool>,
    /// The lowest time of a living row (`i64::MAX` when none lives).
    min_alive: i64,
}

impl Chunk {
    fn len(&self) -> usize {
        self.hashes.len()
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
            hashes: joined(self.hashes, next.hashes),
            keyed: joined(self.keyed, next.keyed),
            times: joined(self.times, next.times),
            matched: joined(self.matched, next.matched),
            alive: joined(self.alive, next.alive),
            min_alive: self.min_alive.min(next.min_alive),
        })
    }

    fn bytes(&self) -> usize {
        self.rows.get_array_memory_size()
            + self
                .keys
                .iter()
                .map(|k| k.get_array_memory_size())
                .sum::<usize>()
            + self.len() * (8 + 1 + 8 + 1 + 1)
    }
}

/// The kept rows of one side of a join (see the module docs).
pub(super) struct Kept {
    schema: SchemaRef,
    /// The side's join key expressions (none: every pair is a candidate).
    on: Vec<Arc<dyn PhysicalExpr>>,
    time: usize,
    null_equality: NullEquality,
    chunks: Vec<Chunk>,
    /// The id the next row gets.
    end: u64,
    /// Key hash -> newest id with it, plus one.
    heads: std::collections::HashMap<u64, u64, RandomState>,
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
            end: 0,
            heads: Default::default(),
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
        self.end
    }

    /// Adds `rows` (whether each has matched: `matched`, or none has),
    /// indexed by key.
    pub fn push(&mut self, rows: RecordBatch, matched: Option<Vec<bool>>) -> Result<()> {
        let n = rows.num_rows();
        if n == 0 {
            return Ok(());
        }
        let chunk = self.chunk(rows, matched)?;
        self.append(chunk)
    }

    /// Appends `chunk` (its ids starting at `end`): its keyed rows linked
    /// into the index, the tail merged.
    fn append(&mut self, chunk: Chunk) -> Result<()> {
        for (i, (&h, &k)) in chunk.hashes.iter().zip(&chunk.keyed).enumerate() {
            if k {
                self.link(chunk.start + i as u64, h);
            } else {
                self.next.push(0);
            }
        }
        self.end += chunk.len() as u64;
        self.live += chunk.len();
        self.chunks.push(chunk);
        self.merge_tail()
    }

    /// Phases of a new chunk: the keys evaluated and hashed, the rows
    /// without a usable key marked, the event times read.
    fn chunk(&self, rows: RecordBatch, matched: Option<Vec<bool>>) -> Result<Chunk> {
        let n = rows.num_rows();
        let keys = self
            .on
            .iter()
            .map(|e| e.evaluate(&rows)?.into_array(n))
            .collect::<Result<Vec<_>>>()?;
        let mut hashes = vec![0; n];
        if !keys.is_empty() {
            create_hashes(&keys, &RandomState::with_seed(0), &mut hashes)?;
        }
        let keyed = match self.null_equality {
            NullEquality::NullEqualsNull => vec![true; n],
            NullEquality::NullEqualsNothing => {
                (0..n).map(|i| keys.iter().all(|k| k.is_valid(i))).collect()
            }
        };
        let times: Vec<i64> = crate::operators::window::to_millis(rows.column(self.time))?
            .iter()
            .map(|t| t.unwrap_or(i64::MIN))
            .collect();
        let min_alive = times.iter().copied().min().unwrap_or(i64::MAX);
        Ok(Chunk {
            start: self.end,
            rows,
            keys,
            hashes,
            keyed,
            times,
            matched: matched.unwrap_or_else(|| vec![false; n]),
            alive: vec![true; n],
            min_alive,
        })
    }

    /// Puts id `id` (the next one) at the head of its hash's chain.
    fn link(&mut self, id: u64, hash: u64) {
        let prev = self.heads.insert(hash, id + 1).unwrap_or(0);
        self.next.push(prev);
    }

    /// Merges the newest chunks while the one before is not much bigger
    /// (sizes grow geometrically: a row is copied a few times at most).
    fn merge_tail(&mut self) -> Result<()> {
        while let [.., a, b] = self.chunks.as_slice() {
            if a.len() > 2 * b.len() || a.len() + b.len() > CHUNK_ROWS {
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
        let (c, r) = self.locate(id);
        !std::mem::replace(&mut self.chunks[c].matched[r], true)
    }

    /// The candidate pairs of the rows `from..` of `probe` with the living
    /// rows of this side older than `below`: same key hash (every row when
    /// the join has no keys), as (probe id, id) pairs.
    pub fn candidates(&self, probe: &Kept, from: u64, below: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let first = probe
            .chunks
            .partition_point(|c| c.start + c.len() as u64 <= from);
        let rows = probe.chunks[first..]
            .iter()
            .flat_map(|c| (0..c.len()).map(move |r| (c.start + r as u64, c.keyed[r], c.hashes[r])));
        for (p, keyed, h) in rows.skip_while(|(p, _, _)| *p < from) {
            if !keyed {
                continue;
            }
            let mut at = self.heads.get(&h).copied().unwrap_or(0);
            while at != 0 {
                let id = at - 1;
                at = self.next[id as usize];
                if id >= below {
                    continue;
                }
                let (c, r) = self.locate(id);
                if self.chunks[c].alive[r] {
                    out.push((p, id));
                }
            }
        }
        out
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
        let batches: Vec<&RecordBatch> = self.chunks.iter().map(|c| &c.rows).collect();
        Ok(arrow::compute::interleave_record_batch(
            &batches,
            &self.positions(ids),
        )?)
    }

    /// Column `col` of the rows `ids`.
    pub fn gather_column(&self, ids: &[u64], col: usize) -> Result<ArrayRef> {
        let arrays: Vec<&dyn Array> = self
            .chunks
            .iter()
            .map(|c| c.rows.column(col).as_ref())
            .collect();
        self.interleave(arrays, ids, || self.schema.field(col).data_type().clone())
    }

    fn gather_key(&self, ids: &[u64], k: usize) -> Result<ArrayRef> {
        let arrays: Vec<&dyn Array> = self.chunks.iter().map(|c| c.keys[k].as_ref()).collect();
        self.interleave(arrays, ids, || {
            self.on[k]
                .data_type(&self.schema)
                .unwrap_or(arrow::datatypes::DataType::Null)
        })
    }

    fn interleave(
        &self,
        arrays: Vec<&dyn Array>,
        ids: &[u64],
        ty: impl Fn() -> arrow::datatypes::DataType,
    ) -> Result<ArrayRef> {
        if ids.is_empty() || arrays.is_empty() {
            return Ok(arrow::array::new_empty_array(&ty()));
        }
        Ok(arrow::compute::interleave(&arrays, &self.positions(ids))?)
    }

    /// (chunk, row) of each of `ids`.
    fn positions(&self, ids: &[u64]) -> Vec<(usize, usize)> {
        ids.iter().map(|&id| self.locate(id)).collect()
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
        let mut settled = Vec::new();
        let mut died = 0;
        for c in &mut self.chunks {
            let none_dies = bound != Watermark::END && c.min_alive.saturating_add(reach) >= bound;
            if c.min_alive == i64::MAX || none_dies {
                continue;
            }
            let mut min_alive = i64::MAX;
            for r in 0..c.len() {
                if !c.alive[r] {
                    continue;
                }
                let t = c.times[r];
                let lives =
                    bound != Watermark::END && t != i64::MIN && t.saturating_add(reach) >= bound;
                if lives {
                    min_alive = min_alive.min(t);
                } else {
                    c.alive[r] = false;
                    died += 1;
                    if !c.matched[r] {
                        settled.push(c.start + r as u64);
                    }
                }
            }
            c.min_alive = min_alive;
        }
        self.live -= died;
        self.dead += died;
        settled
    }

    /// Once the dead outnumber the living, keeps only the living: fresh
    /// chunks, ids from 0, the index built again from the kept hashes.
    pub fn compact(&mut self) -> Result<()> {
        if self.dead <= self.live || (self.dead < MIN_DEAD && self.live > 0) {
            return Ok(());
        }
        let old = std::mem::take(&mut self.chunks);
        self.heads.clear();
        self.next.clear();
        self.end = 0;
        self.live = 0;
        self.dead = 0;
        for c in old {
            if c.min_alive == i64::MAX {
                continue;
            }
            let keep = BooleanArray::from(c.alive.clone());
            let chunk = Chunk {
                start: self.end,
                rows: arrow::compute::filter_record_batch(&c.rows, &keep)?,
                keys: c
                    .keys
                    .iter()
                    .map(|k| arrow::compute::filter(k, &keep))
                    .collect::<std::result::Result<_, _>>()?,
                hashes: living(&c.hashes, &c.alive),
                keyed: living(&c.keyed, &c.alive),
                times: living(&c.times, &c.alive),
                matched: living(&c.matched, &c.alive),
                alive: vec![true; keep.true_count()],
                min_alive: c.min_alive,
            };
            self.append(chunk)?;
        }
        Ok(())
    }

    /// Bytes held: rows, keys, per-row bookkeeping and the index.
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::bytes).sum::<usize>()
            + self.next.capacity() * 8
            + self.heads.capacity() * 16
    }

    /// The living rows and whether each has matched (for checkpoints).
    pub fn snapshot(&self) -> Result<(RecordBatch, Vec<bool>)> {
        let mut parts = Vec::new();
        let mut matched = Vec::new();
        for c in &self.chunks {
            parts.push(arrow::compute::filter_record_batch(
                &c.rows,
                &BooleanArray::from(c.alive.clone()),
            )?);
            matched.extend(living(&c.matched, &c.alive));
        }
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

/// `a` then `b`.
fn joined<T>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    a.extend(b);
    a
}

/// The values of `v` whose row is alive.
fn living<T: Copy>(v: &[T], alive: &[bool]) -> Vec<T> {
    v.iter()
        .zip(alive)
        .filter(|(_, a)| **a)
        .map(|(x, _)| *x)
        .collect()
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
        let c = build.candidates(probe, from, below);
        let (p, b): (Vec<u64>, Vec<u64>) = c.iter().copied().unzip();
        let eq = build.keys_equal(&b, probe, &p).unwrap();
        let mut out: Vec<_> = c
            .into_iter()
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
}
