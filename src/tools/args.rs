//! Reads a tool call's JSON input field by field, so every complaint about a
//! missing or mistyped field names the field the model got wrong.

use serde_json::{Map, Value};

use super::ToolOutput;

/// Why a tool's input was refused; becomes an `is_error` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidInput(pub String);

impl From<InvalidInput> for ToolOutput {
    fn from(value: InvalidInput) -> Self {
        ToolOutput::error(format!("Invalid input: {}", value.0))
    }
}

/// A borrowed view of the input object.
pub(crate) struct Args<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    pub(crate) fn new(input: &'a Value) -> Result<Self, InvalidInput> {
        match input {
            Value::Object(map) => Ok(Self { map }),
            other => Err(InvalidInput(format!(
                "the input must be a JSON object, got {}",
                kind(other)
            ))),
        }
    }

    /// Absent and `null` are treated alike: models send both for "not given".
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn string(&self, key: &str) -> Result<&'a str, InvalidInput> {
        self.opt_string(key)?
            .ok_or_else(|| InvalidInput(format!("missing required field `{key}` (a string)")))
    }

    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<&'a str>, InvalidInput> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }

    /// Accepts `5` and `"5"`: models sometimes quote numbers.
    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>, InvalidInput> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                wrong_type(key, "a non-negative integer", &Value::Number(n.clone()))
            }),
            Some(Value::String(s)) => {
                s.trim().parse::<u64>().map(Some).map_err(|_| {
                    wrong_type(key, "a non-negative integer", &Value::String(s.clone()))
                })
            }
            Some(other) => Err(wrong_type(key, "a non-negative integer", other)),
        }
    }

    /// Accepts `true` and `"true"`, for the same reason as numbers.
    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, InvalidInput> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(other) => Err(wrong_type(key, "a boolean", other)),
        }
    }
}

fn wrong_type(key: &str, expected: &str, got: &Value) -> InvalidInput {
    InvalidInput(format!(
        "field `{key}` must be {expected}, got {}",
        kind(got)
    ))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_missing_or_mistyped_field() {
        let input = json!({"a": 5, "b": "7", "c": "true", "d": [1]});
        let args = Args::new(&input).unwrap();
        assert!(args.string("x").unwrap_err().0.contains("`x`"));
        assert!(
            args.string("a")
                .unwrap_err()
                .0
                .contains("`a` must be a string")
        );
        assert_eq!(args.opt_u64("a").unwrap(), Some(5));
        assert_eq!(args.opt_u64("b").unwrap(), Some(7));
        assert_eq!(args.opt_bool("c").unwrap(), Some(true));
        assert!(
            args.opt_bool("d")
                .unwrap_err()
                .0
                .contains("`d` must be a boolean")
        );
        assert!(Args::new(&json!("str")).is_err());
    }
}
