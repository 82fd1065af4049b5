//! References as they are written in HTML and CSS, and how a hashed name is
//! put into one.
//!
//! A reference is rewritten by *inserting* `-<hash>` before the extension
//! of its last path segment, and nothing else: `../img/logo.png?v=2#top`
//! becomes `../img/logo-<hash>.png?v=2#top`. Keeping the rest of the text
//! as the author wrote it keeps relative references relative (the site
//! still works under a sub-path), keeps queries and fragments, and never
//! needs re-escaping: the inserted characters are `-` and hex digits, which
//! mean the same in every quoting context.
//!
//! What is left alone: empty references, `#fragment`, anything with a
//! scheme (`https:`, `data:`, `blob:`, `mailto:`, …) and protocol-relative
//! `//host/…` references. Everything else names a file of the build:
//! path-absolute references (`/css/app.css`) from the build's root (the
//! site is served at `/`), relative ones from the referring file's folder
//! (or an HTML `<base href>`).

/// The path part of a local reference and what follows it (`?query#frag`),
/// or `None` for a reference that is not a file of the build.
pub fn split_local(raw: &str) -> Option<(&str, &str)> {
    if raw.is_empty() || raw.starts_with('#') || raw.starts_with("//") || has_scheme(raw) {
        return None;
    }
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    if end == 0 {
        // `?query` alone: the document itself.
        return None;
    }
    Some((&raw[..end], &raw[end..]))
}

/// `https:`, `data:`, `C:`… — a scheme is a letter followed by letters,
/// digits, `+`, `-` or `.` up to a `:` that comes before any `/`, `?`, `#`.
pub fn has_scheme(raw: &str) -> bool {
    let mut chars = raw.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    for (_, c) in chars {
        match c {
            ':' => return true,
            c if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.') => {}
            _ => return false,
        }
    }
    false
}

/// Why a local reference names no file of the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// `..` climbs above the build's root.
    Escapes,
    /// It names a folder, not a file (`img/`, `/`).
    Folder,
}

impl Unresolved {
    pub fn describe(&self) -> &'static str {
        match self {
            Unresolved::Escapes => "climbs out of the build (`..` above its root)",
            Unresolved::Folder => "names a folder, not a file",
        }
    }
}

/// Resolves a decoded reference path against `base_dir` (a folder of the
/// build, `""` for its root, written `a/b`) into a build path `a/b/c.png`.
pub fn resolve(base_dir: &str, path: &str) -> Result<String, Unresolved> {
    let mut segments: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        base_dir.split('/').filter(|s| !s.is_empty()).collect()
    };
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(Unresolved::Escapes);
                }
            }
            other => segments.push(other),
        }
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if segments.is_empty() || matches!(last, "" | "." | "..") {
        return Err(Unresolved::Folder);
    }
    Ok(segments.join("/"))
}

