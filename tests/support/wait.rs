//! Bounded waits. A test that waits for something (a counter reaching N, a file appearing, a
//! process listening) names it and gives up after a deadline, failing with what it was waiting
//! for and what it saw last, instead of hanging or asserting on a state that a sleep made likely.
//!
//! Deadlines are measured on the real clock (`std::time::Instant`), so they hold also while
//! tokio's clock is paused; the polling interval is a tokio sleep, which under a paused clock
//! auto-advances at once (then the wait polls without pausing, still up to the real deadline).
//!
//! ```text
//! wait_until("the upstream to send 4 MiB", DEADLINE, || fake.blob_bytes_sent() >= 4 << 20).await;
//! let body = within("the rest of the body", DEADLINE, pull.finish()).await;
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// The deadline for things that take milliseconds when all is well: generous, so that a loaded
/// machine does not fail a test, and only ever spent in full when the test fails anyway.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `condition` holds; panics naming `what` once `deadline` has passed without it.
pub async fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    wait_for(what, deadline, || {
        if condition() {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await
}

/// Polls `probe` until it answers `Ok`, and returns that; panics naming `what` and the last
/// `Err` (what was seen instead) once `deadline` has passed.
pub async fn wait_for<T, D: Debug>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<T, D>,
) -> T {
    let started = Instant::now();
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if started.elapsed() >= deadline {
            panic!("gave up after {deadline:?} waiting for {what}; last seen: {last:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_for`] with an asynchronous probe (e.g. a scrape of `/metrics`).
pub async fn wait_for_async<T, D, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    D: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, D>>,
{
    let started = Instant::now();
    loop {
        let last = match within(what, deadline, probe()).await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if started.elapsed() >= deadline {
            panic!("gave up after {deadline:?} waiting for {what}; last seen: {last:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Awaits `future`, panicking naming `what` if it has not completed after `deadline` (on tokio's
/// clock: do not use it while that clock is paused).
pub async fn within<T>(what: &str, deadline: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(deadline, future)
        .await
        .unwrap_or_else(|_| panic!("gave up after {deadline:?} waiting for {what}"))
}
