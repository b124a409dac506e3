//! `AsOfJoinExec`: the point-in-time join of one feature view as a DataFusion execution plan.
//!
//! Both inputs arrive hash-partitioned the same way on the join keys and sorted within each
//! partition: the entity side by `(keys, t)`, the feature side by `(keys, ts, created)`. One pass
//! over both then finds, for every entity row, the last feature row with the same keys and
//! `ts <= t` — with ties on `ts` already ordered by `created`, that is the latest event with the
//! largest created time. The TTL is checked after (`ts >= t - ttl`), which is the same as
//! restricting candidates to the TTL window: if the latest candidate is too old, all are.
//!
//! Every entity row yields exactly one output row (features null when nothing matches), in the
//! entity side's order. DataFusion has no as-of join: its sort-merge join is an equi-join, and an
//! inequality join followed by a "latest per row" window would materialize every candidate pair.
//!
//! Memory: the operator holds the entity batch being answered and the feature batches its answer
//! points into; when those pile up (many feature rows per entity row) it emits what it has early,
//! so it keeps at most [`MAX_HELD`] feature batches, whatever the table sizes.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;

/// Feature batches kept alive for pending answers before the operator emits early.
const MAX_HELD: usize = 32;

/// Column positions the join reads.
#[derive(Debug, Clone)]
pub struct AsOfColumns {
    /// Entity side: the key columns, then the entity time (Int64 nanoseconds).
    pub left_keys: Vec<usize>,
    pub left_time: usize,
    /// Entity-side columns copied to the output, in order.
    pub left_output: Vec<usize>,
    /// Feature side: the key columns (same types as the entity side's), the event time
    /// (Int64 nanoseconds), and the feature columns appended to the output.
    pub right_keys: Vec<usize>,
    pub right_time: usize,
    pub right_output: Vec<usize>,
}

#[derive(Debug)]
pub struct AsOfJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    columns: AsOfColumns,
    /// Zero: no lower bound.
    ttl_nanos: i64,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl AsOfJoinExec {
    /// `left` and `right` must have the same number of partitions, partitioned by the same hash
    /// of the same key types, each sorted as the module documentation says.
    pub fn try_new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        columns: AsOfColumns,
        ttl_nanos: i64,
        schema: SchemaRef,
    ) -> Result<AsOfJoinExec> {
        let partitions = left.output_partitioning().partition_count();
        if right.output_partitioning().partition_count() != partitions {
            return internal_err!(
                "AsOfJoinExec: {} entity partitions but {} feature partitions",
                partitions,
                right.output_partitioning().partition_count()
            );
        }
        if columns.left_keys.len() != columns.right_keys.len() {
            return internal_err!("AsOfJoinExec: key counts differ");
        }
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(AsOfJoinExec {
            left,
            right,
            columns,
            ttl_nanos,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "AsOfJoinExec: keys={:?}, ttl_nanos={}",
            self.columns.left_keys, self.ttl_nanos
        )
    }
}

