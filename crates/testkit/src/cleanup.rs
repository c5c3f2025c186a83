//! Asynchronous clean-up that runs when a test ends, passed or failed.

use std::{future::Future, pin::Pin};

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Runs its job when dropped, on a runtime of its own in a thread of its
/// own (a `Drop` cannot await, and the test's runtime may be shutting
/// down), and waits for it: the clean-up is done when the test returns.
#[must_use = "the clean-up runs when this is dropped"]
pub struct Cleanup(Option<Job>);

impl Cleanup {
    /// `job` runs when this is dropped.
    pub fn new<F>(job: impl FnOnce() -> F + Send + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self(Some(Box::new(move || Box::pin(job()))))
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(job) = self.0.take() else { return };
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up")
                .block_on(job())
        })
        .join();
    }
}
