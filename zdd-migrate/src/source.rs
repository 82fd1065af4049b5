//! The migrations folder: which files are migrations, in which order, and
//! what their headers say.
//!
//! A migration is `VERSION_NAME.sql` (`0007_add_email.sql`); the version is
//! the number before the first `_` and orders the migrations numerically,
//! so `0010` runs after `0009` and timestamps work as versions too. An
//! expand migration may have a down file beside it, `VERSION_NAME.down.sql`.
//! Other files (a README) are ignored; a `.sql` file that does not follow
//! the pattern is an error, because a misnamed migration silently skipped
//! is worse than a refusal.
//!
//! The header is the comment lines at the top of the file. Lines starting
//! with `-- zdd:` are directives:
//!
//! ```sql
//! -- zdd: phase=expand
//! -- zdd: transaction=off
//! -- zdd: allow=index-not-concurrent reason="the table is created empty in 0006"
//! ```
//!
//! The phase decides which step runs the migration (`up` runs `expand` and
//! `data`, `contract` runs `contract`), so it is required: guessing it would
//! let a destructive migration run while the old release still serves.
//! A directive below the first statement is an error rather than silently
//! ignored. Problems in a header are collected per file, so `lint` can
//! report them all; every other command refuses to start on any of them.
//!
//! The checksum is sha256 over the text with line endings normalised to LF,
//! so a checkout with `core.autocrlf` does not look like a changed file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zdd_core::{Error, Result};

use crate::rule::Rule;

/// Which step of a rollout a migration belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Additive changes the old code tolerates (run by `up`, before the
    /// new release starts).
    Expand,
    /// Data changes (backfills) the old and new code both tolerate (run by
    /// `up`).
    Data,
    /// Removals only the new code tolerates (run by `contract`, after the
    /// old release is retired).
    Contract,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Expand => "expand",
            Phase::Data => "data",
            Phase::Contract => "contract",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        match text {
            "expand" => Some(Phase::Expand),
            "data" => Some(Phase::Data),
            "contract" => Some(Phase::Contract),
            _ => None,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `-- zdd: allow=RULE reason="…"`: one lint rule silenced for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub rule: Rule,
    pub reason: String,
    /// 1-based line of the directive.
    pub line: usize,
}

/// Something wrong with a file's header, found while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderProblem {
    pub line: usize,
    pub message: String,
}

/// A down file: how to take an expand migration back.
#[derive(Debug, Clone)]
pub struct DownFile {
    pub path: PathBuf,
    pub text: String,
    pub transaction: bool,
    pub problems: Vec<HeaderProblem>,
}

/// One migration file, read and checked.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub path: PathBuf,
    /// The text with line endings normalised to LF (what runs and what the
    /// checksum covers).
    pub text: String,
    /// `sha256:` + 64 hex digits of `text`.
    pub checksum: String,
    /// The header's phase; `expand` when the header names none (which is a
    /// problem in `problems`).
    pub phase: Phase,
    /// Whether the migration runs inside a transaction (`transaction=off`
    /// turns it off).
    pub transaction: bool,
    pub allows: Vec<Allow>,
    pub down: Option<DownFile>,
    pub problems: Vec<HeaderProblem>,
}

impl Migration {
    /// `0007_add_email`, as people name it.
    pub fn label(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{}_{}", self.version, self.name))
    }

    /// The file's path as given on the command line.
    pub fn file(&self) -> String {
        self.path.display().to_string()
    }

    /// The allow line silencing `rule`, if any.
    pub fn allow(&self, rule: Rule) -> Option<&Allow> {
        self.allows.iter().find(|a| a.rule == rule)
    }

    /// Every header problem of the file and of its down file.
    pub fn all_problems(&self) -> impl Iterator<Item = (&Path, &HeaderProblem)> {
        let own = self.problems.iter().map(|p| (self.path.as_path(), p));
        let down = self
            .down
            .iter()
            .flat_map(|d| d.problems.iter().map(|p| (d.path.as_path(), p)));
        own.chain(down)
    }
}

