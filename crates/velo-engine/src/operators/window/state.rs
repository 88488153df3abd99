//! The state of one partition of a window operator: its open windows
//! with DataFusion's group tables and accumulators, how rows update it,
//! how closed windows are emitted, and its snapshot for checkpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, TimestampMillisecondArray,
    UInt8Array, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use crate::time::Watermark;

use super::exec::{Pick, RowsByWindow, create_accumulator, eval, take_all};
use super::*;

pub(super) struct Win {
    pub(super) groups: Box<dyn GroupValues>,
    pub(super) accs: Vec<Box<dyn GroupsAccumulator>>,
    /// `EMIT CHANGES`: the groups updated since the last emission.
    pub(super) touched: Vec<bool>,
    pub(super) any_touched: bool,
}

#[derive(Default)]
pub(super) struct WinState {
    pub(super) windows: BTreeMap<i64, Win>,
    /// A new window starts with one of these instead of growing a table
    /// from scratch.
    pub(super) spare: SpareTables,
    /// Session windows: input rows of sessions not yet closed.
    pub(super) pending: Vec<RecordBatch>,
}

/// Bytes of emptied group tables kept for new windows, per partition.
pub(super) const SPARE_TABLE_BYTES: usize = 16 << 20;

/// Group tables of emitted windows, empty and kept at their grown size,
/// within [`SPARE_TABLE_BYTES`].
#[derive(Default)]
pub(super) struct SpareTables {
    pub(super) tables: Vec<Box<dyn GroupValues>>,
    pub(super) bytes: usize,
}

impl SpareTables {
    /// Keeps an emitted window's group table for a new window.
    pub(super) fn keep(&mut self, groups: Box<dyn GroupValues>) {
        let size = groups.size();
        if groups.is_empty() && self.bytes + size <= SPARE_TABLE_BYTES {
            self.bytes += size;
            self.tables.push(groups);
        }
    }

    /// A spare group table, if one is kept.
    pub(super) fn take(&mut self) -> Option<Box<dyn GroupValues>> {
        let g = self.tables.pop()?;
        self.bytes = self.bytes.saturating_sub(g.size());
        Some(g)
    }
}

/// The shared state of one window operator.
pub(super) struct Inner {
    pub(super) input_schema: SchemaRef,
    pub(super) schema: SchemaRef,
    pub(super) kind: WindowKind,
    pub(super) ts: Arc<dyn PhysicalExpr>,
    /// Where the window start is in the output (`None`: no window).
    pub(super) start_pos: Option<usize>,
    pub(super) end_pos: Option<usize>,
    pub(super) emit: Emit,
    /// (position in the output, expression) of the key columns.
    pub(super) keys: Vec<(usize, Arc<dyn PhysicalExpr>)>,
    pub(super) key_schema: SchemaRef,
    pub(super) aggr: Vec<Arc<AggregateFunctionExpr>>,
    pub(super) args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    pub(super) filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    pub(super) tz: Option<Arc<str>>,
    pub(super) watermark: Arc<Watermark>,
    pub(super) metrics: Arc<WindowMetrics>,
    pub(super) state: Mutex<WinState>,
    /// `EMIT CHANGES`: the keys of the groups changed at the last emission
    /// (named like the aggregate's output), for the changelog's deletes.
    pub(super) changed: Mutex<Vec<RecordBatch>>,
    /// This partition's share of the metrics (open, groups, bytes).
    pub(super) published: [std::sync::atomic::AtomicU64; 3],
    /// The watermark of the last emission: every window ending at or
    /// before it is out (a join over the window's output reads it).
    pub(super) emitted_through: std::sync::atomic::AtomicI64,
    /// This partition's reservation of the memory pool (set by the
    /// operator when it makes the partitions).
    pub(super) memory: Option<Arc<crate::operators::memory::StateMemory>>,
}

impl Inner {
    /// The same operator with empty state: another partition of it.
    pub(super) fn fresh(&self) -> Self {
        Self {
            input_schema: self.input_schema.clone(),
            schema: self.schema.clone(),
            kind: self.kind,
            ts: self.ts.clone(),
            start_pos: self.start_pos,
            end_pos: self.end_pos,
            emit: self.emit,
            keys: self.keys.clone(),
            key_schema: self.key_schema.clone(),
            aggr: self.aggr.clone(),
            args: self.args.clone(),
            filters: self.filters.clone(),
            tz: self.tz.clone(),
            watermark: self.watermark.clone(),
            metrics: self.metrics.clone(),
            state: Mutex::new(WinState::default()),
            changed: Mutex::new(Vec::new()),
            published: Default::default(),
            emitted_through: std::sync::atomic::AtomicI64::new(Watermark::NONE),
            memory: None,
        }
    }