impl ExecutionPlan for AsOfJoinExec {
    fn name(&self) -> &str {
        "AsOfJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true, false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [left, right]: [Arc<dyn ExecutionPlan>; 2] = children
            .try_into()
            .map_err(|_| DataFusionError::Internal("AsOfJoinExec has two children".into()))?;
        Ok(Arc::new(AsOfJoinExec::try_new(
            left,
            right,
            self.columns.clone(),
            self.ttl_nanos,
            Arc::clone(&self.schema),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let left = self.left.execute(partition, Arc::clone(&context))?;
        let right = self.right.execute(partition, context)?;
        let left_schema = self.left.schema();
        let right_schema = self.right.schema();
        let key_fields = self
            .columns
            .left_keys
            .iter()
            .map(|&i| SortField::new(left_schema.field(i).data_type().clone()))
            .collect::<Vec<_>>();
        for (&l, &r) in self.columns.left_keys.iter().zip(&self.columns.right_keys) {
            if left_schema.field(l).data_type() != right_schema.field(r).data_type() {
                return internal_err!(
                    "AsOfJoinExec: key types differ: {} and {}",
                    left_schema.field(l).data_type(),
                    right_schema.field(r).data_type()
                );
            }
        }
        let nulls = self
            .columns
            .right_output
            .iter()
            .map(|&i| new_null_array(right_schema.field(i).data_type(), 1))
            .collect();
        let merge = Merge {
            left,
            right,
            columns: self.columns.clone(),
            ttl_nanos: self.ttl_nanos,
            schema: Arc::clone(&self.schema),
            converter: RowConverter::new(key_fields)?,
            current: None,
            right_done: false,
            held: Vec::new(),
            nulls,
            candidate: None,
            last_key: None,
            pending: VecDeque::new(),
            metrics: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = futures::stream::try_unfold(merge, |mut m| async move {
            loop {
                if let Some(batch) = m.pending.pop_front() {
                    m.metrics.record_output(batch.num_rows());
                    return Ok(Some((batch, m)));
                }
                match m.left.next().await {
                    None => return Ok(None),
                    Some(batch) => {
                        let batch = batch?;
                        let timer = m.metrics.elapsed_compute().clone();
                        let _guard = timer.timer();
                        m.answer(batch).await?;
                    }
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The feature batch being scanned.
struct Current {
    keys: Rows,
    ts: Vec<Option<i64>>,
    pos: usize,
    /// Its index in `held`.
    held: usize,
}

struct Merge {
    left: SendableRecordBatchStream,
    right: SendableRecordBatchStream,
    columns: AsOfColumns,
    ttl_nanos: i64,
    schema: SchemaRef,
    converter: RowConverter,
    current: Option<Current>,
    right_done: bool,
    /// Feature columns of the batches pending answers point into.
    held: Vec<Vec<ArrayRef>>,
    /// One null row per feature column: the answer when nothing matches.
    nulls: Vec<ArrayRef>,
    /// The latest matching feature row so far for `last_key`: (held index, row, ts).
    candidate: Option<(usize, usize, i64)>,
    last_key: Option<Vec<u8>>,
    pending: VecDeque<RecordBatch>,
    metrics: BaselineMetrics,
}

impl Merge {
    /// Loads the next non-empty feature batch; false at the end of the feature stream.
    async fn next_right(&mut self) -> Result<bool> {
        while let Some(batch) = self.right.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let keys: Vec<ArrayRef> = self
                .columns
                .right_keys
                .iter()
                .map(|&i| Arc::clone(batch.column(i)))
                .collect();
            let keys = self.converter.convert_columns(&keys)?;
            let ts_col = batch.column(self.columns.right_time);
            let ts_col = ts_col
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| DataFusionError::Internal("feature time is not Int64".into()))?;
            let ts = ts_col.iter().collect();
            self.held.push(
                self.columns
                    .right_output
                    .iter()
                    .map(|&i| Arc::clone(batch.column(i)))
                    .collect(),
            );
            self.current = Some(Current {
                keys,
                ts,
                pos: 0,
                held: self.held.len() - 1,
            });
            return Ok(true);
        }
        self.current = None;
        self.right_done = true;
        Ok(false)
    }

    /// Answers every row of one entity batch (queued in `pending`).
    async fn answer(&mut self, batch: RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> = self
            .columns
            .left_keys
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let has_nulls = keys.iter().any(|k| k.null_count() > 0);
        let rows = self.converter.convert_columns(&keys)?;
        let time = batch.column(self.columns.left_time);
        let time = time
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| DataFusionError::Internal("entity time is not Int64".into()))?;
        // (held index, row) per answer; usize::MAX: no match.
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(n);
        let mut start = 0;
        for i in 0..n {
            if (has_nulls && keys.iter().any(|k| k.is_null(i))) || time.is_null(i) {
                picks.push((usize::MAX, 0));
                self.last_key = None;
                self.candidate = None;
                continue;
            }
            let t = time.value(i);
            let key = rows.row(i);
            if self.last_key.as_deref() != Some(key.as_ref()) {
                self.candidate = None;
                self.last_key = Some(key.as_ref().to_vec());
            }
            loop {
                let exhausted = match &self.current {
                    Some(c) => c.pos >= c.ts.len(),
                    None => true,
                };
                if exhausted {
                    if self.right_done || !self.next_right().await? {
                        break;
                    }
                    continue;
                }
                let Some(c) = self.current.as_mut() else {
                    break;
                };
                match c.keys.row(c.pos).cmp(&key) {
                    std::cmp::Ordering::Less => c.pos += 1,
                    std::cmp::Ordering::Greater => break,
                    std::cmp::Ordering::Equal => match c.ts[c.pos] {
                        // Rows without an event time never match.
                        None => c.pos += 1,
                        Some(ts) if ts <= t => {
                            self.candidate = Some((c.held, c.pos, ts));
                            c.pos += 1;
                        }
                        Some(_) => break,
                    },
                }
            }
            let pick = match self.candidate {
                Some((h, r, ts))
                    if self.ttl_nanos == 0 || ts >= t.saturating_sub(self.ttl_nanos) =>
                {
                    (h, r)
                }
                _ => (usize::MAX, 0),
            };
            picks.push(pick);
            if self.held.len() > MAX_HELD {
                self.emit(&batch, start, i + 1, &picks)?;
                picks.clear();
                start = i + 1;
                self.compact();
            }
        }
        if start < n {
            self.emit(&batch, start, n, &picks)?;
        }
        self.compact();
        Ok(())
    }

    /// Queues the answers for entity rows `[start, end)`.
    fn emit(
        &mut self,
        batch: &RecordBatch,
        start: usize,
        end: usize,
        picks: &[(usize, usize)],
    ) -> Result<()> {
        let len = end - start;
        let null_at = self.held.len();
        let indices: Vec<(usize, usize)> = picks
            .iter()
            .map(|&(h, r)| {
                if h == usize::MAX {
                    (null_at, 0)
                } else {
                    (h, r)
                }
            })
            .collect();
        let mut columns: Vec<ArrayRef> = self
            .columns
            .left_output
            .iter()
            .map(|&i| batch.column(i).slice(start, len))
            .collect();
        for (j, null) in self.nulls.iter().enumerate() {
            let sources: Vec<&dyn Array> = self
                .held
                .iter()
                .map(|cols| cols[j].as_ref())
                .chain(std::iter::once(null.as_ref()))
                .collect();
            columns.push(interleave(&sources, &indices)?);
        }
        self.pending
            .push_back(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
        Ok(())
    }

    /// Drops held feature batches no longer needed: keeps the one being scanned and the one
    /// the candidate points into.
    fn compact(&mut self) {
        let mut keep: Vec<usize> = Vec::with_capacity(2);
        if let Some((h, _, _)) = self.candidate {
            keep.push(h);
        }
        if let Some(c) = &self.current
            && !keep.contains(&c.held)
        {
            keep.push(c.held);
        }
        keep.sort_unstable();
        let held = std::mem::take(&mut self.held);
        let mut remap = vec![usize::MAX; held.len()];
        for (new, &old) in keep.iter().enumerate() {
            remap[old] = new;
        }
        self.held = held
            .into_iter()
            .enumerate()
            .filter(|(i, _)| remap[*i] != usize::MAX)
            .map(|(_, cols)| cols)
            .collect();
        if let Some((h, r, ts)) = self.candidate {
            self.candidate = Some((remap[h], r, ts));
        }
        if let Some(c) = self.current.as_mut() {
            c.held = remap[c.held];
        }
    }
}
