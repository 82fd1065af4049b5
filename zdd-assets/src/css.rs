//! Finding the references in CSS: `url(…)` (quoted or not), `@import
//! "…"`, and the strings of `image-set(…)`.
//!
//! A small tokenizer rather than a regular expression, because the
//! difference matters: a `url(` inside a comment or a string is not a
//! reference, `local("Font")` in a `@font-face` is not a file, and
//! `@charset "UTF-8"` is a string that names nothing. Only the span of the
//! URL text is reported, so the caller can rewrite it in place and leave
//! every other byte of the stylesheet as it was.

use crate::refs::{Found, Syntax};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Function {
    ImageSet,
    Other,
}

/// The references in the stylesheet `text`; spans are offsets into `text`
/// plus `offset` (for CSS inside an HTML file).
pub fn scan(text: &str, offset: usize, found: &mut Vec<Found>) {
    let b = text.as_bytes();
    let mut i = 0;
    let mut functions: Vec<Function> = Vec::new();
    let mut import_pending = false;
    let mut push = |start: usize, end: usize, what: &'static str| {
        let (start, end) = trim(b, start, end);
        if start < end {
            found.push(Found {
                start: start + offset,
                end: end + offset,
                syntax: Syntax::Css,
                what,
                element: None,
            });
        }
    };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = find(b, i + 2, b"*/").map_or(b.len(), |end| end + 2);
            }
            quote @ (b'"' | b'\'') => {
                let (content_end, next) = string_end(b, i + 1, quote);
                if import_pending {
                    push(i + 1, content_end, "@import");
                } else if functions.last() == Some(&Function::ImageSet) {
                    push(i + 1, content_end, "image-set()");
                }
                import_pending = false;
                i = next;
            }
            b'\\' => i += 2,
            b'@' => {
                let (name_end, name) = ident(b, i + 1);
                if name.eq_ignore_ascii_case(b"import") {
                    import_pending = true;
                }
                i = name_end.max(i + 1);
            }
            c if is_ident_start(c) => {
                let (end, name) = ident(b, i);
                i = end;
                if b.get(i) != Some(&b'(') {
                    continue;
                }
                if name.eq_ignore_ascii_case(b"url") {
                    i = url_function(b, i + 1, &mut push);
                    import_pending = false;
                } else {
                    let lower = name.to_ascii_lowercase();
                    functions.push(if lower.ends_with(b"image-set") {
                        Function::ImageSet
                    } else {
                        Function::Other
                    });
                    i += 1;
                }
            }
            b'(' => {
                functions.push(Function::Other);
                i += 1;
            }
            b')' => {
                functions.pop();
                i += 1;
            }
            b';' | b'{' | b'}' => {
                import_pending = false;
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// Reads `url(` … `)` from just after the `(`; returns where scanning goes
/// on.
fn url_function(
    b: &[u8],
    mut i: usize,
    push: &mut impl FnMut(usize, usize, &'static str),
) -> usize {
    i = skip_whitespace(b, i);
    match b.get(i) {
        Some(&quote @ (b'"' | b'\'')) => {
            let (content_end, next) = string_end(b, i + 1, quote);
            push(i + 1, content_end, "url()");
            let after = skip_whitespace(b, next);
            if b.get(after) == Some(&b')') {
                after + 1
            } else {
                // A bad url(): skip to its end like a browser does.
                b[after..]
                    .iter()
                    .position(|&c| c == b')')
                    .map_or(b.len(), |p| after + p + 1)
            }
        }
        _ => {
            let start = i;
            while i < b.len() {
                match b[i] {
                    b')' => break,
                    b'\\' => i += 2,
                    c if c.is_ascii_whitespace() => break,
                    _ => i += 1,
                }
            }
            let end = i.min(b.len());
            let after = skip_whitespace(b, end);
            if b.get(after) == Some(&b')') {
                push(start, end, "url()");
                after + 1
            } else {
                b[after.min(b.len())..]
                    .iter()
                    .position(|&c| c == b')')
                    .map_or(b.len(), |p| after + p + 1)
            }
        }
    }
}

/// The end of a string's content starting at `i` (after its opening
/// quote), and where scanning goes on. An unescaped newline ends an
/// unterminated string, as in CSS.
fn string_end(b: &[u8], mut i: usize, quote: u8) -> (usize, usize) {
    while i < b.len() {
        match b[i] {
            c if c == quote => return (i, i + 1),
            b'\\' => i += 2,
            b'\n' => return (i, i),
            _ => i += 1,
        }
    }
    (b.len(), b.len())
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'-' || c >= 0x80
}

/// An identifier (letters, digits, `-`, `_`, non-ASCII, escapes) from `i`.
fn ident(b: &[u8], start: usize) -> (usize, &[u8]) {
    let mut i = start;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c >= 0x80 => i += 1,
            b'\\' if i + 1 < b.len() => i += 2,
            _ => break,
        }
    }
    let i = i.min(b.len());
    (i, &b[start..i])
}

fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn trim(b: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    end = end.min(b.len());
    while start < end && b[start].is_ascii_whitespace() {
        start += 1;
    }
    while end > start && b[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    (start, end)
}

pub(crate) fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(css: &str) -> Vec<(&str, &'static str)> {
        let mut found = Vec::new();
        scan(css, 0, &mut found);
        found
            .iter()
            .map(|f| (&css[f.start..f.end], f.what))
            .collect()
    }

    #[test]
    fn finds_url_in_every_quoting() {
        let css = r#"a{background:url(img/a.png)} b{background:URL( "img/b.png" )}
            c{background:url('img/c.png')} d{background:url(  img/d.png  )}"#;
        assert_eq!(
            urls(css),
            [
                ("img/a.png", "url()"),
                ("img/b.png", "url()"),
                ("img/c.png", "url()"),
                ("img/d.png", "url()")
            ]
        );
    }

    #[test]
    fn finds_imports_in_both_forms() {
        let css = r#"@charset "UTF-8"; @import "base.css"; @import url(theme.css) screen;
            @IMPORT 'print.css' print; .x{content:"not-a-url.css"}"#;
        assert_eq!(
            urls(css),
            [
                ("base.css", "@import"),
                ("theme.css", "url()"),
                ("print.css", "@import")
            ]
        );
    }

    #[test]
    fn ignores_comments_strings_and_local_fonts() {
        let css = r#"/* url(commented.png) */ .a{content:"url(in-string.png)"}
            @font-face{font-family:X;src:local("X Font"),url(fonts/x.woff2) format("woff2")}
            .b{background:image-set("img/1x.png" 1x, url(img/2x.png) 2x)}
            .c{background:-webkit-image-set('img/w.png' 1x)}"#;
        assert_eq!(
            urls(css),
            [
                ("fonts/x.woff2", "url()"),
                ("img/1x.png", "image-set()"),
                ("img/2x.png", "url()"),
                ("img/w.png", "image-set()")
            ]
        );
    }

    #[test]
    fn survives_malformed_input() {
        for css in [
            "url(",
            "url(\"a",
            "@import",
            "a{b:url(x y)}",
            "\\",
            "'abc",
            "/* open",
        ] {
            let _ = urls(css);
        }
        assert_eq!(urls("a{b:url(x y)} c{d:url(z.png)}"), [("z.png", "url()")]);
    }

    #[test]
    fn offsets_are_shifted_for_embedded_css() {
        let mut found = Vec::new();
        scan("x{b:url(a.png)}", 100, &mut found);
        assert_eq!((found[0].start, found[0].end), (108, 113));
    }
}