    /// The state's reservation follows its size (the bytes of
    /// [`Self::publish_metrics`]).
    pub(super) fn reserve(&self, ctx: &TaskContext) -> Result<()> {
        match &self.memory {
            Some(m) => m.resize(
                ctx,
                self.published[2].load(std::sync::atomic::Ordering::Relaxed) as usize,
            ),
            None => Ok(()),
        }
    }
}

impl OperatorState for Inner {
    fn snapshot(&self) -> Result<RecordBatch> {
        Inner::snapshot(self)
    }
    fn restore(&self, batch: RecordBatch) -> Result<()> {
        Inner::restore(self, batch)
    }
    fn emits_changes(&self) -> bool {
        self.emit == Emit::Changes
    }
    fn take_changed(&self) -> Vec<RecordBatch> {
        std::mem::take(&mut *self.changed.lock().expect("changed keys"))
    }
}

impl Inner {
    pub(super) fn key_columns(&self, b: &RecordBatch) -> Result<Vec<ArrayRef>> {
        if self.keys.is_empty() {
            return Ok(vec![Arc::new(UInt8Array::from(vec![0u8; b.num_rows()]))]);
        }
        self.keys.iter().map(|(_, e)| eval(e, b)).collect()
    }

    pub(super) fn new_window(&self, spare: Option<Box<dyn GroupValues>>) -> Result<Win> {
        let groups = match spare {
            Some(g) => g,
            None => new_group_values(self.key_schema.clone(), &GroupOrdering::None)?,
        };
        Ok(Win {
            groups,
            accs: self
                .aggr
                .iter()
                .map(create_accumulator)
                .collect::<Result<_>>()?,
            touched: Vec::new(),
            any_touched: false,
        })
    }

    /// Feeds the rows of `b` into `w`.
    pub(super) fn accumulate(
        &self,
        w: &mut Win,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        let mut gidx = Vec::with_capacity(keys[0].len());
        w.groups.intern(keys, &mut gidx)?;
        let n = w.groups.len();
        for (i, acc) in w.accs.iter_mut().enumerate() {
            acc.update_batch(&args[i], &gidx, filters[i].as_ref(), n)?;
        }
        if self.emit == Emit::Changes {
            w.touched.resize(n, false);
            for g in gidx {
                w.touched[g] = true;
            }
            w.any_touched = true;
        }
        Ok(())
    }

