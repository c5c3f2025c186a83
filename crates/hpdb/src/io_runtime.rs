//! The runtime database work runs on: threads of hpdb's own, so that a
//! database's answer is read when it arrives, not when the application's
//! runtime gets round to it.
//!
//! Why: on a saturated server every ready HTTP connection is a task in the
//! application runtime's queue, and a task woken by its database socket
//! waits behind all of them (tokio's queue is first in, first out, and has
//! no priorities). A query pays that wait once per round trip and holds its
//! connection meanwhile. Here every step that touches a connection (taking
//! it, opening it, the closure's statements, giving it back) runs as a task
//! on these threads, which the kernel wakes the moment a socket is
//! readable; connections are opened here too, so their sockets belong to
//! this runtime's reactor. Measured at 256 users on two cores (BENCHMARKS,
//! "The pooler's price found, and hpdb's I/O threads"): page p99 49-70 ms
//! against 189-271 ms on the application's runtime, writes' p99 halved,
//! throughput within the noise (through PgBouncer ~10 % lower, p99 a
//! fifth); when idle, each uncached query pays two thread wake-ups (+15 µs
//! on SQLite, +68 µs on PostgreSQL in `benches/overhead.rs`).
//!
//! One process-wide runtime for every manager, never shut down (like
//! sqlx's SQLite worker threads, it outlives the managers: a pool a caller
//! kept still works). A manager built with `DB_IO_THREADS=false` runs all
//! of it on the caller's runtime instead. Written by hand: no crate offers
//! this, and a second runtime is the one lever tokio gives.

use std::{future::Future, sync::OnceLock};

use tokio::runtime::{Builder, Handle};
use tokio_util::task::AbortOnDropHandle;

/// Threads of the runtime, at most: one can read answers while another
/// decodes rows; past a few, database work would crowd out the
/// application's own.
const MAX_THREADS: usize = 4;

/// The runtime's handle, built on first use; `None` if it could not be
/// built (then work runs on the caller's runtime, and that was logged).
fn handle() -> Option<&'static Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE.get_or_init(start).as_ref()
}

fn start() -> Option<Handle> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_THREADS);
    let built = Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("hpdb-io")
        .enable_all()
        .build();
    match built {
        Ok(runtime) => {
            let handle = runtime.handle().clone();
            // Lives as long as the process: a runtime dropped here would
            // end every connection opened on it.
            std::mem::forget(runtime);
            Some(handle)
        }
        Err(e) => {
            tracing::error!(error = %e, "hpdb: cannot start the I/O threads; database work runs on the caller's runtime");
            None
        }
    }
}

/// Runs `work` on the I/O runtime when `on` (else here) and returns its
/// output. Dropping the returned future aborts the work (it is dropped on
/// an I/O thread, as a cancelled query would be here); a panic in it
/// resumes in the caller.
pub(crate) async fn run<T, F>(on: bool, work: F) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let Some(handle) = handle().filter(|_| on) else {
        return work.await;
    };
    match AbortOnDropHandle::new(handle.spawn(work)).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only an abort (ours, on drop: not awaited any more) or the
        // runtime's shutdown (never: it is leaked) cancels the task.
        Err(e) => unreachable!("the I/O runtime cancelled a task: {e}"),
    }
}

/// Calls `f` inside the I/O runtime's context when `on`, so that what it
/// spawns (sqlx's pool maintenance, say) runs there.
pub(crate) fn enter<R>(on: bool, f: impl FnOnce() -> R) -> R {
    match handle().filter(|_| on) {
        Some(h) => {
            let _guard = h.enter();
            f()
        }
        None => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_io_threads_and_a_dropped_call_aborts_it() {
        let name = run(true, async {
            std::thread::current().name().map(str::to_owned)
        })
        .await;
        assert_eq!(name.as_deref(), Some("hpdb-io"));
        let here = run(false, async {
            std::thread::current().name().map(str::to_owned)
        })
        .await;
        assert_ne!(here.as_deref(), Some("hpdb-io"));

        // A call dropped mid-way: its work is dropped, not left running.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let _ = self.0.take().map(|tx| tx.send(()));
            }
        }
        let guard = Dropped(Some(tx));
        let call = run(true, async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        let _ = tokio::time::timeout(std::time::Duration::from_millis(20), call).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("the aborted work was dropped")
            .expect("dropped, not forgotten");
    }
}
