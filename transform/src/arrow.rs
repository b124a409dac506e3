//! The Arrow side of a transformation: the IPC *file* format the service reads and writes, and
//! an output column read back as the feature's declared type.

use std::io::Cursor;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, TimeUnit};
use quiver_core::{Value, ValueType};

/// One batch as an Arrow IPC file.
pub fn encode_ipc_file(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut w = FileWriter::try_new(&mut out, &batch.schema()).map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

/// An Arrow IPC file's batches, as one batch.
pub fn decode_ipc_file(bytes: &[u8]) -> Result<RecordBatch, String> {
    let reader = FileReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| format!("an Arrow IPC file that does not read: {e}"))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("an Arrow IPC file that does not read: {e}"))?;
    arrow_select::concat::concat_batches(&schema, &batches).map_err(|e| e.to_string())
}

/// The values of an output column, as the feature's declared type. pandas decides the Arrow
/// type of what a function returns (an int column with a missing value becomes float64, a
/// float32 sum float64): numbers are converted to the declared type; NaN and null are `Null`
/// (Feast serves both as null). Scalar types only; others are an error naming the type.
pub fn column_values(array: &ArrayRef, dtype: ValueType) -> Result<Vec<Value>, String> {
    let n = array.len();
    let float = |i: usize| -> Option<f64> {
        if array.is_null(i) {
            return None;
        }
        let x = match array.data_type() {
            DataType::Float64 => array.as_primitive::<Float64Type>().value(i),
            DataType::Float32 => f64::from(array.as_primitive::<Float32Type>().value(i)),
            DataType::Int64 => array.as_primitive::<Int64Type>().value(i) as f64,
            DataType::Int32 => f64::from(array.as_primitive::<Int32Type>().value(i)),
            DataType::Int16 => f64::from(array.as_primitive::<Int16Type>().value(i)),
            DataType::Int8 => f64::from(array.as_primitive::<Int8Type>().value(i)),
            DataType::UInt64 => array.as_primitive::<UInt64Type>().value(i) as f64,
            DataType::UInt32 => f64::from(array.as_primitive::<UInt32Type>().value(i)),
            DataType::UInt16 => f64::from(array.as_primitive::<UInt16Type>().value(i)),
            DataType::UInt8 => f64::from(array.as_primitive::<UInt8Type>().value(i)),
            DataType::Boolean => f64::from(u8::from(array.as_boolean().value(i))),
            _ => return None,
        };
        (!x.is_nan()).then_some(x)
    };
    let numeric = matches!(
        array.data_type(),
        DataType::Float64
            | DataType::Float32
            | DataType::Int64
            | DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::UInt64
            | DataType::UInt32
            | DataType::UInt16
            | DataType::UInt8
            | DataType::Boolean
    );
    let mismatch = || {
        format!(
            "a {} column for a feature declared {dtype}",
            array.data_type()
        )
    };
    let out = match dtype {
        ValueType::Double
        | ValueType::Float
        | ValueType::Int64
        | ValueType::Int32
        | ValueType::Bool => {
            if !numeric {
                return Err(mismatch());
            }
            (0..n)
                .map(|i| match float(i) {
                    None => Value::Null,
                    Some(x) => match dtype {
                        ValueType::Double => Value::Double(x),
                        ValueType::Float => Value::Float(x as f32),
                        ValueType::Int64 => Value::Int64(x as i64),
                        ValueType::Int32 => Value::Int32(x as i32),
                        _ => Value::Bool(x != 0.0),
                    },
                })
                .collect()
        }
        ValueType::String => {
            let strings: Vec<Option<&str>> = match array.data_type() {
                DataType::Utf8 => array.as_string::<i32>().iter().collect(),
                DataType::LargeUtf8 => array.as_string::<i64>().iter().collect(),
                _ => return Err(mismatch()),
            };
            strings
                .into_iter()
                .map(|s| s.map_or(Value::Null, |s| Value::String(s.to_owned())))
                .collect()
        }
        ValueType::UnixTimestamp => match array.data_type() {
            DataType::Timestamp(unit, _) => {
                let per_second = match unit {
                    TimeUnit::Second => 1,
                    TimeUnit::Millisecond => 1_000,
                    TimeUnit::Microsecond => 1_000_000,
                    TimeUnit::Nanosecond => 1_000_000_000,
                };
                let a = array.as_primitive::<Int64Type>();
                (0..n)
                    .map(|i| {
                        if a.is_null(i) {
                            Value::Null
                        } else {
                            Value::UnixTimestamp(a.value(i).div_euclid(per_second))
                        }
                    })
                    .collect()
            }
            _ => return Err(mismatch()),
        },
        other => {
            return Err(format!(
                "a feature declared {other}: quiver reads Int32, Int64, Float, Double, Bool, String and UnixTimestamp outputs of a transformation"
            ));
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float32Array, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn a_batch_survives_the_ipc_file_format() {
        let batch = RecordBatch::try_from_iter([
            (
                "v__conv_rate",
                Arc::new(Float32Array::from(vec![Some(0.5), None])) as ArrayRef,
            ),
            ("val_to_add", Arc::new(Int64Array::from(vec![1000, 2]))),
        ])
        .unwrap();
        let bytes = encode_ipc_file(&batch).unwrap();
        assert_eq!(&bytes[..6], b"ARROW1");
        assert_eq!(decode_ipc_file(&bytes).unwrap(), batch);
        assert!(decode_ipc_file(b"not arrow").is_err());
    }

    #[test]
    fn outputs_are_read_as_their_declared_type() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![Some(1000.5), Some(f64::NAN), None]));
        assert_eq!(
            column_values(&a, ValueType::Double).unwrap(),
            [Value::Double(1000.5), Value::Null, Value::Null]
        );
        assert_eq!(
            column_values(&a, ValueType::Int64).unwrap()[0],
            Value::Int64(1000)
        );
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None]));
        assert_eq!(
            column_values(&s, ValueType::String).unwrap(),
            [Value::String("x".into()), Value::Null]
        );
        let e = column_values(&s, ValueType::Double).unwrap_err();
        assert!(e.contains("Utf8") && e.contains("Float64"), "{e}");
        assert!(column_values(&a, ValueType::Map).is_err());
    }
}
