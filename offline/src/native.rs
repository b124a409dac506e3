//! Native on-demand views in historical retrieval: evaluated after the point-in-time join,
//! batch by batch, by the same compiled program serving runs ([`NativeProgram`], over
//! `quiver_core::Value`s), so a training row and a served row get the same value.
//!
//! The source features an on-demand view reads are joined like requested features (hidden from
//! the output when the request did not ask for them); its request fields are columns of the
//! entity table, checked while planning.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use quiver_core::on_demand::NativeProgram;
use quiver_core::{Value, ValueType};

use crate::Error;
use crate::convert;

/// A native on-demand view as a historical request uses it.
#[derive(Debug, Clone)]
pub struct OnDemandRequest {
    /// The view's name: the prefix of full feature names.
    pub name: String,
    pub program: Arc<NativeProgram>,
    /// The requested features (indexes into the program's outputs).
    pub outputs: Vec<usize>,
}

/// The evaluation step after the join: which columns of the joined batch feed each view's
/// inputs, and the output schema.
#[derive(Debug)]
pub struct Stage {
    /// The number of leading columns of the joined batch that are output as they are.
    pub keep: usize,
    /// Per view: its request, and the joined column index of each program input.
    pub views: Vec<(OnDemandRequest, Vec<usize>)>,
    /// The output schema: the kept columns, then each view's requested features.
    pub schema: SchemaRef,
}

/// The Arrow type of a computed feature.
pub fn arrow_type(t: ValueType) -> Option<DataType> {
    Some(match t {
        ValueType::Int32 => DataType::Int32,
        ValueType::Int64 => DataType::Int64,
        ValueType::Float => DataType::Float32,
        ValueType::Double => DataType::Float64,
        ValueType::Bool => DataType::Boolean,
        ValueType::String => DataType::Utf8,
        _ => return None,
    })
}

impl Stage {
    /// `joined` is the joined batch's schema, `inputs[v][i]` the column of view `v`'s input `i`.
    pub fn new(
        joined: &Schema,
        keep: usize,
        views: Vec<(OnDemandRequest, Vec<usize>)>,
        names: &[Vec<String>],
    ) -> Result<Stage, Error> {
        let mut fields: Vec<Field> = joined.fields()[..keep]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for ((request, _), names) in views.iter().zip(names) {
            for (&output, name) in request.outputs.iter().zip(names) {
                let dtype = request.program.outputs[output].0.dtype;
                let arrow = arrow_type(dtype).ok_or_else(|| {
                    Error::internal(format!("{dtype} is not a type an expression computes"))
                })?;
                fields.push(Field::new(name, arrow, true));
            }
        }
        Ok(Stage {
            keep,
            views,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The output batch of one joined batch.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, Error> {
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns()[..self.keep].to_vec();
        for (request, inputs) in &self.views {
            let mut values: Vec<Vec<Value>> = Vec::with_capacity(inputs.len());
            for (i, &c) in inputs.iter().enumerate() {
                let dtype = request.program.inputs[i].dtype();
                let array = batch.column(c);
                let column = (0..rows)
                    .map(|r| convert::value_at(array.as_ref(), r, dtype))
                    .collect::<Result<Vec<Value>, String>>()
                    .map_err(|e| {
                        Error::unprocessable(format!(
                            "on-demand feature view {}: input {}: {e}",
                            request.name,
                            batch.schema().field(c).name()
                        ))
                    })?;
                values.push(column);
            }
            let slices: Vec<&[Value]> = values.iter().map(Vec::as_slice).collect();
            for &output in &request.outputs {
                let (field, expr) = &request.program.outputs[output];
                let computed = expr.eval(&slices, rows);
                columns.push(to_array(field.dtype, &computed));
            }
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| Error::internal(format!("on-demand output batch: {e}")))
    }
}

/// A computed column as an Arrow array of the feature's type.
fn to_array(t: ValueType, values: &[Value]) -> ArrayRef {
    match t {
        ValueType::Int32 => Arc::new(Int32Array::from_iter(values.iter().map(|v| match v {
            Value::Int32(x) => Some(*x),
            _ => None,
        }))),
        ValueType::Int64 => Arc::new(Int64Array::from_iter(values.iter().map(|v| match v {
            Value::Int64(x) => Some(*x),
            _ => None,
        }))),
        ValueType::Float => Arc::new(Float32Array::from_iter(values.iter().map(|v| match v {
            Value::Float(x) => Some(*x),
            _ => None,
        }))),
        ValueType::Double => Arc::new(Float64Array::from_iter(values.iter().map(|v| match v {
            Value::Double(x) => Some(*x),
            _ => None,
        }))),
        ValueType::Bool => Arc::new(BooleanArray::from_iter(values.iter().map(|v| match v {
            Value::Bool(x) => Some(*x),
            _ => None,
        }))),
        _ => Arc::new(StringArray::from_iter(values.iter().map(|v| match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }))),
    }
}
