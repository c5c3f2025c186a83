//! A PostgreSQL URL read for the manager: [`PgTarget`].
//!
//! One place decides, from the URL and the configuration, whether the
//! manager talks to PostgreSQL directly or through a transaction-mode
//! pooler, and derives from that the statement cache and how the query
//! deadline reaches the server.

use std::time::Duration;

use sqlx::{postgres::PgConnectOptions, ConnectOptions};
use url::Url;

use super::deadline::{millis, PgStatementDeadline};
use crate::{config::ManagerConfig, redact};

/// The URL parameter that says "a transaction-mode pooler is in front"
/// (Prisma's convention). sqlx does not know it (it would log a warning
/// for an unknown parameter), so it is taken out before sqlx reads the URL.
const POOLER_PARAM: &str = "pgbouncer";

/// sqlx's own URL parameter for the cache size; hpdb's knob is
/// `DB_STATEMENT_CACHE`, and one fact has one place.
const SQLX_CACHE_PARAM: &str = "statement-cache-capacity";

/// A PostgreSQL URL that cannot be used. Messages show the URL with its
/// password hidden.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgUrlError {
    /// Not a URL, or a URL sqlx rejects.
    #[error("`{url}` is not a usable PostgreSQL URL: {reason}")]
    Invalid {
        /// The URL, password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter hpdb owns has a bad value or belongs elsewhere.
    #[error("`{url}`: {reason}")]
    Parameter {
        /// The URL, password hidden.
        url: String,
        /// Which parameter, and what to do instead.
        reason: String,
    },
}

/// How the manager reaches one PostgreSQL URL: sqlx's connect options, and
/// whether a transaction-mode pooler is in front (see the [module
/// docs](super) for what that changes). Build the manager with
/// [`ManagerBuilder::connect_target`](crate::ManagerBuilder::connect_target),
/// which also installs the matching [`PgStatementDeadline`].
#[derive(Debug, Clone)]
pub struct PgTarget {
    options: PgConnectOptions,
    behind_pooler: bool,
    query_timeout: Duration,
    redacted: String,
}

impl PgTarget {
    /// Reads `url` with `config`'s query timeout and statement cache.
    ///
    /// Pooler-safe mode is on when the URL says `?pgbouncer=true` or
    /// `DB_STATEMENT_CACHE` (`pool.statement_cache_capacity`) is 0; it turns
    /// the statement cache off. Otherwise (a direct connection) each
    /// session starts with `statement_timeout` = `DB_QUERY_TIMEOUT`, sent
    /// in the start-up packet at no cost.
    pub fn from_url(url: &str, config: &ManagerConfig) -> Result<Self, PgUrlError> {
        let redacted = redact::redacted_url(url);
        let invalid = |reason: String| PgUrlError::Invalid {
            url: redacted.clone(),
            reason,
        };
        let mut parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let flagged = take_pooler_flag(&mut parsed).map_err(|reason| PgUrlError::Parameter {
            url: redacted.clone(),
            reason,
        })?;
        if parsed.query_pairs().any(|(k, _)| k == SQLX_CACHE_PARAM) {
            return Err(PgUrlError::Parameter {
                url: redacted,
                reason: format!(
                    "`{SQLX_CACHE_PARAM}` is set by DB_STATEMENT_CACHE \
                     (pool.statement_cache_capacity), not in the URL"
                ),
            });
        }
        let options = PgConnectOptions::from_url(&parsed).map_err(|e| invalid(e.to_string()))?;
        let capacity = config.pool.statement_cache_capacity;
        let behind_pooler = flagged || capacity == 0;
        let options = if behind_pooler {
            // A start-up `options` parameter is refused by PgBouncer 1.18
            // ("unsupported startup parameter"): the deadline goes per query.
            options.statement_cache_capacity(0)
        } else {
            options
                .statement_cache_capacity(capacity)
                .options([("statement_timeout", millis(config.query_timeout))])
        };
        Ok(Self {
            options,
            behind_pooler,
            query_timeout: config.query_timeout,
            redacted,
        })
    }