/// Reads every migration in `dir`, ordered by version.
///
/// Errors (exit 2) for what makes the folder unusable as a whole: it does
/// not exist, two files share a version, a `.sql` file is misnamed, a down
/// file has no migration. Header problems are kept per file.
pub fn load(dir: &Path) -> Result<Vec<Migration>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Usage(format!(
            "cannot read the migrations folder `{}`: {e} (use --dir)",
            dir.display()
        ))
    })?;
    let mut ups = Vec::new();
    let mut downs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            Error::Usage(format!("cannot read the folder `{}`: {e}", dir.display()))
        })?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let Some(stem) = file_name.strip_suffix(".sql") else {
            continue;
        };
        let path = dir.join(file_name);
        if !path.is_file() {
            continue;
        }
        let (stem, is_down) = match stem.strip_suffix(".down") {
            Some(stem) => (stem, true),
            None => (stem, false),
        };
        let (version, name) = parse_name(stem).ok_or_else(|| {
            Error::Usage(format!(
                "`{}` is not named like a migration: expected VERSION_NAME.sql, e.g. 0007_add_email.sql (or .down.sql)",
                path.display()
            ))
        })?;
        if is_down {
            downs.push((version, name, path));
        } else {
            ups.push((version, name, path));
        }
    }
    ups.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
    for pair in ups.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(Error::Usage(format!(
                "`{}` and `{}` have the same version {}",
                pair[0].2.display(),
                pair[1].2.display(),
                pair[0].0
            )));
        }
    }

    let mut migrations = Vec::with_capacity(ups.len());
    for (version, name, path) in ups {
        migrations.push(read_migration(version, name, path)?);
    }
    for (version, name, path) in downs {
        let Ok(index) = migrations.binary_search_by_key(&version, |m| m.version) else {
            return Err(Error::Usage(format!(
                "down file `{}` has no migration with version {version}",
                path.display()
            )));
        };
        let migration = &mut migrations[index];
        if migration.name != name {
            return Err(Error::Usage(format!(
                "down file `{}` does not match `{}` (the names differ)",
                path.display(),
                migration.path.display()
            )));
        }
        let text = read_text(&path)?;
        let header = parse_header(&text, Kind::Down);
        let mut problems = header.problems;
        if migration.phase != Phase::Expand {
            problems.push(HeaderProblem {
                line: 1,
                message: format!(
                    "only expand migrations can be taken back, and {} is a {} migration",
                    migration.label(),
                    migration.phase
                ),
            });
        }
        migration.down = Some(DownFile {
            path,
            text,
            transaction: header.transaction,
            problems,
        });
    }
    Ok(migrations)
}

/// The first header problem of any migration, as a usage error: commands
/// other than `lint` refuse to start on a folder with one.
pub fn require_valid(migrations: &[Migration]) -> Result<()> {
    let problems: Vec<String> = migrations
        .iter()
        .flat_map(Migration::all_problems)
        .map(|(path, p)| format!("{} line {}: {}", path.display(), p.line, p.message))
        .collect();
    match problems.as_slice() {
        [] => Ok(()),
        [one] => Err(Error::Usage(format!("{one} (see `zdd-migrate lint`)"))),
        [first, rest @ ..] => Err(Error::Usage(format!(
            "{first} (and {} more header problem(s); see `zdd-migrate lint`)",
            rest.len()
        ))),
    }
}

