//! Finding the references in HTML.
//!
//! Which attributes load a file: `src` (scripts, images, media, …),
//! `srcset`/`imagesrcset`, `poster`, `<object data>`, and `href` on
//! `<link>` (stylesheets, icons, `modulepreload`, preloads, the web app
//! manifest) and on SVG `<image>`/`<use>`. `href` on `<a>` and `<area>`
//! is navigation, not a file the page needs, and is left alone; so is a
//! `<link>` whose `rel` names only other pages (`prev`, `next`,
//! `canonical`, `alternate`, `index`, `search`, …: Sphinx writes them for
//! every page, some to pages that do not exist), while `alternate
//! stylesheet` or `alternate icon` still load a file. CSS in `<style>`
//! elements and `style` attributes is scanned as CSS.
//!
//! A tokenizer, not a full HTML parser: it knows what changes where a
//! reference can be (comments, `<!…>`, raw-text elements such as `<script>`
//! whose content is not markup, quoted and unquoted attribute values), and
//! reports byte spans so the file is rewritten in place, byte for byte
//! elsewhere. It also reports the first `<base href>`, which changes what
//! relative references resolve against, and `integrity` attributes, which
//! must follow a rewritten file's new content.

use crate::css;
use crate::refs::{Found, Syntax};

/// What one HTML file holds.
#[derive(Debug, Default)]
pub struct Scan {
    pub found: Vec<Found>,
    /// The raw span of the first `<base href>` value.
    pub base: Option<(usize, usize)>,
    /// `integrity` attribute value spans, by element.
    pub integrity: Vec<(usize, usize, usize)>,
}

/// Elements whose content is text, not markup, up to their end tag.
const RAW_TEXT: [&[u8]; 8] = [
    b"script",
    b"style",
    b"textarea",
    b"title",
    b"xmp",
    b"iframe",
    b"noembed",
    b"noframes",
];

struct Attribute<'a> {
    name: String,
    value: Option<(usize, usize)>,
    text: &'a str,
}

/// Scans an HTML document.
pub fn scan(text: &str) -> Scan {
    let b = text.as_bytes();
    let mut scan = Scan::default();
    let mut element = 0usize;
    let mut i = 0;
    while i < b.len() {
        let Some(lt) = b[i..].iter().position(|&c| c == b'<') else {
            break;
        };
        i += lt;
        let next = b.get(i + 1).copied();
        if b[i..].starts_with(b"<!--") {
            i = css::find(b, i + 4, b"-->").map_or(b.len(), |end| end + 3);
        } else if matches!(next, Some(b'!' | b'?' | b'/')) {
            i = b[i..]
                .iter()
                .position(|&c| c == b'>')
                .map_or(b.len(), |p| i + p + 1);
        } else if next.is_some_and(|c| c.is_ascii_alphabetic()) {
            element += 1;
            let (end, tag, attributes) = tag(text, i + 1);
            i = end;
            element_refs(&tag, &attributes, element, &mut scan);
            if tag == "plaintext" {
                break;
            }
            if let Some(raw) = RAW_TEXT.iter().find(|r| tag.as_bytes() == **r) {
                let close = end_tag(b, i, raw);
                if tag == "style" {
                    css::scan(&text[i..close], i, &mut scan.found);
                }
                i = close;
            }
        } else {
            i += 1;
        }
    }
    scan
}

