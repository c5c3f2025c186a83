//! [`ChangesConfig`]: where and how a database's change stream is
//! consumed, the names derived from the namespace, and the SQL that marks
//! our own writes ([`own_write_sql`]).

use std::time::Duration;

/// Where and how to consume a database's change stream.
#[derive(Debug, Clone)]
pub struct ChangesConfig {
    /// A direct connection URL (not through a transaction-mode pooler,
    /// which cannot carry a replication session): `DIRECT_URL` when set,
    /// else `DATABASE_URL`.
    pub url: String,
    /// The replication slot's name (default `<namespace>_<database>_changes`).
    pub slot: String,
    /// The publication's name (default: the slot's).
    pub publication: String,
    /// The prefix of the logical message that marks our own writes
    /// (default `<namespace>.own`; see [`own_write_sql`]).
    pub own_prefix: String,
    /// How often a standby instance tries the leader lock, and how long a
    /// failed session waits before the next (default 1 s: another instance
    /// takes over within a few seconds of the leader's death).
    pub retry: Duration,
    /// How often feedback is sent and the lag measured (default 1 s).
    pub status_interval: Duration,
}

impl ChangesConfig {
    /// The defaults for `url`, with names from `namespace` (the shared
    /// level's `REDIS_NAMESPACE`) and the database's name: slots are
    /// named across the whole PostgreSQL cluster, one per database.
    /// Lower-cased, reduced to the characters a slot name allows, and cut
    /// to PostgreSQL's 63 (with a hash of the whole when cut).
    pub fn new(url: impl Into<String>, namespace: &str) -> Self {
        let url = url.into();
        let database = url
            .split('?')
            .next()
            .and_then(|u| u.rsplit_once('/'))
            .map(|(_, db)| db)
            .unwrap_or("");
        let name = slot_name(namespace, database);
        Self {
            url,
            publication: name.clone(),
            own_prefix: format!("{}.own", sanitize(namespace)),
            slot: name,
            retry: Duration::from_secs(1),
            status_interval: Duration::from_secs(1),
        }
    }
}

/// Lower-case letters, digits and `_` only.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `<namespace>_<database>_changes`, at most 63 characters.
fn slot_name(namespace: &str, database: &str) -> String {
    let full = format!("{}_{}_changes", sanitize(namespace), sanitize(database));
    if full.len() <= 63 {
        return full;
    }
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{}_{hash:016x}", &full[..46])
}

/// `sql` (one INSERT, UPDATE or DELETE with a RETURNING clause) made to
/// emit our own-write mark in its transaction, for PostgreSQL: the
/// consumer skips the transactions that carry it. The mark is emitted once
/// per row the statement returns, so a statement that changed nothing
/// emits none. `prefix` is [`ChangesConfig::own_prefix`]; only
/// `[A-Za-z0-9_.:-]` are kept of it.
pub fn own_write_sql(sql: &str, prefix: &str) -> String {
    let prefix: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_.:-".contains(*c))
        .collect();
    format!(
        "WITH w AS ({sql}) SELECT w.* FROM w \
         WHERE pg_logical_emit_message(true, '{prefix}', '') IS NOT NULL"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_namespace_and_the_database_and_fit_postgres() {
        let c = ChangesConfig::new("postgres://u:p@h:5432/GistFans?sslmode=disable", "my-app");
        assert_eq!(c.slot, "my_app_gistfans_changes");
        assert_eq!(c.publication, c.slot);
        assert_eq!(c.own_prefix, "my_app.own");
        let long = ChangesConfig::new(format!("postgres://h/{}", "d".repeat(80)), "ns");
        assert_eq!(long.slot.len(), 63);
        let other = ChangesConfig::new(format!("postgres://h/{}e", "d".repeat(80)), "ns");
        assert_ne!(long.slot, other.slot, "cut names stay distinct");
    }
}