/// The folder of a build path: `css/app.css` → `css`, `index.html` → ``.
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// A file name split before its extension: `app.min.js` → (`app.min`,
/// `.js`); `.htaccess` and `LICENSE` have none.
pub fn split_name(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// The pool name of a build path for a content hash: `css/app.css` →
/// `css/app-<hash>.css`.
pub fn hashed_path(path: &str, hash: &str) -> String {
    let (dir, name) = match path.rsplit_once('/') {
        Some((dir, name)) => (Some(dir), name),
        None => (None, path),
    };
    let (stem, ext) = split_name(name);
    match dir {
        Some(dir) => format!("{dir}/{stem}-{hash}{ext}"),
        None => format!("{stem}-{hash}{ext}"),
    }
}

/// Where `-<hash>` goes in the raw (still escaped) reference path `raw` so
/// that it names the hashed file of the build file named `name`; `None`
/// when escapes in the reference hide where its extension starts (it is
/// then left as it is, with a warning).
pub fn insertion_point(
    raw: &str,
    name: &str,
    decode: &dyn Fn(&str) -> Option<String>,
) -> Option<usize> {
    let segment_start = raw.rfind('/').map_or(0, |i| i + 1);
    let segment = &raw[segment_start..];
    let (stem, ext) = split_name(name);
    let at = if ext.is_empty() {
        segment.len()
    } else {
        segment.rfind('.')?
    };
    let same = decode(&segment[..at]).as_deref() == Some(stem)
        && decode(&segment[at..]).as_deref() == Some(ext);
    same.then_some(segment_start + at)
}

/// `%XX` decoding, as a server does before looking a path up. `None` when
/// the bytes are not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the character references of an HTML attribute value that can
/// appear in a URL (`&amp;`, `&quot;`, `&#39;`, `&#x2F;`, …); unknown
/// named references are kept as written.
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        let name = &rest[1..end];
        let decoded = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => name.strip_prefix('#').and_then(|num| {
                let code = match num.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => num.parse().ok(),
                };
                code.and_then(char::from_u32)
            }),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end..];
                if rest.starts_with(';') {
                    rest = &rest[1..];
                }
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes CSS escapes: `\` + up to six hex digits (and one optional
/// whitespace), or `\` + any other character for that character.
pub fn css_unescape(text: &str) -> String {
    if !text.contains('\\') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let mut hex = String::new();
        while hex.len() < 6 {
            match chars.peek() {
                Some(h) if h.is_ascii_hexdigit() => {
                    hex.push(*h);
                    chars.next();
                }
                _ => break,
            }
        }
        if hex.is_empty() {
            match chars.next() {
                Some('\n') | None => {}
                Some(other) => out.push(other),
            }
        } else {
            let code = u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD);
            out.push(
                char::from_u32(code)
                    .filter(|&c| c != '\0')
                    .unwrap_or('\u{FFFD}'),
            );
            if chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                chars.next();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> Option<String> {
        percent_decode(text)
    }

    #[test]
    fn only_local_references_are_split() {
        assert_eq!(
            split_local("img/a.png?v=1#x"),
            Some(("img/a.png", "?v=1#x"))
        );
        assert_eq!(split_local("/css/app.css"), Some(("/css/app.css", "")));
        assert_eq!(split_local("a.png#frag"), Some(("a.png", "#frag")));
        for skipped in [
            "",
            "#top",
            "?q=1",
            "//cdn.example/x.js",
            "https://cdn.example/x.js",
            "data:image/png;base64,AAAA",
            "blob:xyz",
            "mailto:a@b",
            "javascript:void(0)",
            "HTTP://X/y.png",
        ] {
            assert_eq!(split_local(skipped), None, "{skipped}");
        }
        // A colon after a slash is part of a path, not a scheme.
        assert_eq!(split_local("img/a:b.png"), Some(("img/a:b.png", "")));
    }

    #[test]
    fn resolves_relative_and_absolute_paths() {
        assert_eq!(resolve("css", "../img/a.png").unwrap(), "img/a.png");
        assert_eq!(resolve("css", "./a.png").unwrap(), "css/a.png");
        assert_eq!(resolve("css/deep", "/img/a.png").unwrap(), "img/a.png");
        assert_eq!(resolve("", "a//b.png").unwrap(), "a/b.png");
        assert_eq!(resolve("", "../a.png"), Err(Unresolved::Escapes));
        assert_eq!(resolve("css", "/../a.png"), Err(Unresolved::Escapes));
        assert_eq!(resolve("", "img/"), Err(Unresolved::Folder));
        assert_eq!(resolve("a", ".."), Err(Unresolved::Folder));
    }

    #[test]
    fn hashed_names_go_before_the_extension() {
        assert_eq!(hashed_path("css/app.css", "0123"), "css/app-0123.css");
        assert_eq!(hashed_path("app.min.js", "ab"), "app.min-ab.js");
        assert_eq!(hashed_path("fonts/LICENSE", "ab"), "fonts/LICENSE-ab");
        assert_eq!(hashed_path(".htaccess", "ab"), ".htaccess-ab");
    }

    #[test]
    fn the_insertion_point_respects_escapes() {
        assert_eq!(
            insertion_point("../img/logo.png", "logo.png", &plain),
            Some(11)
        );
        assert_eq!(
            insertion_point("my%20pic.png", "my pic.png", &plain),
            Some(8)
        );
        assert_eq!(insertion_point("LICENSE", "LICENSE", &plain), Some(7));
        // An escaped dot hides the extension: leave it alone.
        assert_eq!(insertion_point("logo%2Epng", "logo.png", &plain), None);
        let css = |t: &str| percent_decode(&css_unescape(t));
        assert_eq!(insertion_point(r"a\ b.png", "a b.png", &css), Some(4));
    }

    #[test]
    fn decodes_what_a_browser_decodes() {
        assert_eq!(percent_decode("a%20b%zz%").unwrap(), "a b%zz%");
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(
            html_unescape("a&amp;b&#39;c&#x2F;d&unknown;"),
            "a&b'c/d&unknown;"
        );
        assert_eq!(css_unescape(r"a\ b\31 x\\"), "a b1x\\");
    }
}
