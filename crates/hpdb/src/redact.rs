//! Database URLs in messages, with their secrets hidden.
//!
//! A connection failure is only actionable if it says *where* the program
//! tried to connect, and start-up logs are read by more people than should
//! read a database password. [`redacted_url`] keeps the scheme, user, host,
//! port, database and parameters, and replaces the password (in the user
//! part or as a `password=` parameter) with `***`.

use url::Url;

const HIDDEN: &str = "***";

/// `url` with its password hidden, for messages and logs. A URL that does
/// not parse is still shown without what looks like its password.
pub fn redacted_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            redact(&mut parsed);
            parsed.to_string()
        }
        Err(_) => redact_text(url),
    }
}

/// Hides the password of a parsed URL, in place.
pub(crate) fn redact(url: &mut Url) {
    if url.password().is_some() {
        // Fails only for URLs that cannot have a user part; those have no password.
        let _ = url.set_password(Some(HIDDEN));
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    HIDDEN.into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
}

/// For text that is not a URL: hides what lies between the user's `:` and
/// the `@` of `scheme://user:password@host`, and any `password=` value.
fn redact_text(text: &str) -> String {
    let mut out = text.to_string();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let authority_end = out[start..].find('/').map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..authority_end].rfind('@').map(|i| start + i) {
            if let Some(colon) = out[start..at].find(':').map(|i| start + i) {
                out.replace_range(colon + 1..at, HIDDEN);
            }
        }
    }
    if let Some(i) = out.find("password=").map(|i| i + "password=".len()) {
        let end = out[i..].find(['&', ' ']).map_or(out.len(), |j| i + j);
        out.replace_range(i..end, HIDDEN);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_the_password_and_keeps_the_rest() {
        assert_eq!(
            redacted_url("postgres://app:s3cr%40t@db.internal:6432/gistfans?pgbouncer=true"),
            "postgres://app:***@db.internal:6432/gistfans?pgbouncer=true"
        );
        assert_eq!(
            redacted_url("postgres://db/x?user=app&password=s3cret&sslmode=require"),
            "postgres://db/x?user=app&password=***&sslmode=require"
        );
    }

    #[test]
    fn leaves_urls_without_secrets_alone() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/test",
            "sqlite://data/gistfans.db",
        ] {
            assert_eq!(redacted_url(url), url);
        }
    }

    #[test]
    fn hides_the_password_of_text_that_does_not_parse() {
        let shown = redacted_url("postgres://app:s3cret@db:notaport/x");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@db"), "{shown}");
        let shown = redacted_url("host=db password=s3cret user=app");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
