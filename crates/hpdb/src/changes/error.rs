//! [`ChangeError`]: why a change-stream session ended (the consumer
//! retries; see `consumer`).

/// Why the change stream stopped (it retries, see `consumer`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The database cannot stream logical changes; the reason says what to change.
    #[error("logical replication unavailable: {0}")]
    Unavailable(String),
    /// A statement on the ordinary connection failed.
    #[error("change stream, {phase}: {source}")]
    Sql {
        /// What was being done.
        phase: &'static str,
        /// The database's error.
        source: sqlx::Error,
    },
    /// The replication session failed.
    #[error("replication session: {0}")]
    Replication(String),
    /// A message could not be decoded.
    #[cfg(feature = "changes")]
    #[error(transparent)]
    Decode(#[from] super::pgoutput::DecodeError),
    /// PostgreSQL invalidated or dropped the slot under the consumer.
    #[error("replication slot lost: {0}")]
    SlotLost(String),
}

impl ChangeError {
    #[cfg(feature = "changes")]
    pub(crate) fn sql(phase: &'static str, source: sqlx::Error) -> Self {
        Self::Sql { phase, source }
    }

    #[cfg(feature = "changes")]
    pub(crate) fn replication(e: impl std::fmt::Display) -> Self {
        Self::Replication(e.to_string())
    }
}