/// Reads a start tag from just after its `<`: its end, its lowercase name,
/// its attributes.
fn tag(text: &str, start: usize) -> (usize, String, Vec<Attribute<'_>>) {
    let b = text.as_bytes();
    let mut i = start;
    while i < b.len() && !is_space(b[i]) && b[i] != b'/' && b[i] != b'>' {
        i += 1;
    }
    let name = text[start..i].to_ascii_lowercase();
    let mut attributes = Vec::new();
    loop {
        while i < b.len() && (is_space(b[i]) || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        if b[i] == b'>' {
            i += 1;
            break;
        }
        let name_start = i;
        i += 1; // the first character belongs to the name, even `=`
        while i < b.len() && !is_space(b[i]) && !matches!(b[i], b'/' | b'>' | b'=') {
            i += 1;
        }
        let attr_name = text[name_start..i].to_ascii_lowercase();
        let mut j = i;
        while j < b.len() && is_space(b[j]) {
            j += 1;
        }
        let mut value = None;
        if j < b.len() && b[j] == b'=' {
            j += 1;
            while j < b.len() && is_space(b[j]) {
                j += 1;
            }
            match b.get(j) {
                Some(&quote @ (b'"' | b'\'')) => {
                    let end = b[j + 1..]
                        .iter()
                        .position(|&c| c == quote)
                        .map_or(b.len(), |p| j + 1 + p);
                    value = Some((j + 1, end));
                    i = (end + 1).min(b.len());
                }
                _ => {
                    let s = j;
                    while j < b.len() && !is_space(b[j]) && b[j] != b'>' {
                        j += 1;
                    }
                    value = Some((s, j));
                    i = j;
                }
            }
        }
        attributes.push(Attribute {
            name: attr_name,
            value,
            text,
        });
    }
    (i, name, attributes)
}

/// Where the content of a raw-text element ends: at `</name`
/// (case-insensitive) followed by a space, `/` or `>`.
fn end_tag(b: &[u8], from: usize, name: &[u8]) -> usize {
    let mut i = from;
    while let Some(p) = css::find(b, i, b"</") {
        let after = p + 2 + name.len();
        if after <= b.len()
            && b[p + 2..after].eq_ignore_ascii_case(name)
            && match b.get(after) {
                None => true,
                Some(&c) => is_space(c) || c == b'/' || c == b'>',
            }
        {
            return p;
        }
        i = p + 2;
    }
    b.len()
}

/// `rel` keywords of a `<link>` to another page.
const PAGE_RELS: [&str; 22] = [
    "alternate",
    "appendix",
    "archives",
    "author",
    "bookmark",
    "canonical",
    "chapter",
    "contents",
    "copyright",
    "external",
    "first",
    "glossary",
    "help",
    "index",
    "last",
    "license",
    "next",
    "prev",
    "previous",
    "search",
    "start",
    "up",
];

/// `rel` keywords of a `<link>` that loads a file.
const ASSET_RELS: [&str; 9] = [
    "stylesheet",
    "icon",
    "apple-touch-icon",
    "apple-touch-icon-precomposed",
    "mask-icon",
    "manifest",
    "modulepreload",
    "preload",
    "prefetch",
];

/// Whether a `<link>` with these attributes points to another page rather
/// than loading a file: its `rel` has a page keyword and no file keyword.
fn links_a_page(attributes: &[Attribute<'_>]) -> bool {
    let Some(rel) = attributes
        .iter()
        .find(|a| a.name == "rel")
        .and_then(|a| a.value.map(|(s, e)| a.text[s..e].to_ascii_lowercase()))
    else {
        return false;
    };
    let words: Vec<&str> = rel.split_ascii_whitespace().collect();
    words.iter().any(|w| PAGE_RELS.contains(w)) && !words.iter().any(|w| ASSET_RELS.contains(w))
}

fn element_refs(tag: &str, attributes: &[Attribute<'_>], element: usize, scan: &mut Scan) {
    let page_link = tag == "link" && links_a_page(attributes);
    for attribute in attributes {
        let Some((start, end)) = attribute.value else {
            continue;
        };
        let text = attribute.text;
        let name = attribute.name.as_str();
        let mut single = |what: &'static str| {
            let (s, e) = trim(text.as_bytes(), start, end);
            if s < e {
                scan.found.push(Found {
                    start: s,
                    end: e,
                    syntax: Syntax::Html,
                    what,
                    element: Some(element),
                });
            }
        };
        match name {
            "src" => single("src"),
            "poster" => single("poster"),
            "data" if tag == "object" => single("data"),
            "href" | "xlink:href"
                if matches!(tag, "link" | "image" | "use" | "feimage") && !page_link =>
            {
                single("href")
            }
            "href" if tag == "base" && scan.base.is_none() => {
                scan.base = Some(trim(text.as_bytes(), start, end));
            }
            "srcset" | "imagesrcset" => {
                for (s, e) in srcset(&text.as_bytes()[start..end]) {
                    scan.found.push(Found {
                        start: start + s,
                        end: start + e,
                        syntax: Syntax::Html,
                        what: "srcset",
                        element: Some(element),
                    });
                }
            }
            "style" => css::scan(&text[start..end], start, &mut scan.found),
            "integrity" => scan.integrity.push((element, start, end)),
            _ => {}
        }
    }
}

/// The URL spans of a `srcset` value, parsed as the HTML standard says: a
/// URL is a run of non-space characters (trailing commas are separators),
/// then descriptors up to a comma outside parentheses.
pub fn srcset(b: &[u8]) -> Vec<(usize, usize)> {
    let mut urls = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && (is_space(b[i]) || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !is_space(b[i]) {
            i += 1;
        }
        let mut end = i;
        if b[end - 1] == b',' {
            while end > start && b[end - 1] == b',' {
                end -= 1;
            }
            if end > start {
                urls.push((start, end));
            }
            continue;
        }
        urls.push((start, end));
        let mut depth = 0usize;
        while i < b.len() {
            match b[i] {
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                b',' if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    urls
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn trim(b: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && is_space(b[start]) {
        start += 1;
    }
    while end > start && is_space(b[end - 1]) {
        end -= 1;
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(html: &str) -> Vec<(&str, &'static str)> {
        scan(html)
            .found
            .iter()
            .map(|f| (&html[f.start..f.end], f.what))
            .collect()
    }

    #[test]
    fn finds_loading_attributes_only() {
        let html = r#"<!doctype html><html><head>
            <link rel="stylesheet" href="css/app.css">
            <link rel=modulepreload href=/js/vendor.js>
            <LINK REL="icon" HREF='favicon.ico'>
            <script type="module" src="js/app.js"></script>
            </head><body>
            <a href="about.html">about</a><area href="x.png">
            <img src=" img/logo.png " alt="logo">
            <video poster="img/poster.jpg"><source src="media/clip.mp4"></video>
            <object data="doc.svg"></object>
            <svg><use href="icons.svg#home"/><image xlink:href="img/s.png"/></svg>
            </body></html>"#;
        assert_eq!(
            urls(html),
            [
                ("css/app.css", "href"),
                ("/js/vendor.js", "href"),
                ("favicon.ico", "href"),
                ("js/app.js", "src"),
                ("img/logo.png", "src"),
                ("img/poster.jpg", "poster"),
                ("media/clip.mp4", "src"),
                ("doc.svg", "data"),
                ("icons.svg#home", "href"),
                ("img/s.png", "href"),
            ]
        );
    }

    #[test]
    fn links_to_other_pages_are_not_files() {
        // As Sphinx writes them (python3.11-doc), some to missing pages.
        let html = r#"<link rel="index" title="Index" href="../genindex.html" />
            <link rel="search" title="Search" href="../search.html" />
            <link rel="copyright" title="Copyright" href="../copyright.html" />
            <link rel="next" title="x" href="email.nothere.html" />
            <link rel="prev" title="y" href="gone.html" />
            <link rel="canonical" href="https://docs.python.org/3/library/email.html" />
            <link rel="alternate" type="application/rss+xml" href="feed.xml">
            <link rel="shortcut icon" href="../_static/py.svg" />
            <link rel="alternate stylesheet" title="dark" href="dark.css">
            <link rel="stylesheet" href="../_static/pydoctheme.css?v=1" type="text/css" />
            <link href="no-rel.css">"#;
        assert_eq!(
            urls(html),
            [
                ("../_static/py.svg", "href"),
                ("dark.css", "href"),
                ("../_static/pydoctheme.css?v=1", "href"),
                ("no-rel.css", "href"),
            ]
        );
    }

    #[test]
    fn skips_comments_and_raw_text() {
        let html = r#"<!-- <img src="commented.png"> -->
            <script>var s = '<img src="in-script.png">'; // </scripty
            </SCRIPT ><textarea><img src="in-textarea.png"></textarea>
            <title><img src=t.png></title><img src="real.png">"#;
        assert_eq!(urls(html), [("real.png", "src")]);
    }

    #[test]
    fn scans_style_elements_and_attributes() {
        let html = r#"<style>@import "base.css"; body{background:url('img/bg.png')}</style>
            <div style="background: url(img/div.png)"></div>"#;
        assert_eq!(
            urls(html),
            [
                ("base.css", "@import"),
                ("img/bg.png", "url()"),
                ("img/div.png", "url()")
            ]
        );
    }

    #[test]
    fn parses_srcset_like_a_browser() {
        let value = b"img/a.png 1x, img/b.png 2x,img/c.png,, data:image/png;base64,AA 3x, img/d.png (x, y) 100w";
        let spans: Vec<&str> = srcset(value)
            .into_iter()
            .map(|(s, e)| std::str::from_utf8(&value[s..e]).unwrap())
            .collect();
        assert_eq!(
            spans,
            [
                "img/a.png",
                "img/b.png",
                "img/c.png",
                "data:image/png;base64,AA",
                "img/d.png"
            ]
        );
        let html = r#"<img srcset="a.png 1x, b.png 2x"><link rel=preload as=image imagesrcset="c.png 1x">"#;
        assert_eq!(
            urls(html),
            [
                ("a.png", "srcset"),
                ("b.png", "srcset"),
                ("c.png", "srcset")
            ]
        );
    }

    #[test]
    fn reports_base_and_integrity() {
        let html = r#"<base href="/app/"><base href="/other/"><script src="a.js" integrity="sha384-x"></script>"#;
        let scan = scan(html);
        let (s, e) = scan.base.unwrap();
        assert_eq!(&html[s..e], "/app/");
        let (element, s, e) = scan.integrity[0];
        assert_eq!(&html[s..e], "sha384-x");
        assert_eq!(scan.found[0].element, Some(element));
    }

    #[test]
    fn survives_malformed_input() {
        for html in [
            "<",
            "<img",
            "<img src",
            "<img src=",
            "<img src=\"a",
            "<script>",
            "<!--",
            "<a b='",
        ] {
            let _ = scan(html);
        }
        assert_eq!(urls("<img src=\"a.png\" <p>x</p>"), [("a.png", "src")]);
    }
}
