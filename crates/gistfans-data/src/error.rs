//! Errors of the data layer. The server maps each to an HTTP status in one place.

/// What can go wrong in the data layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A referenced row does not exist.
    #[error("{what} {id} does not exist")]
    NotFound {
        /// `user` or `post`.
        what: &'static str,
        /// The id asked for.
        id: i64,
    },
    /// The write conflicts with the current state (already starred, already following).
    #[error("{0}")]
    Conflict(String),
    /// The request cannot be carried out as asked (following yourself).
    #[error("{0}")]
    Invalid(String),
    /// The connection manager refused or failed (timeouts, circuit open, query errors).
    #[error(transparent)]
    Db(#[from] hpdb::Error),
    /// Connecting, migrating or seeding failed.
    #[error("{context}: {source}")]
    Setup {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DataError {
    /// Wraps a set-up failure with what was being done.
    pub fn setup(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        DataError::Setup {
            context: context.into(),
            source: Box::new(source),
        }
    }
}
