//! How the configuration prints (`tolk check-config` prints it whole, and `Debug` reaches
//! logs): secrets replaced, everything else shown. Trunk passwords: `trunk.rs`.

use super::{AdminConfig, DatabaseConfig};

/// Never prints a token (`check-config` prints the configuration): only how many are set.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("tokens", &format_args!("({} set, not shown)", self.tokens.len()))
            .field("control_socket", &self.control_socket)
            .field("console_url", &self.console_url)
            .finish()
    }
}

/// Prints the URL without its password (`check-config` prints the configuration).
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact_database_url))
            .finish()
    }
}

/// A PostgreSQL connection string with its secrets replaced by `(redacted)`: the password of
/// a URL's user information (`postgres://user:secret@host/db`) and the values of `password`
/// and `sslpassword` parameters, in a URL's query or in libpq's `key=value` form
/// (PostgreSQL 15 docs, 34.1.1 and 34.1.2).
pub fn redact_database_url(url: &str) -> String {
    const SECRET_KEYS: [&str; 2] = ["password", "sslpassword"];
    const REDACTED: &str = "(redacted)";
    let is_secret = |key: &str| SECRET_KEYS.iter().any(|k| key.trim().eq_ignore_ascii_case(k));
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority_and_path, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        // The user information ends at the last '@' before the path.
        let path_start = authority_and_path.find('/').unwrap_or(authority_and_path.len());
        let (authority, path) = authority_and_path.split_at(path_start);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_string(),
        };
        let query = query.map(|q| {
            q.split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret(k) => format!("{k}={REDACTED}"),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&")
        });
        return match query {
            Some(q) => format!("{scheme}://{authority}{path}?{q}"),
            None => format!("{scheme}://{authority}{path}"),
        };
    }
    // libpq's keyword form: `host=db user=tolk password=secret`.
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret(k) => format!("{k}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_urls_print_without_their_secrets() {
        use super::redact_database_url as r;
        assert_eq!(
            r("postgres://tolk:s3cr3t@db.example:5432/tolk"),
            "postgres://tolk:(redacted)@db.example:5432/tolk"
        );
        assert_eq!(r("postgres://tolk:p@ss@db/tolk"), "postgres://tolk:(redacted)@db/tolk");
        assert_eq!(
            r("postgresql://db/tolk?user=tolk&password=s3cr3t&sslmode=verify-full&SSLPassword=k3y"),
            "postgresql://db/tolk?user=tolk&password=(redacted)&sslmode=verify-full&SSLPassword=(redacted)"
        );
        assert_eq!(r("postgres://tolk@db/tolk"), "postgres://tolk@db/tolk");
        assert_eq!(
            r("host=db user=tolk password=s3cr3t"),
            "host=db user=tolk password=(redacted)"
        );
        let shown = format!(
            "{:?}{:?}",
            super::super::DatabaseConfig {
                url: Some("postgres://u:s3cr3t@h/d".into())
            },
            super::super::AdminConfig {
                tokens: vec!["a-token-of-24-characters".into()],
                ..Default::default()
            }
        );
        assert!(!shown.contains("s3cr3t") && !shown.contains("a-token"), "{shown}");
        assert!(shown.contains("(1 set, not shown)"), "{shown}");
    }
}
