//! Range checks shared by every write path (push, write-to-online-store, materialization, offline
//! pushes): a value is refused when Feast could not read it back as written.
//!
//! - **Times** (event and created times, `UnixTimestamp` features) must fit a pandas
//!   `Timestamp`, nanoseconds since the epoch in an `i64`: 1677-09-21T00:12:43.145224193Z to
//!   2262-04-11T23:47:16.854775807Z. That is narrower than a protobuf `Timestamp` (years 1 to
//!   9999), and Feast's Python SDK turns every time it reads into pandas; a time past it (e.g.
//!   `i64::MAX` seconds) would pin an entity forever under Feast's "newer wins" write rule.
//! - **Float32** features: a finite number whose magnitude `f32` cannot hold (e.g. `1e39`) is
//!   refused rather than stored as Infinity. NaN and the infinities given as such stay allowed.
//! - **Int32** features and keys are checked where they are converted (`i32::try_from`).
//!
//! Callers add the column and row to the message.

use crate::Value;
use crate::time::Timestamp;
use crate::value::NULL_TIMESTAMP;

/// The earliest time Feast's SDK can hold (pandas `Timestamp.min`), in nanoseconds.
pub const MIN_NANOS: i128 = i64::MIN as i128 + 1;
/// The latest time Feast's SDK can hold (pandas `Timestamp.max`), in nanoseconds.
pub const MAX_NANOS: i128 = i64::MAX as i128;

/// A value outside what its type (or Feast's SDK) can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(String);

impl RangeError {
    pub fn message(&self) -> &str {
        &self.0
    }
}

fn time_range_error(what: String) -> RangeError {
    RangeError(format!(
        "{what} is out of range: times must lie between 1677-09-21T00:12:43.145224193Z and 2262-04-11T23:47:16.854775807Z (what pandas, and so Feast, can hold)"
    ))
}

/// Checks a time given as nanoseconds since the epoch.
pub fn check_nanos(nanos: i128) -> Result<(), RangeError> {
    if (MIN_NANOS..=MAX_NANOS).contains(&nanos) {
        Ok(())
    } else {
        let seconds = nanos.div_euclid(1_000_000_000);
        Err(time_range_error(match i64::try_from(seconds) {
            Ok(s) => {
                let mut text = String::new();
                crate::time::write_rfc3339(&mut text, s, nanos.rem_euclid(1_000_000_000) as u32);
                format!("time {text} ({seconds} seconds since the epoch)")
            }
            Err(_) => format!("time {nanos} ns since the epoch"),
        }))
    }
}

/// Checks an event or created time.
pub fn check_timestamp(t: &Timestamp) -> Result<(), RangeError> {
    check_nanos(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

/// Checks `UnixTimestamp` seconds (Feast's null marker, `NULL_TIMESTAMP`, passes).
pub fn check_unix_seconds(seconds: i64) -> Result<(), RangeError> {
    if seconds == NULL_TIMESTAMP {
        return Ok(());
    }
    check_nanos(i128::from(seconds) * 1_000_000_000)
        .map_err(|_| time_range_error(format!("UnixTimestamp {seconds} (seconds)")))
}

/// A number for a Float32 feature: refused when finite but too large for `f32`, instead of
/// becoming Infinity.
pub fn to_f32(v: f64) -> Result<f32, RangeError> {
    let f = v as f32;
    if f.is_infinite() && v.is_finite() {
        Err(RangeError(format!(
            "{v:e} is out of range for Float32 (largest magnitude {:e})",
            f32::MAX
        )))
    } else {
        Ok(f)
    }
}

/// Checks what a typed value holds that its type alone does not bound: `UnixTimestamp`s (and
/// their lists and sets), inside maps and structs too.
pub fn check_value(v: &Value) -> Result<(), RangeError> {
    match v {
        Value::UnixTimestamp(s) => check_unix_seconds(*s),
        Value::UnixTimestampList(l) | Value::UnixTimestampSet(l) => {
            l.iter().try_for_each(|s| check_unix_seconds(*s))
        }
        Value::Map(fields) | Value::Struct(fields) => {
            fields.iter().try_for_each(|(_, v)| check_value(v))
        }
        Value::MapList(maps) | Value::StructList(maps) => maps
            .iter()
            .try_for_each(|m| m.iter().try_for_each(|(_, v)| check_value(v))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_inside_pandas_range_pass_and_outside_fail() {
        let t = |seconds, nanos| Timestamp { seconds, nanos };
        assert!(check_timestamp(&t(0, 0)).is_ok());
        assert!(check_timestamp(&t(9_223_372_036, 854_775_807)).is_ok());
        assert!(check_timestamp(&t(9_223_372_036, 854_775_808)).is_err());
        assert!(check_timestamp(&t(-9_223_372_037, 145_224_193)).is_ok());
        assert!(check_timestamp(&t(-9_223_372_037, 145_224_192)).is_err());
        let e = check_timestamp(&t(i64::MAX, 0)).unwrap_err();
        assert!(e.message().contains("out of range"), "{e}");
        // Year 10000.
        let e = check_timestamp(&t(253_402_300_800, 0)).unwrap_err();
        assert!(e.message().contains("10000-01-01T00:00:00Z"), "{e}");
        assert!(check_nanos(i128::from(i64::MAX) * 1_000_000_000).is_err());
        assert!(check_unix_seconds(NULL_TIMESTAMP).is_ok());
        assert!(check_unix_seconds(i64::MAX).is_err());
    }

    #[test]
    fn float32_overflow_is_refused_but_explicit_infinities_pass() {
        assert_eq!(to_f32(1.5), Ok(1.5));
        assert_eq!(to_f32(f64::from(f32::MAX)), Ok(f32::MAX));
        let e = to_f32(1e39).unwrap_err();
        assert!(
            e.message().starts_with("1e39 is out of range for Float32"),
            "{e}"
        );
        assert!(to_f32(-1e39).is_err());
        assert_eq!(to_f32(f64::INFINITY), Ok(f32::INFINITY));
        assert!(to_f32(f64::NAN).unwrap().is_nan());
    }

    #[test]
    fn values_nested_in_lists_and_maps_are_checked() {
        assert!(check_value(&Value::UnixTimestampList(vec![0, i64::MAX])).is_err());
        assert!(check_value(&Value::UnixTimestampList(vec![0, NULL_TIMESTAMP])).is_ok());
        assert!(check_value(&Value::Int64(i64::MAX)).is_ok());
    }
}