/// `0007_add_email` → (7, "add_email").
fn parse_name(stem: &str) -> Option<(i64, String)> {
    let (digits, name) = stem.split_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    let version = digits.parse::<i64>().ok()?;
    Some((version, name.to_owned()))
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Usage(format!("cannot read `{}`: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Usage(format!("`{}` is not UTF-8 text", path.display())))?;
    Ok(normalise_newlines(&text))
}

fn read_migration(version: i64, name: String, path: PathBuf) -> Result<Migration> {
    let text = read_text(&path)?;
    let checksum = checksum(&text);
    let header = parse_header(&text, Kind::Up);
    let mut problems = header.problems;
    let given = header.phase_given;
    let phase = header.phase.unwrap_or_else(|| {
        if given {
            return Phase::Expand;
        }
        problems.push(HeaderProblem {
            line: 1,
            message: "no phase: start the file with `-- zdd: phase=expand` (or data, contract)"
                .into(),
        });
        Phase::Expand
    });
    Ok(Migration {
        version,
        name,
        path,
        text,
        checksum,
        phase,
        transaction: header.transaction,
        allows: header.allows,
        down: None,
        problems,
    })
}

/// CRLF and lone CR become LF.
pub fn normalise_newlines(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_owned();
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// `sha256:` + hex of the LF-normalised text.
pub fn checksum(text: &str) -> String {
    let digest = Sha256::digest(normalise_newlines(text).as_bytes());
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Up,
    Down,
}

#[derive(Debug, Default)]
struct Header {
    phase: Option<Phase>,
    /// A phase directive was there, valid or not.
    phase_given: bool,
    transaction: bool,
    allows: Vec<Allow>,
    problems: Vec<HeaderProblem>,
}

const PREFIX: &str = "-- zdd:";

fn parse_header(text: &str, kind: Kind) -> Header {
    let mut header = Header {
        transaction: true,
        ..Default::default()
    };
    let mut in_header = true;
    let mut transaction_seen = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        let directive = trimmed.strip_prefix(PREFIX);
        if in_header && !(trimmed.is_empty() || trimmed.starts_with("--")) {
            in_header = false;
        }
        let Some(directive) = directive else {
            continue;
        };
        let mut problem = |message: String| {
            header.problems.push(HeaderProblem {
                line: number,
                message,
            })
        };
        if !in_header {
            problem(
                "a `-- zdd:` directive below the first statement; move it to the header".into(),
            );
            continue;
        }
        let pairs = match directive_pairs(directive) {
            Ok(pairs) => pairs,
            Err(message) => {
                problem(message);
                continue;
            }
        };
        let mut allow: Option<String> = None;
        let mut reason: Option<String> = None;
        for (key, value) in pairs {
            match (key.as_str(), kind) {
                ("phase", Kind::Up) if header.phase_given => problem("phase given twice".into()),
                ("phase", Kind::Up) => {
                    header.phase_given = true;
                    match Phase::parse(&value) {
                        Some(phase) => header.phase = Some(phase),
                        None => problem(format!(
                            "unknown phase `{value}` (use expand, data or contract)"
                        )),
                    }
                }
                ("transaction", _) => match value.as_str() {
                    _ if transaction_seen => problem("transaction given twice".into()),
                    "on" => {
                        transaction_seen = true;
                        header.transaction = true
                    }
                    "off" => {
                        transaction_seen = true;
                        header.transaction = false
                    }
                    other => problem(format!("transaction must be `on` or `off`, not `{other}`")),
                },
                ("allow", Kind::Up) if allow.is_none() => allow = Some(value),
                ("allow", Kind::Up) => problem("one `allow` per line".into()),
                ("reason", Kind::Up) => reason = Some(value),
                (key @ ("phase" | "allow" | "reason"), Kind::Down) => problem(format!(
                    "`{key}` does not belong in a down file (only `transaction`)"
                )),
                (other, _) => problem(format!(
                    "unknown directive `{other}` (use phase, transaction, allow with reason)"
                )),
            }
        }
        match (allow, reason) {
            (Some(rule), Some(reason)) if !reason.trim().is_empty() => match Rule::parse(&rule) {
                Some(rule) if rule.allowable() => header.allows.push(Allow {
                    rule,
                    reason,
                    line: number,
                }),
                Some(rule) => problem(format!("rule `{rule}` cannot be allowed")),
                None => problem(format!(
                    "unknown rule `{rule}` (rules: {})",
                    Rule::allowable_ids().join(", ")
                )),
            },
            (Some(rule), _) => problem(format!(
                "`allow={rule}` needs a reason on the same line: reason=\"…\""
            )),
            (None, Some(_)) => problem("`reason` without `allow`".into()),
            (None, None) => {}
        }
    }
    header
}

/// `phase=expand reason="a b"` → [("phase", "expand"), ("reason", "a b")].
fn directive_pairs(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("expected `key=value`, found `{key}`"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("unterminated quoted value for `{key}`"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if value.is_empty() {
            return Err(format!("`{key}` has no value"));
        }
        pairs.push((key, value));
    }
    if pairs.is_empty() {
        return Err("an empty `-- zdd:` directive".into());
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_version_and_name() {
        assert_eq!(parse_name("0007_add_email"), Some((7, "add_email".into())));
        assert_eq!(
            parse_name("20240101120000_x_y"),
            Some((20240101120000, "x_y".into()))
        );
        assert_eq!(parse_name("add_email"), None);
        assert_eq!(parse_name("0007"), None);
        assert_eq!(parse_name("0007_"), None);
        assert_eq!(parse_name("v7_x"), None);
    }

    #[test]
    fn checksum_ignores_line_endings() {
        assert_eq!(checksum("a\nb\n"), checksum("a\r\nb\r\n"));
        assert_eq!(checksum("a\nb\n"), checksum("a\rb\r"));
        assert_ne!(checksum("a\nb\n"), checksum("a\nb"));
        assert_eq!(
            checksum(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn header_directives() {
        let header = parse_header(
            "-- zdd: phase=contract\n-- zdd: transaction=off\n-- plain comment\n\n-- zdd: allow=drop-table reason=\"gone since \\\"v3\\\"\"\nDROP TABLE x;\n",
            Kind::Up,
        );
        assert!(header.problems.is_empty(), "{:?}", header.problems);
        assert_eq!(header.phase, Some(Phase::Contract));
        assert!(!header.transaction);
        assert_eq!(header.allows.len(), 1);
        assert_eq!(header.allows[0].rule, Rule::DropTable);
        assert_eq!(header.allows[0].reason, "gone since \"v3\"");
        assert_eq!(header.allows[0].line, 5);
    }

    #[test]
    fn header_problems_name_their_line() {
        let problems = |text: &str| -> Vec<(usize, String)> {
            parse_header(text, Kind::Up)
                .problems
                .into_iter()
                .map(|p| (p.line, p.message))
                .collect()
        };
        let p = problems("-- zdd: phase=later\n");
        assert_eq!(p[0].0, 1);
        assert!(p[0].1.contains("unknown phase"), "{p:?}");
        let p = problems("-- zdd: phase=expand\n-- zdd: allow=drop-table\n");
        assert!(p[0].1.contains("needs a reason"), "{p:?}");
        let p = problems("-- zdd: phase=expand\n-- zdd: allow=nonsense reason=\"x\"\n");
        assert!(p[0].1.contains("unknown rule"), "{p:?}");
        let p = problems("-- zdd: phase=expand\nSELECT 1;\n-- zdd: transaction=off\n");
        assert_eq!(p[0].0, 3);
        assert!(p[0].1.contains("below the first statement"), "{p:?}");
        let p = problems("-- zdd: colour=blue\n");
        assert!(p[0].1.contains("unknown directive"), "{p:?}");
        let p = problems("-- zdd: reason=\"unterminated\n");
        assert!(p[0].1.contains("unterminated"), "{p:?}");
        assert!(
            parse_header("-- zdd: phase=expand\n", Kind::Down).problems[0]
                .message
                .contains("does not belong")
        );
    }
}
