//! `.dockerignore` patterns, matched the way the docker CLI matches them.
//!
//! The context we send, and therefore its hash and the release name, must be
//! exactly what `docker build` would send: a file the CLI leaves out must not
//! change our hash, and a file it sends must be there for `COPY`. So this is
//! a port of Docker's own rules (`moby/patternmatcher` and its `ignorefile`
//! reader), quirks included, rather than gitignore semantics:
//!
//! - one pattern a line; `#` starts a comment line; surrounding whitespace
//!   is trimmed; a UTF-8 BOM is dropped;
//! - patterns are relative to the context root and cleaned like Go's
//!   `filepath.Clean` (`./a//b/` is `a/b`); a leading `/` is dropped;
//! - Go `filepath.Match` syntax: `*` (any run of characters but `/`), `?`
//!   (one character but `/`), `[a-z]` / `[^a-z]` classes, `\` escapes; plus
//!   `**`, any number of directories (`**/x`, `a/**/x`, `a/**`);
//! - a pattern that matches a directory matches everything below it;
//! - `!pattern` is an exception; the last pattern that matches wins;
//! - a pattern that is not valid Go glob syntax is an error (exit 2).
//!
//! The walker in [`crate::context`] uses [`Matcher::evaluate`] with the
//! parent directory's per-pattern results, as the docker CLI's archiver does,
//! and [`Matcher::may_reinclude_below`] to decide whether an excluded
//! directory must still be entered because an exception names something in
//! it.

use std::fmt;

/// Why a `.dockerignore` could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// 1-based line in the `.dockerignore` (0 when the pattern did not come
    /// from a file).
    pub line: usize,
    pub pattern: String,
    pub reason: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        write!(f, "invalid pattern {:?}: {}", self.pattern, self.reason)
    }
}

impl std::error::Error for PatternError {}

/// Reads a `.dockerignore` into patterns, as Docker's `ignorefile.ReadAll`
/// does: comments and blank lines dropped, each pattern cleaned, a leading
/// `/` removed, `!` kept in front. Returns `(line, pattern)` pairs.
pub fn read_patterns(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (invert, rest) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut pattern = if rest.is_empty() {
            String::new()
        } else {
            let cleaned = clean(rest);
            match cleaned.strip_prefix('/') {
                Some(stripped) if cleaned.len() > 1 => stripped.to_owned(),
                _ => cleaned,
            }
        };
        if invert {
            pattern.insert(0, '!');
        }
        patterns.push((index + 1, pattern));
    }
    patterns
}

/// Go's `filepath.Clean` for `/`-separated paths: collapses `//`, drops `.`
/// components, resolves `..` lexically, removes a trailing `/`.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern text, without the `!`.
    text: String,
    exclusion: bool,
    kind: Kind,
}

