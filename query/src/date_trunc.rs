//! `date_trunc` with a fast path for what Sluice's tables hold: `ts` is
//! `Timestamp(µs, "UTC")`, and DataFusion's own `date_trunc` truncates a
//! time zone's values to an hour or a day through calendar conversions (six
//! times the cost of the arithmetic), even for UTC, where every hour and day
//! has the same length. This wrapper answers `hour` and `day` on UTC
//! microseconds (and nanoseconds) with `v - v.rem_euclid(unit)` and hands
//! everything else to the built-in function, whose name, signature and
//! return type it keeps.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, PrimitiveArray};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, FieldRef, TimeUnit, TimestampMicrosecondType,
    TimestampNanosecondType,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

impl Default for UtcDateTrunc {
    fn default() -> Self {
        UtcDateTrunc {
            inner: datafusion::functions::datetime::date_trunc(),
        }
    }
}

/// Nanoseconds in the granularity, for those UTC truncates by arithmetic.
fn unit_nanos(granularity: &str) -> Option<i64> {
    match granularity.to_ascii_lowercase().as_str() {
        "hour" => Some(3_600_000_000_000),
        "day" => Some(86_400_000_000_000),
        _ => None,
    }
}

/// `values` truncated to multiples of `unit` (in the array's own unit).
fn truncate<T: ArrowTimestampType>(
    values: &dyn Array,
    unit: i64,
    tz: Option<Arc<str>>,
) -> Arc<dyn Array> {
    let values = values.as_primitive::<T>();
    Arc::new(
        PrimitiveArray::<T>::from_iter_values_with_nulls(
            values.values().iter().map(|v| v - v.rem_euclid(unit)),
            values.nulls().cloned(),
        )
        .with_timezone_opt(tz),
    )
}

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "+00:00" | "Z" | "Etc/UTC")
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(g))
                | ScalarValue::Utf8View(Some(g))
                | ScalarValue::LargeUtf8(Some(g)),
            ),
            ColumnarValue::Array(values),
        ] = args.args.as_slice()
            && let DataType::Timestamp(time_unit, tz) = values.data_type()
            && tz.as_deref().is_none_or(is_utc)
            && let Some(unit) = unit_nanos(g)
        {
            let truncated = match time_unit {
                TimeUnit::Nanosecond => {
                    truncate::<TimestampNanosecondType>(values, unit, tz.clone())
                }
                TimeUnit::Microsecond => {
                    truncate::<TimestampMicrosecondType>(values, unit / 1_000, tz.clone())
                }
                _ => return self.inner.invoke_with_args(args),
            };
            return Ok(ColumnarValue::Array(truncated));
        }
        self.inner.invoke_with_args(args)
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{TimestampMicrosecondArray, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;
    use proptest::prelude::*;

    fn run(
        udf: &dyn Fn(ScalarFunctionArgs) -> Result<ColumnarValue>,
        g: &str,
        values: &[Option<i64>],
        tz: Option<&str>,
        micros: bool,
    ) -> Vec<Option<i64>> {
        let array: Arc<dyn Array> = if micros {
            // The same instants, in microseconds.
            let values: Vec<Option<i64>> = values.iter().map(|v| v.map(|v| v / 1_000)).collect();
            Arc::new(TimestampMicrosecondArray::from(values).with_timezone_opt(tz))
        } else {
            Arc::new(TimestampNanosecondArray::from(values.to_vec()).with_timezone_opt(tz))
        };
        let data_type = array.data_type().clone();
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(g.into()))),
                ColumnarValue::Array(array),
            ],
            arg_fields: vec![
                Arc::new(Field::new("g", DataType::Utf8, false)),
                Arc::new(Field::new("ts", data_type.clone(), true)),
            ],
            number_rows: values.len(),
            return_field: Arc::new(Field::new("r", data_type.clone(), true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let ColumnarValue::Array(out) = udf(args).unwrap() else {
            panic!("an array in, an array out");
        };
        assert_eq!(out.data_type(), &data_type);
        if micros {
            out.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect()
        } else {
            out.as_primitive::<TimestampNanosecondType>()
                .iter()
                .collect()
        }
    }

    proptest! {
        /// The same answers as DataFusion's own date_trunc, for every
        /// granularity, UTC or no time zone, before and after 1970.
        #[test]
        fn agrees_with_the_built_in(
            values in proptest::collection::vec(proptest::option::of(-4_000_000_000_000_000_000i64..4_000_000_000_000_000_000), 1..40),
            g in prop::sample::select(vec!["hour", "DAY", "minute", "second", "month", "year", "week"]),
            tz in prop::sample::select(vec![None, Some("UTC"), Some("+00:00"), Some("Europe/Paris")]),
            micros in any::<bool>(),
        ) {
            let fast = UtcDateTrunc::default();
            let builtin = datafusion::functions::datetime::date_trunc();
            let ours = run(&|a| fast.invoke_with_args(a), g, &values, tz, micros);
            let theirs = run(&|a| builtin.invoke_with_args(a), g, &values, tz, micros);
            prop_assert_eq!(ours, theirs);
        }
    }
}
