//! Reading and writing the JSON Lines record stream.
//!
//! Input is read whole and checked before a tool acts on any of it: a
//! deploy step that has started containers or removed them must not then
//! discover that line 7 was garbage. Every error names its line. A last line
//! without its `\n` is treated as truncated (the upstream step was cut short)
//! rather than guessed at.
//!
//! Output is one compact object per line, flushed per line so the next tool
//! sees each record as soon as it is final. Records a tool does not act on are
//! written back byte for byte.

use std::io::{self, IsTerminal, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::record::{self, ContainerRecord, ImageRecord};
use crate::{Error, Result};

/// One input record: its line number, its text, and the parsed object.
#[derive(Debug, Clone)]
pub struct Record {
    /// 1-based line number in the input.
    pub line: usize,
    /// The line as it came, without its newline; written back unchanged
    /// when the tool does not act on the record.
    pub raw: String,
    /// The parsed object; always has a string `"type"`.
    pub object: Map<String, Value>,
}

impl Record {
    /// The record's `"type"`.
    pub fn kind(&self) -> &str {
        self.object
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Whether this is a `container` record.
    pub fn is_container(&self) -> bool {
        self.kind() == record::kind::CONTAINER
    }

    /// Whether this is an `image` record.
    pub fn is_image(&self) -> bool {
        self.kind() == record::kind::IMAGE
    }

    /// The record as a `container`, or an input error naming the line.
    pub fn container(&self) -> Result<ContainerRecord> {
        self.typed(record::kind::CONTAINER)
    }

    /// The record as an `image`, or an input error naming the line.
    pub fn image(&self) -> Result<ImageRecord> {
        self.typed(record::kind::IMAGE)
    }

    fn typed<T: DeserializeOwned>(&self, kind: &str) -> Result<T> {
        if self.kind() != kind {
            return Err(Error::input_at(
                self.line,
                format!("expected a `{kind}` record, got `{}`", self.kind()),
            ));
        }
        let mut fields = self.object.clone();
        fields.shift_remove("type");
        serde_json::from_value(Value::Object(fields))
            .map_err(|e| Error::input_at(self.line, format!("invalid `{kind}` record: {e}")))
    }
}

/// Reads standard input whole. A terminal on stdin is an input error: the
/// tools read records from a pipe or a file, never from a person typing.
pub fn read_stdin() -> Result<Vec<Record>> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return Err(Error::input(
            "standard input is a terminal; pipe records in (e.g. `zdd-build … | zdd-scale …`) or redirect a file",
        ));
    }
    read_records(stdin.lock())
}

/// Reads and checks every line of `input`. Blank lines are skipped.
pub fn read_records(mut input: impl Read) -> Result<Vec<Record>> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut rest: &[u8] = &bytes;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, terminated) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                (line, true)
            }
            None => {
                let line = rest;
                rest = &[];
                (line, false)
            }
        };
        let text = std::str::from_utf8(line)
            .map_err(|e| Error::input_at(line_no, format!("not UTF-8 text: {e}")))?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.trim().is_empty() {
            continue;
        }
        if !terminated {
            return Err(Error::input_at(
                line_no,
                "truncated record (the last line has no newline; was the previous step cut short?)",
            ));
        }
        records.push(parse_line(line_no, text)?);
    }
    Ok(records)
}

fn parse_line(line: usize, text: &str) -> Result<Record> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::input_at(line, format!("not a JSON record: {e}")))?;
    let Value::Object(object) = value else {
        return Err(Error::input_at(line, "a record must be a JSON object"));
    };
    match object.get("type") {
        Some(Value::String(kind)) => {
            if let Some(now) = record::respelled(kind) {
                return Err(Error::input_at(
                    line,
                    format!("record type `{kind}` is spelled `{now}` now (zdd's record types are snake_case; docs/protocol.md)"),
                ));
            }
        }
        Some(_) => return Err(Error::input_at(line, "`type` must be a string")),
        None => return Err(Error::input_at(line, "record has no `type` field")),
    }
    Ok(Record {
        line,
        raw: text.to_owned(),
        object,
    })
}

/// The container records of `records`, each paired with its input record,
/// all checked up front.
pub fn containers(records: &[Record]) -> Result<Vec<(usize, ContainerRecord)>> {
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_container())
        .map(|(i, r)| Ok((i, r.container()?)))
        .collect()
}

/// Like [`containers`], but an input without any container record is an
/// input error; `producer` names the step whose output was expected.
pub fn require_containers(
    records: &[Record],
    producer: &str,
) -> Result<Vec<(usize, ContainerRecord)>> {
    let containers = containers(records)?;
    if containers.is_empty() {
        return Err(match records.first() {
            None => Error::input(format!(
                "no records; expected the container records written by {producer}"
            )),
            Some(r) => Error::input_at(
                r.line,
                format!(
                    "expected `container` records (from {producer}), found `{}` and none",
                    r.kind()
                ),
            ),
        });
    }
    Ok(containers)
}