    /// sqlx's connect options (for a manager, pass the target itself to
    /// `connect_target`; change them with [`map_options`](Self::map_options)).
    ///
    /// A plain sqlx pool built from these is fine on a direct connection;
    /// behind a pooler it is not safe: sqlx 0.8 still names its prepared
    /// statements when the cache is off, and only the manager's per-query
    /// transaction clears them (see the module docs).
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// The target with its connect options changed by `f`, e.g. to set
    /// `application_name`.
    pub fn map_options(mut self, f: impl FnOnce(PgConnectOptions) -> PgConnectOptions) -> Self {
        self.options = f(self.options);
        self
    }

    /// Whether pooler-safe mode is on (`?pgbouncer=true` or a statement
    /// cache of 0).
    pub fn behind_pooler(&self) -> bool {
        self.behind_pooler
    }

    /// The URL with its password hidden, for messages.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// The per-query deadline strategy this target needs.
    pub fn statement_deadline(&self) -> PgStatementDeadline {
        if self.behind_pooler {
            PgStatementDeadline::PerQuery
        } else {
            PgStatementDeadline::Session {
                timeout: self.query_timeout,
            }
        }
    }
}

/// Removes `pgbouncer=…` from the URL's parameters; whether it said true.
fn take_pooler_flag(url: &mut Url) -> Result<bool, String> {
    let mut flagged = false;
    let mut rest = Vec::new();
    for (k, v) in url.query_pairs() {
        if k != POOLER_PARAM {
            rest.push((k.into_owned(), v.into_owned()));
            continue;
        }
        flagged = match v.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(format!(
                    "{POOLER_PARAM}=`{other}` is neither true nor false"
                ))
            }
        };
    }
    if rest.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(rest);
    }
    Ok(flagged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, cache: usize) -> Result<PgTarget, PgUrlError> {
        let mut c = ManagerConfig::default();
        c.pool.statement_cache_capacity = cache;
        c.query_timeout = Duration::from_millis(1500);
        PgTarget::from_url(url, &c)
    }

    #[test]
    fn a_direct_url_gets_the_session_deadline_and_the_cache() {
        let t = target("postgres://u:pw@db:5432/app?sslmode=disable", 100).unwrap();
        assert!(!t.behind_pooler());
        assert_eq!(t.options().get_options(), Some("-c statement_timeout=1500"));
        assert!(matches!(
            t.statement_deadline(),
            PgStatementDeadline::Session { timeout } if timeout == Duration::from_millis(1500)
        ));
        assert_eq!(
            t.redacted_url(),
            "postgres://u:***@db:5432/app?sslmode=disable"
        );
    }

    #[test]
    fn the_pooler_flag_is_taken_out_and_turns_the_cache_off() {
        for url in [
            "postgres://u@db:6432/app?pgbouncer=true",
            "postgres://u@db:6432/app?sslmode=disable&pgbouncer=TRUE",
        ] {
            let t = target(url, 100).unwrap();
            assert!(t.behind_pooler(), "{url}");
            assert_eq!(t.options().get_options(), None, "{url}");
            assert!(!t.options().to_url_lossy().as_str().contains("pgbouncer"));
            assert!(t
                .options()
                .to_url_lossy()
                .as_str()
                .contains("statement-cache-capacity=0"));
            assert!(matches!(
                t.statement_deadline(),
                PgStatementDeadline::PerQuery
            ));
        }
        assert!(!target("postgres://u@db/app?pgbouncer=false", 100)
            .unwrap()
            .behind_pooler());
    }

    #[test]
    fn a_statement_cache_of_zero_is_pooler_safe_mode() {
        let t = target("postgres://u@db/app", 0).unwrap();
        assert!(t.behind_pooler());
        assert_eq!(t.options().get_options(), None);
    }

    #[test]
    fn bad_urls_name_the_problem_without_the_password() {
        for (url, needle) in [
            (
                "postgres://u:pw@db/app?pgbouncer=maybe",
                "pgbouncer=`maybe`",
            ),
            (
                "postgres://u:pw@db/app?statement-cache-capacity=0",
                "DB_STATEMENT_CACHE",
            ),
            ("postgres://u:pw@db:port/app", "not a usable"),
        ] {
            let err = target(url, 100).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains(":pw@"), "{err}");
        }
    }

    #[test]
    fn timeouts_are_whole_milliseconds_never_zero() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_secs(u64::MAX / 2)), i32::MAX as u64);
    }
}