/// How a pattern is matched. Docker short-cuts simple patterns; the
/// short-cuts are not exactly equivalent to the general matcher (`**.txt`
/// matches `a/b.txt`), so they are kept as Docker has them.
#[derive(Debug, Clone)]
enum Kind {
    /// No wildcard: the whole path must equal the pattern.
    Exact,
    /// Literal text then a final `**`: the path starts with the text.
    Prefix(String),
    /// A leading `**` then literal text: the path ends with the text (and
    /// `**/x` also matches `x` itself).
    Suffix(String),
    /// Anything else: a token sequence matched against the whole path.
    Glob(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` not at the end (its following `/` eaten): `(.*/)?`, zero or
    /// more whole directories.
    Dirs,
    /// `**` at the end: `.*`, anything at all.
    Rest,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Pattern {
    fn compile(text: &str, exclusion: bool) -> Result<Pattern, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::new();
        // Docker's match type while scanning: exact until a wildcard shows
        // up; `**` at the very start makes it a suffix match, `**` at the
        // end of literal text a prefix match.
        #[derive(PartialEq, Clone, Copy)]
        enum State {
            Exact,
            Prefix,
            Suffix,
            Glob,
        }
        let mut state = State::Exact;
        let mut i = 0;
        while i < chars.len() {
            let at_start = i == 0;
            let ch = chars[i];
            i += 1;
            match ch {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        if state == State::Exact {
                            state = State::Prefix;
                        } else {
                            state = State::Glob;
                        }
                        tokens.push(Token::Rest);
                    } else {
                        state = State::Glob;
                        tokens.push(Token::Dirs);
                    }
                    if at_start {
                        state = State::Suffix;
                    }
                }
                '*' => {
                    state = State::Glob;
                    tokens.push(Token::Star);
                }
                '?' => {
                    state = State::Glob;
                    tokens.push(Token::One);
                }
                '\\' => match chars.get(i) {
                    Some(&next) => {
                        i += 1;
                        state = State::Glob;
                        tokens.push(Token::Literal(next));
                    }
                    None => return Err("a trailing `\\` escapes nothing".into()),
                },
                '[' => {
                    state = State::Glob;
                    let (token, next) = parse_class(&chars, i)?;
                    tokens.push(token);
                    i = next;
                }
                ']' => {
                    state = State::Glob;
                    tokens.push(Token::Literal(']'));
                }
                other => tokens.push(Token::Literal(other)),
            }
        }
        let kind = match state {
            State::Exact => Kind::Exact,
            State::Prefix => Kind::Prefix(text[..text.len() - 2].to_owned()),
            State::Suffix => Kind::Suffix(text[2..].to_owned()),
            State::Glob => Kind::Glob(tokens),
        };
        Ok(Pattern {
            text: text.to_owned(),
            exclusion,
            kind,
        })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Glob(tokens) => glob_match(tokens, path),
        }
    }
}

/// Parses a character class starting just after its `[`, with Go
/// `filepath.Match` syntax: `^` negates, `a-z` ranges, `\` escapes; an
/// empty class, a class that never closes or a dangling `-` is an error.
fn parse_class(chars: &[char], mut i: usize) -> Result<(Token, usize), String> {
    let unterminated = || "a `[` character class is never closed".to_string();
    let mut negated = false;
    if chars.get(i) == Some(&'^') {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&ch) = chars.get(i) else {
            return Err(unterminated());
        };
        if ch == ']' && !first {
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (end, next) = class_char(chars, i + 1)?;
            if end < lo {
                return Err(format!("the range `{lo}-{end}` is backwards"));
            }
            hi = end;
            i = next;
        }
        ranges.push((lo, hi));
    }
}

/// One (possibly escaped) character of a class; `-` and `]` need escaping
/// where they would be ambiguous, as in Go.
fn class_char(chars: &[char], i: usize) -> Result<(char, usize), String> {
    match chars.get(i) {
        None => Err("a `[` character class is never closed".into()),
        Some('\\') => match chars.get(i + 1) {
            Some(&c) => Ok((c, i + 2)),
            None => Err("a `[` character class is never closed".into()),
        },
        Some('-') | Some(']') => Err("a character class is empty or has a dangling `-`".into()),
        Some(&c) => Ok((c, i + 1)),
    }
}

/// Whether `tokens` match the whole of `path`. Runs the token list over the
/// set of reachable positions in the path (no backtracking blow-up).
fn glob_match(tokens: &[Token], path: &str) -> bool {
    let chars: Vec<char> = path.chars().collect();
    let n = chars.len();
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    for token in tokens {
        let mut next = vec![false; n + 1];
        let mut any = false;
        for start in 0..=n {
            if !reach[start] {
                continue;
            }
            match token {
                Token::Literal(c) => {
                    if start < n && chars[start] == *c {
                        next[start + 1] = true;
                    }
                }
                Token::One => {
                    if start < n && chars[start] != '/' {
                        next[start + 1] = true;
                    }
                }
                Token::Class { negated, ranges } => {
                    if start < n {
                        let c = chars[start];
                        let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                        if inside != *negated {
                            next[start + 1] = true;
                        }
                    }
                }
                Token::Star => {
                    next[start] = true;
                    let mut j = start;
                    while j < n && chars[j] != '/' {
                        j += 1;
                        next[j] = true;
                    }
                }
                Token::Dirs => {
                    next[start] = true;
                    for j in start..n {
                        if chars[j] == '/' {
                            next[j + 1] = true;
                        }
                    }
                }
                Token::Rest => {
                    for slot in next.iter_mut().skip(start) {
                        *slot = true;
                    }
                }
            }
        }
        for &r in &next {
            any |= r;
        }
        if !any {
            return false;
        }
        reach = next;
    }
    reach[n]
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

/// Per-pattern results for a directory, handed to its children (Docker's
/// `MatchInfo`): `results[i]` is whether pattern `i` matched the directory
/// or one of its parents.
#[derive(Debug, Clone, Default)]
pub struct MatchInfo {
    results: Vec<bool>,
}

impl Matcher {
    /// Compiles `.dockerignore` text.
    pub fn parse(text: &str) -> Result<Matcher, PatternError> {
        Matcher::from_patterns(read_patterns(text))
    }

    /// Compiles patterns as [`read_patterns`] returns them.
    pub fn from_patterns(
        patterns: impl IntoIterator<Item = (usize, String)>,
    ) -> Result<Matcher, PatternError> {
        let mut matcher = Matcher::default();
        for (line, pattern) in patterns {
            matcher.push(line, &pattern)?;
        }
        Ok(matcher)
    }

    /// Adds one pattern (`!` for an exception) at the end: it takes
    /// precedence over every earlier one.
    pub fn push(&mut self, line: usize, pattern: &str) -> Result<(), PatternError> {
        let error = |reason: String| PatternError {
            line,
            pattern: pattern.to_owned(),
            reason,
        };
        let trimmed = pattern.trim();
        if trimmed.is_empty() {
            return Ok(());
        }
        let (exclusion, body) = match trimmed.strip_prefix('!') {
            Some("") => return Err(error("`!` must be followed by a pattern".into())),
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let body = clean(body);
        let compiled = Pattern::compile(&body, exclusion).map_err(error)?;
        self.patterns.push(compiled);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether there is any `!` exception.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative, `/`-separated) is excluded, checking its
    /// parent directories too (Docker's `MatchesOrParentMatches`).
    pub fn matches(&self, path: &str) -> bool {
        self.evaluate(path, None).0
    }

    /// Whether `path` is excluded, given its parent directory's results
    /// (`None` for an entry at the root, or when they are not known: then
    /// the parents are checked). Returns the results to pass to the
    /// entries of `path` if it is a directory.
    pub fn evaluate(&self, path: &str, parent: Option<&MatchInfo>) -> (bool, MatchInfo) {
        let parent = parent.filter(|p| p.results.len() == self.patterns.len());
        let mut excluded = false;
        let mut results = vec![false; self.patterns.len()];
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut matched = parent.is_some_and(|p| p.results[i]);
            if !matched {
                // An exception only matters once something excluded the
                // path, an exclusion only while it is not excluded.
                if pattern.exclusion != excluded {
                    continue;
                }
                matched = pattern.matches(path);
                if !matched && parent.is_none() {
                    matched = ancestors(path).any(|dir| pattern.matches(dir));
                }
            }
            results[i] = matched;
            if matched {
                excluded = !pattern.exclusion;
            }
        }
        (excluded, MatchInfo { results })
    }

    /// Whether an excluded directory must still be walked because an
    /// exception pattern starts with it (`!dir/keep.txt` under `dir`).
    /// Docker compares the pattern text literally, so `!**/keep.txt` does
    /// not reach into an excluded directory.
    pub fn may_reinclude_below(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", p.text).starts_with(&dir_slash))
    }
}

/// `a/b/c` → `a`, `a/b` (the proper ancestors, outermost first).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(text: &str) -> Matcher {
        Matcher::parse(text).unwrap()
    }

    #[test]
    fn reads_patterns_like_docker() {
        let text =
            "\u{feff}# comment\n\n  node_modules  \n./a//b/\n/abs\n! keep \n!/x/./y\n#!not\n/\n";
        let patterns: Vec<String> = read_patterns(text).into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            patterns,
            ["node_modules", "a/b", "abs", "!keep", "!x/y", "/"]
        );
        assert_eq!(read_patterns("a\n#c\nb")[1].0, 3);
    }

    #[test]
    fn clean_is_go_filepath_clean() {
        for (input, want) in [
            ("a/b", "a/b"),
            ("./a", "a"),
            ("a//b/", "a/b"),
            ("a/./b/../c", "a/c"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("/", "/"),
            (".", "."),
            ("a/..", "."),
        ] {
            assert_eq!(clean(input), want, "{input}");
        }
    }

    #[test]
    fn pattern_table() {
        // (pattern, path, matches) — the pattern alone, parents checked.
        let table: &[(&str, &str, bool)] = &[
            ("foo", "foo", true),
            ("foo", "foo/bar", true),
            ("foo", "a/foo", false),
            ("foo", "foobar", false),
            ("*.md", "README.md", true),
            ("*.md", "docs/a.md", false),
            ("*/*.md", "docs/a.md", true),
            ("*/*.md", "docs/x/a.md", false),
            ("**/*.md", "a.md", true),
            ("**/*.md", "docs/x/a.md", true),
            ("**/*.md", "docs/x/a.mdx", false),
            ("docs/**", "docs/a", true),
            ("docs/**", "docs/x/y", true),
            ("docs/**", "docs", false),
            ("docs/**", "docsx/a", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/xb", false),
            ("**", "anything/at/all", true),
            ("**/node_modules", "node_modules", true),
            ("**/node_modules", "web/node_modules/x/y.js", true),
            ("**/node_modules", "web/my_node_modules", false),
            ("**.txt", "a/b.txt", true), // Docker's suffix short-cut
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
            ("?", "/", false),
            ("[a-c].txt", "b.txt", true),
            ("[a-c].txt", "d.txt", false),
            ("[^a-c].txt", "d.txt", true),
            ("[^a-c].txt", "a.txt", false),
            ("[\\]]", "]", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("a.b", "axb", false),
            ("a+(b)", "a+(b)", true),
            ("*", "a", true),
            ("*", "a/b", true), // via the parent `a`
            (".git", ".git/HEAD", true),
            ("./build/", "build/out.o", true),
        ];
        for &(pattern, path, want) in table {
            let m = matcher(pattern);
            assert_eq!(m.matches(path), want, "pattern {pattern:?} on {path:?}");
        }
    }

    #[test]
    fn exceptions_last_match_wins() {
        let m = matcher("*.md\n!README.md\n");
        assert!(m.matches("CHANGES.md"));
        assert!(!m.matches("README.md"));

        let m = matcher("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(!m.matches("README.md"));
        assert!(m.matches("README-secret.md"));

        // An exception before the exclusion it would undo does nothing.
        let m = matcher("!keep.txt\n*.txt\n");
        assert!(m.matches("keep.txt"));
    }

    #[test]
    fn excluded_directories_and_exceptions_below_them() {
        let m = matcher("build\n!build/keep\n");
        assert!(m.matches("build"));
        assert!(m.matches("build/out.o"));
        assert!(!m.matches("build/keep"));
        assert!(!m.matches("build/keep/inner.txt"));
        assert!(m.may_reinclude_below("build"));
        assert!(!m.may_reinclude_below("other"));
        assert!(!m.may_reinclude_below("buil"));

        // Docker compares exception text literally when deciding whether to
        // walk an excluded directory.
        let m = matcher("vendor\n!**/keep\n");
        assert!(!m.may_reinclude_below("vendor"));
        assert!(!matcher("vendor").has_exceptions());
    }

    #[test]
    fn parent_results_agree_with_parent_checks() {
        let m = matcher("a\n!a/b\na/b/c*\n!**/keep\n");
        let (a, info_a) = m.evaluate("a", None);
        assert!(a);
        let (ab, info_ab) = m.evaluate("a/b", Some(&info_a));
        assert!(!ab);
        let (abc, _) = m.evaluate("a/b/c1", Some(&info_ab));
        assert!(abc);
        assert_eq!(m.matches("a/b/c1"), abc);
        let (keep, _) = m.evaluate("a/b/keep", Some(&info_ab));
        assert!(!keep);
        let (other, _) = m.evaluate("a/x", Some(&info_a));
        assert!(other);
    }

    #[test]
    fn bad_patterns_are_errors_with_their_line() {
        for bad in ["[abc", "[]", "a\\", "[z-a]", "!"] {
            let err = Matcher::parse(&format!("ok\n{bad}\n")).unwrap_err();
            assert_eq!(err.line, 2, "{bad}: {err}");
        }
        let err = Matcher::parse("# c\n[x").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line 2: invalid pattern \"[x\""),
            "{err}"
        );
    }
}
