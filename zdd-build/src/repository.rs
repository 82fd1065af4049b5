//! Image repository names: checking a given one, deriving a default one.
//!
//! The engine rejects a bad reference only after the whole context has been
//! sent, with a message about a tag the user never typed. Checking
//! `--repository` against Docker's reference grammar first makes it a usage
//! error (exit 2) that names the argument, before anything is sent. A name
//! derived from a service or directory name is instead made valid
//! (lowercased, other characters replaced), since the user did not choose
//! it character by character.
//!
//! The grammar (distribution/reference):
//!
//! ```text
//! name      := [domain '/'] component ('/' component)*
//! component := [a-z0-9]+ (separator [a-z0-9]+)*
//! separator := '.' | '_' | '__' | '-'+
//! domain    := host [':' port]   (first part with '.' or ':', or `localhost`)
//! ```
//!
//! and at most 255 characters. A repository here has no tag or digest: the
//! tag is always the release.

/// The longest name Docker accepts.
const MAX_NAME: usize = 255;

/// Checks `repo` against Docker's grammar; the error says what is wrong.
pub fn validate(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("it is empty".into());
    }
    if repo.len() > MAX_NAME {
        return Err(format!("it is longer than {MAX_NAME} characters"));
    }
    if repo.contains('@') {
        return Err("a repository takes no digest (`@…`)".into());
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 1 && is_domain_like(parts[0]) {
        let domain = parts.remove(0);
        validate_domain(domain)?;
    }
    for part in parts {
        if part.contains(':') {
            return Err("a repository takes no tag (`:…`); the tag is always the release".into());
        }
        validate_component(part)?;
    }
    Ok(())
}

/// Docker's rule for whether the first part is a registry host.
fn is_domain_like(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first != first.to_lowercase()
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry {domain:?} has an invalid port"));
        }
    }
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("registry host {host:?} is not a valid host name"))
    }
}

fn validate_component(part: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("path component {part:?} {why}"));
    if part.is_empty() {
        return bad("is empty (a `/` too many?)");
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "contains {c:?}: only lower-case letters, digits and `.` `_` `-` are allowed"
        ));
    }
    let bytes = part.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return bad("must start and end with a letter or digit");
    }
    for run in separator_runs(part) {
        if !is_separator(run) {
            return bad(&format!(
                "has the separator {run:?}: use one `.`, one or two `_`, or dashes"
            ));
        }
    }
    Ok(())
}

/// The maximal runs of `.`, `_`, `-` in `s`.
fn separator_runs(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c.is_ascii_alphanumeric())
        .filter(|run| !run.is_empty())
}

fn is_separator(run: &str) -> bool {
    matches!(run, "." | "_" | "__") || run.bytes().all(|b| b == b'-')
}

/// Makes a valid single-component repository name out of `name` (a service
/// or directory name): lower-cased, characters outside `[a-z0-9._-]` turned
/// into `-`, separator runs Docker does not allow turned into `-`, leading
/// and trailing separators dropped, at most 128 characters. `None` if
/// nothing is left.
pub fn sanitise(name: &str) -> Option<String> {
    let lowered: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::new();
    let mut pending = String::new();
    for c in lowered.chars() {
        if c.is_ascii_alphanumeric() {
            if !out.is_empty() && !pending.is_empty() {
                out.push_str(if is_separator(&pending) {
                    &pending
                } else {
                    "-"
                });
            }
            pending.clear();
            out.push(c);
        } else {
            pending.push(c);
        }
    }
    if out.len() > 128 {
        out.truncate(128);
        while out.ends_with(['.', '_', '-']) {
            out.pop();
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for ok in [
            "api",
            "my-app",
            "my__app",
            "my.app",
            "a---b",
            "team/api",
            "localhost/api",
            "localhost:5000/team/api",
            "registry.example.com/a/b",
            "zdd-test-build-1234",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn invalid_names_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("Api", "contains 'A'"),
            ("api:latest", "no tag"),
            ("api@sha256:00", "no digest"),
            ("-api", "start and end"),
            ("api.", "start and end"),
            ("a..b", "separator \"..\""),
            ("a___b", "separator \"___\""),
            ("a._b", "separator"),
            ("team//api", "empty"),
            ("my app", "contains ' '"),
            ("host:port/api", "invalid port"),
            ("bad_host.com/api", "not a valid host"),
        ] {
            let err = validate(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(validate(&"a".repeat(256)).is_err());
    }

    #[test]
    fn sanitised_names_are_valid() {
        for (input, want) in [
            ("api", Some("api")),
            ("My App", Some("my-app")),
            ("web_Frontend", Some("web_frontend")),
            ("--odd..name__", Some("odd-name")),
            ("a.b", Some("a.b")),
            ("a___b", Some("a-b")),
            ("Ünïcode", Some("n-code")),
            ("...", None),
            ("", None),
        ] {
            let got = sanitise(input);
            assert_eq!(got.as_deref(), want, "{input:?}");
            if let Some(name) = got {
                assert_eq!(validate(&name), Ok(()), "{name}");
            }
        }
        let long = sanitise(&"x".repeat(300)).unwrap();
        assert_eq!(long.len(), 128);
    }
}
