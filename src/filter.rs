//! Metadata filters, evaluated inside the ANN search.
//!
//! A filter is a JSON object; every key is a (dot-separated) metadata field and all conditions
//! must hold:
//!
//! ```text
//! {"lang": "en"}                          equality
//! {"lang": {"$in": ["en", "de"]}}         one of
//! {"year": {"$gte": 2000, "$lt": 2010}}   numeric range ($gt, $gte, $lt, $lte)
//! {"lang": "en", "year": {"$gte": 2000}}  both
//! ```

use serde_json::Value;

/// Errors in a filter expression.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Not JSON, or not an object.
    #[error("invalid filter: {0}")]
    Invalid(String),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Field equals a JSON value.
    Eq(Vec<String>, Value),
    /// Field equals one of the values.
    In(Vec<String>, Vec<Value>),
    /// Numeric field within bounds (`None` = unbounded).
    Range {
        /// Field path.
        field: Vec<String>,
        /// Lower bound and whether it is inclusive.
        lower: Option<(f64, bool)>,
        /// Upper bound and whether it is inclusive.
        upper: Option<(f64, bool)>,
    },
    /// All of the conditions.
    And(Vec<Filter>),
}

impl Filter {
    /// Parses the JSON form described in the module docs.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let v: Value = serde_json::from_str(text).map_err(|e| FilterError::Invalid(e.to_string()))?;
        Self::from_json(&v)
    }

    /// Builds a filter from an already parsed JSON object.
    pub fn from_json(v: &Value) -> Result<Self, FilterError> {
        let obj = v.as_object().ok_or_else(|| FilterError::Invalid("a filter must be a JSON object".into()))?;
        let mut all = Vec::new();
        for (field, cond) in obj {
            let path: Vec<String> = field.split('.').map(str::to_string).collect();
            match cond {
                Value::Object(ops) if ops.keys().all(|k| k.starts_with('$')) && !ops.is_empty() => {
                    let mut lower = None;
                    let mut upper = None;
                    for (op, arg) in ops {
                        let num = || {
                            arg.as_f64().ok_or_else(|| FilterError::Invalid(format!("{field}: {op} needs a number")))
                        };
                        match op.as_str() {
                            "$in" => {
                                let vals = arg
                                    .as_array()
                                    .ok_or_else(|| FilterError::Invalid(format!("{field}: $in needs an array")))?;
                                all.push(Filter::In(path.clone(), vals.clone()));
                            }
                            "$eq" => all.push(Filter::Eq(path.clone(), arg.clone())),
                            "$gt" => lower = Some((num()?, false)),
                            "$gte" => lower = Some((num()?, true)),
                            "$lt" => upper = Some((num()?, false)),
                            "$lte" => upper = Some((num()?, true)),
                            other => return Err(FilterError::Invalid(format!("{field}: unknown operator {other}"))),
                        }
                    }
                    if lower.is_some() || upper.is_some() {
                        all.push(Filter::Range { field: path, lower, upper });
                    }
                }
                other => all.push(Filter::Eq(path, other.clone())),
            }
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Filter::And(all) })
    }

    /// Whether `metadata` satisfies the filter.
    pub fn matches(&self, metadata: &Value) -> bool {
        match self {
            Filter::Eq(f, v) => lookup(metadata, f) == Some(v),
            Filter::In(f, vs) => lookup(metadata, f).is_some_and(|x| vs.contains(x)),
            Filter::Range { field, lower, upper } => {
                let Some(x) = lookup(metadata, field).and_then(Value::as_f64) else { return false };
                lower.is_none_or(|(b, inc)| if inc { x >= b } else { x > b })
                    && upper.is_none_or(|(b, inc)| if inc { x <= b } else { x < b })
            }
            Filter::And(fs) => fs.iter().all(|f| f.matches(metadata)),
        }
    }
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_matches() {
        let f =
            Filter::parse(r#"{"lang": "en", "year": {"$gte": 2000, "$lt": 2010}, "a.b": {"$in": [1, 2]}}"#).unwrap();
        assert!(f.matches(&json!({"lang": "en", "year": 2005, "a": {"b": 2}})));
        assert!(!f.matches(&json!({"lang": "en", "year": 2010, "a": {"b": 2}})));
        assert!(!f.matches(&json!({"lang": "de", "year": 2005, "a": {"b": 2}})));
        assert!(!f.matches(&json!({"lang": "en", "year": 2005, "a": {"b": 3}})));
        assert!(!f.matches(&json!(null)));
    }

    #[test]
    fn rejects_bad_filters() {
        assert!(Filter::parse("[1]").is_err());
        assert!(Filter::parse(r#"{"x": {"$near": 1}}"#).is_err());
        assert!(Filter::parse(r#"{"x": {"$gt": "a"}}"#).is_err());
        assert!(Filter::parse("{").is_err());
    }
}
