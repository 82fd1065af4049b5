//! A tiny JSON writer for the one report the program prints, so the crate
//! needs no serializer. Objects keep the order their fields were added in,
//! which makes the report readable and stable for diffs.

use std::fmt::{self, Write};

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(u64),
    /// Written with 3 decimals (enough for milliseconds and seconds);
    /// non-finite numbers are written as `null`, which JSON can hold.
    Float(f64),
    Str(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// An object from `(key, value)` pairs, in order.
    pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(n)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Float(x)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(option: Option<T>) -> Value {
        option.map_or(Value::Null, Into::into)
    }
}

/// Compact JSON, on one line.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) if x.is_finite() => {
                // Avoid "-0.000", which is valid but puzzling.
                let x = if x.abs() < 0.0005 { 0.0 } else { *x };
                write!(f, "{x:.3}")
            }
            Value::Float(_) => f.write_str("null"),
            Value::Str(s) => write_str(f, s),
            Value::Array(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Value::Object(fields) => {
                f.write_char('{')?;
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_str(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_char('}')
            }
        }
    }
}

/// A JSON string literal, escaping what RFC 8259 requires.
fn write_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c < ' ' || c == '\u{7f}' => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_compact_json() {
        let value = Value::object([
            ("n", Value::from(3u64)),
            ("x", Value::from(1.23456)),
            ("neg", Value::from(-0.0001)),
            ("nan", Value::from(f64::NAN)),
            ("none", Value::from(None::<u64>)),
            ("s", Value::from("a\"b\\c\nd\u{1}é")),
            (
                "list",
                Value::Array(vec![Value::Bool(true), Value::Object(vec![])]),
            ),
        ]);
        assert_eq!(
            value.to_string(),
            r#"{"n":3,"x":1.235,"neg":0.000,"nan":null,"none":null,"s":"a\"b\\c\nd\u0001é","list":[true,{}]}"#
        );
    }
}