    pub(super) fn update(&self, b: &RecordBatch) -> Result<()> {
        if b.num_rows() == 0 {
            return Ok(());
        }
        let mut guard = self.state.lock().expect("window state");
        let st = &mut *guard;
        if let WindowKind::Session { .. } = self.kind {
            st.pending.push(b.clone());
            let rows: usize = st.pending.iter().map(|b| b.num_rows()).sum();
            self.set_metric(0, rows as u64);
            return Ok(());
        }
        let keys = self.key_columns(b)?;
        let args: Vec<Vec<ArrayRef>> = self
            .args
            .iter()
            .map(|a| a.iter().map(|e| eval(e, b)).collect::<Result<Vec<_>>>())
            .collect::<Result<_>>()?;
        let filters: Vec<Option<BooleanArray>> = self
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| Ok::<_, DataFusionError>(eval(f, b)?.as_boolean().clone()))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        if let WindowKind::Global = self.kind {
            let w = match st.windows.entry(0) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(self.new_window(st.spare.take())?)
                }
            };
            self.accumulate(w, &keys, &args, &filters)?;
            self.publish_metrics(st);
            return Ok(());
        }
        let ts = to_millis(&eval(&self.ts, b)?)?;
        // the usual case: the whole batch falls in one tumbling window
        if let WindowKind::Tumble { size } = self.kind
            && ts.null_count() == 0
            && let (Some(lo), Some(hi)) = (arrow::compute::min(&ts), arrow::compute::max(&ts))
            && lo.div_euclid(size) == hi.div_euclid(size)
        {
            let w = match st.windows.entry(lo.div_euclid(size) * size) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(self.new_window(st.spare.take())?)
                }
            };
            self.accumulate(w, &keys, &args, &filters)?;
            self.publish_metrics(st);
            return Ok(());
        }
        // rows of each window this batch touches
        let mut by_window = RowsByWindow::default();
        for (i, t) in ts.iter().enumerate() {
            let Some(t) = t else { continue };
            match self.kind {
                WindowKind::Tumble { size } => by_window.push(t.div_euclid(size) * size, i as u32),
                WindowKind::Hop { slide, size } => {
                    let mut s = t.div_euclid(slide) * slide;
                    while s + size > t {
                        by_window.push(s, i as u32);
                        s -= slide;
                    }
                }
                WindowKind::Session { .. } | WindowKind::Global => {
                    unreachable!("sessions buffer rows; no window is one group set")
                }
            }
        }
        let all = matches!(&by_window.windows[..], [(_, rows)] if rows.len() == b.num_rows());
        for (start, rows) in by_window.windows {
            let w = match st.windows.entry(start) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(self.new_window(st.spare.take())?)
                }
            };
            if all {
                self.accumulate(w, &keys, &args, &filters)?;
            } else {
                let pick = Pick::of(&rows);
                let k = pick.all(&keys)?;
                let a: Vec<Vec<ArrayRef>> =
                    args.iter().map(|a| pick.all(a)).collect::<Result<_>>()?;
                let f: Vec<Option<BooleanArray>> = filters
                    .iter()
                    .map(|f| f.as_ref().map(|f| pick.bools(f)).transpose())
                    .collect::<Result<_>>()?;
                self.accumulate(w, &k, &a, &f)?;
            }
        }
        self.publish_metrics(st);
        Ok(())
    }

    /// Sets this operator's (partition's) share of a metric: the shared
    /// metric is the sum over partitions.
    pub(super) fn set_metric(&self, which: usize, v: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let old = self.published[which].swap(v, Relaxed);
        let m = match which {
            0 => &self.metrics.open,
            1 => &self.metrics.groups,
            _ => &self.metrics.bytes,
        };
        m.fetch_add(v.wrapping_sub(old), Relaxed);
    }

    pub(super) fn publish_metrics(&self, st: &WinState) {
        if !matches!(self.kind, WindowKind::Session { .. }) {
            self.set_metric(0, st.windows.len() as u64);
        }
        let groups: usize = st.windows.values().map(|w| w.groups.len()).sum();
        let bytes: usize = st
            .windows
            .values()
            .map(|w| w.groups.size() + w.accs.iter().map(|a| a.size()).sum::<usize>())
            .sum::<usize>()
            + st.pending
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum::<usize>();
        self.set_metric(1, groups as u64);
        self.set_metric(2, bytes as u64);
    }

    pub(super) fn window_column(&self, v: i64, n: usize) -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(vec![v; n]).with_timezone_opt(self.tz.clone()))
    }

    /// One output batch from key columns, window bounds and accumulators.
    pub(super) fn output(
        &self,
        keys: Vec<ArrayRef>,
        start: ArrayRef,
        end: ArrayRef,
        values: Vec<ArrayRef>,
    ) -> Result<RecordBatch> {
        let n_group = self.keys.len()
            + usize::from(self.start_pos.is_some())
            + usize::from(self.end_pos.is_some());
        let mut cols: Vec<Option<ArrayRef>> = vec![None; n_group];
        if let Some(p) = self.start_pos {
            cols[p] = Some(start);
        }
        if let Some(p) = self.end_pos {
            cols[p] = Some(end);
        }
        if !self.keys.is_empty() {
            for ((p, _), k) in self.keys.iter().zip(keys) {
                cols[*p] = Some(k);
            }
        }
        let mut out: Vec<ArrayRef> = cols
            .into_iter()
            .map(|c| c.expect("every group column"))
            .collect();
        out.extend(values);
        let out = out
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    Ok(arrow::compute::cast(&c, f.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), out)?)
    }

    /// The whole state as one batch: for windows `_start`, the key columns
    /// and each accumulator's state columns, one row per (window, key); for
    /// sessions the buffered input rows. Accumulators are rebuilt from the
    /// state they gave up, so the operator goes on unchanged.
    pub(super) fn snapshot(&self) -> Result<RecordBatch> {
        let mut st = self.state.lock().expect("window state");
        if let WindowKind::Session { .. } = self.kind {
            return Ok(arrow::compute::concat_batches(
                &self.input_schema,
                &st.pending,
            )?);
        }
        let mut parts: Vec<Vec<ArrayRef>> = Vec::new();
        let starts: Vec<i64> = st.windows.keys().copied().collect();
        for start in starts {
            let old = st.windows.remove(&start).expect("listed");
            let (w, cols) = self.rebuild(old)?;
            st.windows.insert(start, w);
            let n = cols.first().map(|c| c.len()).unwrap_or(0);
            let mut row: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![start; n]))];
            row.extend(cols);
            parts.push(row);
        }
        let schema = self.state_schema()?;
        if parts.is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        let cols = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = parts.iter().map(|p| p[c].as_ref()).collect();
                Ok(arrow::compute::concat(&arrays)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema, cols)?)
    }

    pub(super) fn state_schema(&self) -> Result<SchemaRef> {
        let mut fields = vec![Field::new("_start", DataType::Int64, false)];
        for f in self.key_schema.fields() {
            fields.push(f.as_ref().clone().with_nullable(true));
        }
        for (i, a) in self.aggr.iter().enumerate() {
            for (j, f) in a.state_fields()?.iter().enumerate() {
                fields.push(Field::new(format!("a{i}_{j}"), f.data_type().clone(), true));
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Takes a window's keys and accumulator states and builds it anew from
    /// them; returns the new window and the columns (keys, states).
    pub(super) fn rebuild(&self, mut old: Win) -> Result<(Win, Vec<ArrayRef>)> {
        let keys = old.groups.emit(EmitTo::All)?;
        let mut states = Vec::new();
        for acc in old.accs.iter_mut() {
            states.push(acc.state(EmitTo::All)?);
        }
        let mut w = self.new_window(None)?;
        self.merge_into(&mut w, &keys, &states)?;
        let mut cols = keys;
        cols.extend(states.into_iter().flatten());
        Ok((w, cols))
    }

    pub(super) fn merge_into(
        &self,
        w: &mut Win,
        keys: &[ArrayRef],
        states: &[Vec<ArrayRef>],
    ) -> Result<()> {
        if keys.first().is_none_or(|k| k.is_empty()) {
            return Ok(());
        }
        let mut gidx = Vec::with_capacity(keys[0].len());
        w.groups.intern(keys, &mut gidx)?;
        let n = w.groups.len();
        for (acc, st) in w.accs.iter_mut().zip(states) {
            acc.merge_batch(st, &gidx, n)?;
        }
        Ok(())
    }

    /// The accumulator states among state columns (keys first, then each
    /// accumulator's state columns in turn).
    pub(super) fn split_states(&self, cols: &[ArrayRef]) -> Result<Vec<Vec<ArrayRef>>> {
        let mut states = Vec::new();
        let mut at = self.key_schema.fields().len();
        for a in &self.aggr {
            let k = a.state_fields()?.len();
            states.push(cols[at..at + k].to_vec());
            at += k;
        }
        Ok(states)
    }

    /// Puts back a [`Self::snapshot`].
    pub(super) fn restore(&self, b: RecordBatch) -> Result<()> {
        let mut st = self.state.lock().expect("window state");
        st.windows.clear();
        st.pending.clear();
        if let WindowKind::Session { .. } = self.kind {
            if b.schema().fields() != self.input_schema.fields() {
                return Err(DataFusionError::Plan(
                    "the checkpointed session state does not match the query's input; the query changed: move the state directory away to start from scratch".into(),
                ));
            }
            if b.num_rows() > 0 {
                st.pending.push(b);
            }
            drop(st);
            return Ok(());
        }
        let want = self.state_schema()?;
        let types = |s: &Schema| {
            s.fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect::<Vec<_>>()
        };
        if types(&b.schema()) != types(&want) {
            return Err(DataFusionError::Plan(
                "the checkpointed window state does not match the query's aggregates; the query changed: move the state directory away to start from scratch".into(),
            ));
        }
        let starts = b.column(0).as_primitive::<Int64Type>().clone();
        let mut rows: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, s) in starts.values().iter().enumerate() {
            rows.entry(*s).or_default().push(i as u32);
        }
        let nk = self.key_schema.fields().len();
        for (start, idx) in rows {
            let idx = UInt32Array::from(idx);
            let cols = take_all(&b.columns()[1..], &idx)?;
            let keys = &cols[..nk];
            let states = self.split_states(&cols)?;
            let mut w = self.new_window(None)?;
            self.merge_into(&mut w, keys, &states)?;
            st.windows.insert(start, w);
        }
        self.publish_metrics(&st);
        Ok(())
    }

    /// `EMIT CHANGES`: the current rows of every group changed since the
    /// last emission, then windows the watermark has passed are dropped
    /// (their last rows are out already).
    pub(super) fn emit_changes(&self) -> Result<Vec<RecordBatch>> {
        let wm = self.watermark.get();
        let mut st = self.state.lock().expect("window state");
        let mut out = Vec::new();
        let mut changed = Vec::new();
        let starts: Vec<i64> = st
            .windows
            .iter()
            .filter(|(_, w)| w.any_touched)
            .map(|(s, _)| *s)
            .collect();
        for start in starts {
            let old = st.windows.remove(&start).expect("listed");
            let touched: Vec<u32> = old
                .touched
                .iter()
                .enumerate()
                .filter(|(_, t)| **t)
                .map(|(i, _)| i as u32)
                .collect();
            // the accumulators give up their state to be read; the window is
            // built again from it and goes on unchanged
            let (w, cols) = self.rebuild(old)?;
            st.windows.insert(start, w);
            let idx = UInt32Array::from(touched);
            let n = idx.len();
            let cols = take_all(&cols, &idx)?;
            let nk = self.key_schema.fields().len();
            // fresh accumulators over the changed groups' states give their values
            let states = self.split_states(&cols)?;
            let gidx: Vec<usize> = (0..n).collect();
            let mut values = Vec::new();
            for (a, s) in self.aggr.iter().zip(&states) {
                let mut acc = create_accumulator(a)?;
                acc.merge_batch(s, &gidx, n)?;
                values.push(acc.evaluate(EmitTo::All)?);
            }
            let keys = cols[..nk].to_vec();
            let (s, e) = match self.kind {
                WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => (start, start + size),
                _ => (0, 0),
            };
            let b = self.output(
                keys,
                self.window_column(s, n),
                self.window_column(e, n),
                values,
            )?;
            if !self.keys.is_empty() {
                let fields: Vec<Field> = self
                    .keys
                    .iter()
                    .map(|(p, _)| self.schema.field(*p).clone())
                    .collect();
                let cols = self
                    .keys
                    .iter()
                    .map(|(p, _)| b.column(*p).clone())
                    .collect();
                changed.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?);
            }
            out.push(b);
        }
        if let WindowKind::Tumble { size } | WindowKind::Hop { size, .. } = self.kind {
            while let Some((&start, _)) = st.windows.first_key_value() {
                if start.saturating_add(size) > wm {
                    break;
                }
                st.windows.remove(&start);
            }
        }
        self.publish_metrics(&st);
        *self.changed.lock().expect("changed keys") = changed;
        Ok(out)
    }

    /// Emits every window the watermark has passed.
    pub(super) fn emit(&self) -> Result<Vec<RecordBatch>> {
        if self.emit == Emit::Changes {
            return self.emit_changes();
        }
        let wm = self.watermark.get();
        let mut st = self.state.lock().expect("window state");
        self.emitted_through
            .fetch_max(wm, std::sync::atomic::Ordering::AcqRel);
        let mut out = Vec::new();
        match self.kind {
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => {
                while let Some((&start, _)) = st.windows.first_key_value() {
                    if start.saturating_add(size) > wm {
                        break;
                    }
                    let mut w = st.windows.remove(&start).expect("first key");
                    let n = w.groups.len();
                    if n == 0 {
                        continue;
                    }
                    let keys = w.groups.emit(EmitTo::All)?;
                    st.spare.keep(w.groups);
                    let values = w
                        .accs
                        .iter_mut()
                        .map(|a| a.evaluate(EmitTo::All))
                        .collect::<Result<Vec<_>>>()?;
                    out.push(self.output(
                        keys,
                        self.window_column(start, n),
                        self.window_column(start + size, n),
                        values,
                    )?);
                }
            }
            WindowKind::Session { gap } => {
                if let Some(b) = self.close_sessions(&mut st, gap, wm)? {
                    out.push(b);
                }
            }
            WindowKind::Global => unreachable!("no window emits changes"),
        }
        self.publish_metrics(&st);
        Ok(out)
    }

    /// Sessions: sorts the buffered rows by key and time, cuts sessions at
    /// gaps, aggregates the sessions the watermark has closed and keeps the
    /// rows of the others.
    pub(super) fn close_sessions(
        &self,
        st: &mut WinState,
        gap: i64,
        wm: i64,
    ) -> Result<Option<RecordBatch>> {
        if st.pending.is_empty() {
            return Ok(None);
        }
        let all = arrow::compute::concat_batches(&self.input_schema, &st.pending)?;
        st.pending.clear();
        let ts = to_millis(&eval(&self.ts, &all)?)?;
        let keys = self.key_columns(&all)?;
        let mut sort_cols: Vec<arrow::compute::SortColumn> = keys
            .iter()
            .map(|k| arrow::compute::SortColumn {
                values: k.clone(),
                options: None,
            })
            .collect();
        sort_cols.push(arrow::compute::SortColumn {
            values: Arc::new(ts.clone()),
            options: None,
        });
        let order = arrow::compute::lexsort_to_indices(&sort_cols, None)?;
        let conv = arrow::row::RowConverter::new(
            keys.iter()
                .map(|k| arrow::row::SortField::new(k.data_type().clone()))
                .collect(),
        )?;
        let rows = conv.convert_columns(&keys)?;
        // walk sessions in (key, time) order
        let mut closed_rows: Vec<u32> = Vec::new();
        let mut closed_gid: Vec<usize> = Vec::new();
        let mut first_rows: Vec<u32> = Vec::new();
        let mut bounds: Vec<(i64, i64)> = Vec::new();
        let mut open_rows: Vec<u32> = Vec::new();
        let mut i = 0;
        let order = order.values();
        while i < order.len() {
            let r0 = order[i] as usize;
            if ts.is_null(r0) {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            let mut last = ts.value(r0);
            while j < order.len() {
                let r = order[j] as usize;
                if rows.row(r) != rows.row(r0) || ts.is_null(r) || ts.value(r) >= last + gap {
                    break;
                }
                last = ts.value(r);
                j += 1;
            }
            let end = last + gap;
            if end <= wm {
                let gid = bounds.len();
                bounds.push((ts.value(r0), end));
                first_rows.push(r0 as u32);
                for &r in &order[i..j] {
                    closed_rows.push(r);
                    closed_gid.push(gid);
                }
            } else {
                open_rows.extend_from_slice(&order[i..j]);
            }
            i = j;
        }
        if !open_rows.is_empty() {
            open_rows.sort_unstable();
            let keep = arrow::compute::take_record_batch(&all, &UInt32Array::from(open_rows))?;
            st.pending.push(keep);
        }
        if bounds.is_empty() {
            return Ok(None);
        }
        let closed = arrow::compute::take_record_batch(&all, &UInt32Array::from(closed_rows))?;
        let n = bounds.len();
        let mut values = Vec::new();
        for (k, a) in self.aggr.iter().enumerate() {
            let mut acc = create_accumulator(a)?;
            let args = self.args[k]
                .iter()
                .map(|e| eval(e, &closed))
                .collect::<Result<Vec<_>>>()?;
            let filter = self.filters[k]
                .as_ref()
                .map(|f| Ok::<_, DataFusionError>(eval(f, &closed)?.as_boolean().clone()))
                .transpose()?;
            acc.update_batch(&args, &closed_gid, filter.as_ref(), n)?;
            values.push(acc.evaluate(EmitTo::All)?);
        }
        let first = UInt32Array::from(first_rows);
        let out_keys = take_all(&keys, &first)?;
        let starts =
            TimestampMillisecondArray::from(bounds.iter().map(|b| b.0).collect::<Vec<_>>())
                .with_timezone_opt(self.tz.clone());
        let ends = TimestampMillisecondArray::from(bounds.iter().map(|b| b.1).collect::<Vec<_>>())
            .with_timezone_opt(self.tz.clone());
        Ok(Some(self.output(
            out_keys,
            Arc::new(starts),
            Arc::new(ends),
            values,
        )?))
    }
}
