//! Parsing `DATABASE_URL`, and showing one without its password.
//!
//! Apart from the connection because the configuration parses the URL at
//! startup, before (and whether or not) anything connects, and because the
//! password rules (accepted, never sent, never printed) are easiest to
//! check in one place.

use std::fmt;

use crate::http::percent_decode;

/// The default PostgreSQL port, when the URL names none.
pub const DEFAULT_PORT: u16 = 5432;

/// Where and as whom to connect: a parsed `DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    pub user: String,
    /// Accepted so that a URL with one parses, but never sent: only `trust`
    /// authentication is supported.
    pub password: Option<String>,
    /// A host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
    pub database: String,
}

/// What a `DATABASE_URL` looks like, for error messages.
pub const URL_FORM: &str = "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE \
                            (or postgresql://...; PORT defaults to 5432)";

impl Url {
    /// Parses `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` or the same
    /// with `postgresql://`. User, password and database may be
    /// percent-encoded. The only query parameter accepted is
    /// `sslmode=disable`, which is what this client does anyway. The error
    /// says what is wrong, without repeating the password.
    pub fn parse(url: &str) -> Result<Url, String> {
        let rest = ["postgres://", "postgresql://"]
            .iter()
            .find_map(|scheme| strip_prefix_ignore_case(url, scheme))
            .ok_or("the scheme must be postgres:// or postgresql://")?;
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, database) = rest
            .split_once('/')
            .ok_or("the URL names no database (.../DATABASE)")?;
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .ok_or("the URL names no user (USER@HOST)")?;
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        let user = decoded(user, "user")?;
        if user.is_empty() {
            return Err("the user name is empty".into());
        }
        let password = password
            .map(|password| percent_decode(password).ok_or("the password is badly percent-encoded"))
            .transpose()?;
        let (host, port) = host_and_port(hostport)?;
        if database.contains('/') {
            return Err("the database name contains '/'".into());
        }
        let database = decoded(database, "database name")?;
        if database.is_empty() {
            return Err("the database name is empty".into());
        }
        for parameter in query.into_iter().flat_map(|q| q.split('&')) {
            if !parameter.is_empty() && parameter != "sslmode=disable" {
                return Err(format!(
                    "unsupported parameter {parameter:?} (only sslmode=disable: this client has no TLS)"
                ));
            }
        }
        Ok(Url {
            user,
            password,
            host,
            port,
            database,
        })
    }
}

/// `url` with the password, if any, replaced by `***`, for messages about
/// a URL that may not parse.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_len].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// `host` or `host:port` or `[v6]` or `[v6]:port`.
fn host_and_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address is missing its ']'")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("junk after the IPv6 address")?,
            ),
        };
        (host, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.contains('%') || host.starts_with('/') {
        return Err("unix-domain sockets are not supported: use HOST:PORT".into());
    }
    if host.contains(['@', '/', ' ']) {
        return Err(format!("invalid host {host:?}"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        // Digits only: parse would also take a sign.
        Some(digits) => match digits.parse::<u16>() {
            Ok(port) if port != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(format!("invalid port {digits:?}")),
        },
    };
    Ok((host.to_owned(), port))
}

fn decoded(part: &str, what: &str) -> Result<String, String> {
    percent_decode(part).ok_or_else(|| format!("the {what} is badly percent-encoded"))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Without the password, which must not end up in logs.
impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `postgres://USER@HOST:PORT/DATABASE`, the password left out.
impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let password = if self.password.is_some() { ":***" } else { "" };
        write!(
            f,
            "postgres://{}{password}@{host}:{}/{}",
            self.user, self.port, self.database
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::testing::url;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Url::parse("postgres://app@db:5433/notes"),
            Ok(url("app", "db", 5433, "notes"))
        );
        assert_eq!(
            Url::parse("postgresql://app@127.0.0.1/notes"),
            Ok(url("app", "127.0.0.1", 5432, "notes"))
        );
        assert_eq!(
            Url::parse("POSTGRES://app@[::1]:6000/notes?sslmode=disable"),
            Ok(url("app", "::1", 6000, "notes"))
        );
        assert_eq!(
            Url::parse("postgres://a%40b@db/my%20db"),
            Ok(url("a@b", "db", 5432, "my db"))
        );
        let with_password = Url::parse("postgres://app:s%3Acret@db:5432/notes").unwrap();
        assert_eq!(with_password.password.as_deref(), Some("s:cret"));
        // The password is never shown.
        assert_eq!(
            with_password.to_string(),
            "postgres://app:***@db:5432/notes"
        );
        assert!(!format!("{with_password:?}").contains("cret"));
        assert_eq!(
            Url::parse("postgres://app@[::1]/x").unwrap().to_string(),
            "postgres://app@[::1]:5432/x"
        );
    }

    #[test]
    fn rejects_bad_urls() {
        for (bad, why) in [
            ("mysql://app@db/notes", "scheme"),
            ("db:5432/notes", "scheme"),
            ("postgres://app@db:5432", "no database"),
            ("postgres://app@db:5432/", "database name is empty"),
            ("postgres://db:5432/notes", "no user"),
            ("postgres://@db/notes", "user name is empty"),
            ("postgres://app@/notes", "host is empty"),
            ("postgres://app@db:/notes", "invalid port"),
            ("postgres://app@db:0/notes", "invalid port"),
            ("postgres://app@db:99999/notes", "invalid port"),
            ("postgres://app@db:+5/notes", "invalid port"),
            ("postgres://app@db:x/notes", "invalid port"),
            ("postgres://app@[::1/notes", "']'"),
            ("postgres://app@%2Ftmp:5432/notes", "unix-domain"),
            ("postgres://app@db/notes/extra", "contains '/'"),
            ("postgres://app@db/n%zz", "percent-encoded"),
            ("postgres://app@db/notes?sslmode=require", "sslmode=require"),
        ] {
            let error = Url::parse(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
        let error = Url::parse("postgres://app:hunter2@db/notes?x=1").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_password("postgres://u:pw@db:1/d?x=@"),
            "postgres://u:***@db:1/d?x=@"
        );
        assert_eq!(redact_password("postgres://u@db/d"), "postgres://u@db/d");
        assert_eq!(redact_password("mysql://u:p:q@h"), "mysql://u:***@h");
        assert_eq!(redact_password("nonsense"), "nonsense");
    }
}
