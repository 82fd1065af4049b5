//! What the HTML and CSS scanners report: where a reference is written,
//! and how its text is to be decoded to find the file it names.
//!
//! The scanners only locate; deciding what a reference names and what to
//! write in its place is [`crate::rewrite`]'s job, so both languages share
//! one set of rules.

use crate::url;

/// The language a reference is written in, which decides its escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// An HTML attribute value: character references, then `%XX`.
    Html,
    /// CSS: backslash escapes, then `%XX`.
    Css,
}

impl Syntax {
    /// The file path a reference's raw text means.
    pub fn decode(self, raw: &str) -> Option<String> {
        match self {
            Syntax::Html => url::percent_decode(&url::html_unescape(raw)),
            Syntax::Css => url::percent_decode(&url::css_unescape(raw)),
        }
    }
}

/// One reference: the byte span of its URL text (without quotes or
/// surrounding whitespace) in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub syntax: Syntax,
    /// Where it was written, for warnings: `src`, `srcset`, `url()`, …
    pub what: &'static str,
    /// For HTML: which element it belongs to (to update an `integrity`
    /// attribute of the same element).
    pub element: Option<usize>,
}
