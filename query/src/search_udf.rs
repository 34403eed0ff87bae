//! `search(line, 'QUERY')`: true when the line matches the search query
//! (see [`sluice_archive::split::search`] for the language: words, "phrases",
//! AND/OR/NOT, parentheses, case-insensitive).
//!
//! In the WHERE clause of a scan of `logs`, each split's index answers it
//! first (see [`super::table`]), so only the matching rows are decoded; this
//! function then checks those rows (which makes phrases exact). Anywhere
//! else (`SELECT search(line, 'x')`, under an OR) it runs on every row, like
//! `LIKE`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::prune::SEARCH_FUNCTION;
use sluice_archive::split::SearchQuery;

/// The scalar function `search(line, 'QUERY')`, registered in every query
/// session; returns whether each line matches the query.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SearchUdf {
    signature: Signature,
}

impl Default for SearchUdf {
    fn default() -> Self {
        SearchUdf {
            signature: Signature::string(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SearchUdf {
    fn name(&self) -> &str {
        SEARCH_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [lines, query] = args.args.as_slice() else {
            return plan_err!("search(line, 'QUERY') takes two arguments");
        };
        let text = match query {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(text))
                | ScalarValue::Utf8View(Some(text))
                | ScalarValue::LargeUtf8(Some(text)),
            ) => text,
            ColumnarValue::Scalar(value) if value.is_null() => {
                return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
            }
            _ => return plan_err!("search(line, 'QUERY'): the query must be a constant string"),
        };
        let query = SearchQuery::parse(text).map_err(|e| DataFusionError::Plan(e.to_string()))?;
        match lines {
            ColumnarValue::Scalar(value) => {
                let matched = match value {
                    ScalarValue::Utf8(v) | ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v) => {
                        v.as_deref().map(|line| query.matches(line))
                    }
                    other => return exec_err!("search(): line is {}, not text", other.data_type()),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(matched)))
            }
            ColumnarValue::Array(array) => {
                let utf8 = cast(array, &DataType::Utf8)?;
                let strings = utf8
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| DataFusionError::Internal("cast to Utf8".into()))?;
                let matched: BooleanArray = strings
                    .iter()
                    .map(|line| line.map(|l| query.matches(l)))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(matched) as Arc<dyn Array>))
            }
        }
    }
}