/// Writes records to a stream, one flushed line each.
pub struct RecordWriter<W: Write> {
    out: W,
}

impl RecordWriter<io::Stdout> {
    /// A writer on standard output.
    pub fn stdout() -> Self {
        RecordWriter { out: io::stdout() }
    }
}

impl<W: Write> RecordWriter<W> {
    pub fn new(out: W) -> Self {
        RecordWriter { out }
    }

    /// Writes an input record back exactly as it came.
    pub fn pass(&mut self, record: &Record) -> Result<()> {
        self.line(record.raw.as_bytes())
    }

    /// Writes `body` as a record of type `kind`.
    pub fn write<T: Serialize>(&mut self, kind: &str, body: &T) -> Result<()> {
        let object = record::to_object(kind, body);
        let text = serde_json::to_string(&object).expect("a JSON object always serializes");
        self.line(text.as_bytes())
    }

    /// Writes `records` in order, replacing those whose index is in
    /// `updated` with the updated container record and passing the rest
    /// through unchanged.
    pub fn containers_updated(
        &mut self,
        records: &[Record],
        updated: &std::collections::HashMap<usize, ContainerRecord>,
    ) -> Result<()> {
        for (index, record) in records.iter().enumerate() {
            match updated.get(&index) {
                Some(container) => self.container(container)?,
                None => self.pass(record)?,
            }
        }
        Ok(())
    }

    /// Writes a `container` record.
    pub fn container(&mut self, body: &ContainerRecord) -> Result<()> {
        self.write(record::kind::CONTAINER, body)
    }

    /// Writes an `image` record.
    pub fn image(&mut self, body: &ImageRecord) -> Result<()> {
        self.write(record::kind::IMAGE, body)
    }

    fn line(&mut self, text: &[u8]) -> Result<()> {
        self.out.write_all(text)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }

    /// The underlying stream (for tests).
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &str) -> Result<Vec<Record>> {
        read_records(input.as_bytes())
    }

    fn input_error_line(input: &str) -> Option<usize> {
        match read(input).unwrap_err() {
            Error::Input { line, .. } => line,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn an_old_spelling_of_a_record_type_is_an_input_error_naming_the_new_one() {
        let err =
            read("{\"type\":\"x\"}\n{\"type\":\"asset-release\",\"id\":\"r\"}\n").unwrap_err();
        assert!(matches!(err, Error::Input { line: Some(2), .. }), "{err:?}");
        assert!(err.to_string().contains("`asset_release`"), "{err}");
    }

    #[test]
    fn reads_records_and_keeps_their_text() {
        let records = read("{\"type\":\"x\",  \"a\":1.50}\n\n{\"type\":\"container\",\"id\":\"c\",\"service\":\"s\"}\n").unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].raw, "{\"type\":\"x\",  \"a\":1.50}");
        assert_eq!(records[1].line, 3);
        assert_eq!(records[1].container().unwrap().id, "c");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(input_error_line("{\"type\":\"x\"}\nnot json\n"), Some(2));
        assert_eq!(input_error_line("{\"type\":\"x\"}\n[1]\n"), Some(2));
        assert_eq!(input_error_line("{\"kind\":\"x\"}\n"), Some(1));
        assert_eq!(input_error_line("{\"type\":3}\n"), Some(1));
    }

    #[test]
    fn a_last_line_without_newline_is_truncated() {
        let err = read("{\"type\":\"x\"}\n{\"type\":\"container\",\"id\"").unwrap_err();
        assert!(err.to_string().contains("line 2: truncated"), "{err}");
        // Even when what is there happens to parse.
        let err = read("{\"type\":\"x\"}").unwrap_err();
        assert!(err.to_string().contains("line 1: truncated"), "{err}");
    }

    #[test]
    fn a_missing_field_names_the_field_and_line() {
        let records = read("{\"type\":\"container\",\"service\":\"s\"}\n").unwrap();
        let err = records[0].container().unwrap_err();
        assert_eq!(
            err.to_string(),
            "input line 1: invalid `container` record: missing field `id`"
        );
        assert_eq!(err.exit_code(), crate::exit::USAGE);
    }

    #[test]
    fn pass_writes_the_original_text() {
        let records = read("{\"type\":\"x\",  \"a\":1.50}\n").unwrap();
        let mut writer = RecordWriter::new(Vec::new());
        writer.pass(&records[0]).unwrap();
        assert_eq!(writer.into_inner(), b"{\"type\":\"x\",  \"a\":1.50}\n");
    }
}
