//! Running blocking store work through an [`Offload`] and awaiting its result, with no async
//! runtime of our own: the answer comes back on a oneshot channel.

use std::future::Future;

use futures_channel::oneshot;

use crate::content::Offload;

/// The job ended without an answer: it panicked, or the offload dropped it.
#[derive(Debug, thiserror::Error)]
#[error("a blocking store task ended without an answer (it panicked or was dropped)")]
pub struct Lost;

/// Runs `job` through `offload`; resolves to what it returned.
pub(crate) fn offload<T: Send + 'static>(
    offload: &dyn Offload,
    job: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, Lost>> {
    let (tx, rx) = oneshot::channel();
    offload.run(Box::new(move || {
        let _ = tx.send(job());
    }));
    async move { rx.await.map_err(|_| Lost) }
}
