//! The log's way to stderr: requests append their formatted lines to a shared buffer, and a
//! thread of its own writes the buffer out in batches. A request never waits for stderr (a full
//! pipe, a stalled journald): when the buffer is full, its line is dropped and counted.
//!
//! The writer thread is woken only when a line lands in an empty buffer, and then lets lines
//! gather for [`GATHER`] before it writes them all with one `write`. Under load that is one
//! wake-up per [`GATHER`] instead of one per line: with a wake-up per line (tracing-appender's
//! channel), waking and switching to the writer took about a fifth of outpost's CPU in a
//! manifest load of 30 000 requests a second (BENCHMARKS.md, issue 18). An idle server's writer
//! sleeps until the next line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer lets lines gather after the first one of a batch: the most a line waits.
pub const GATHER: Duration = Duration::from_millis(20);

/// A queue of log lines for one writer thread.
#[derive(Clone)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a line lands in an empty buffer, and at close.
    wake: Condvar,
    /// The most bytes the buffer holds; a line that does not fit is dropped.
    capacity: usize,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    closing: bool,
}

/// Writes out what is queued and stops the writer thread when dropped: hold it to the end of
/// the process.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogQueue {
    /// A queue of at most `capacity` bytes and the thread that writes it to `out`.
    pub fn start(
        capacity: usize,
        out: impl Write + Send + 'static,
        thread_name: &str,
    ) -> std::io::Result<(LogQueue, Guard)> {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || writer.write_out(out))?;
        let guard = Guard {
            shared: shared.clone(),
            thread: Some(thread),
        };
        Ok((LogQueue { shared }, guard))
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Queues `line` (one whole formatted event), or drops it when the buffer is full.
    fn push(&self, line: &[u8]) {
        let mut state = self.shared.lock();
        if state.buf.len() + line.len() > self.shared.capacity {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = state.buf.is_empty();
        state.buf.extend_from_slice(line);
        drop(state);
        if first {
            self.shared.wake.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: waits for a first line, lets more gather, writes them all, again until
    /// closed; then writes what is left.
    fn write_out(&self, mut out: impl Write) {
        let mut batch = Vec::new();
        loop {
            let mut state = self.lock();
            while state.buf.is_empty() && !state.closing {
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.buf.is_empty() {
                return; // closing, and everything written
            }
            if !state.closing {
                drop(state);
                std::thread::sleep(GATHER);
                state = self.lock();
            }
            std::mem::swap(&mut state.buf, &mut batch);
            drop(state);
            // A failed write (stderr closed) loses this batch; there is nowhere to report it.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            // A burst's buffer is not kept for good.
            batch.shrink_to(KEEP);
        }
    }
}

/// The buffer the writer keeps between batches, at most.
const KEEP: usize = 64 << 10;

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's line per `write` (tracing-subscriber's fmt layer writes each event whole).
impl Write for &LogQueue {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer per event that is only a reference: no allocation, no count on the hot path.
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogQueue {
    type Writer = &'a LogQueue;

    fn make_writer(&'a self) -> &'a LogQueue {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` into a shared buffer, with the number of `write` calls.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut sink = self.0.lock().unwrap();
            sink.0.extend_from_slice(bytes);
            sink.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_in_batches_and_all_of_them_at_the_end() {
        let sink = Sink::default();
        let (queue, guard) = LogQueue::start(1 << 20, sink.clone(), "test-log").unwrap();
        let mut writer = &queue;
        for i in 0..1000 {
            writeln!(writer, "line {i}").unwrap();
        }
        drop(guard);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
        // 1000 lines queued within a few GATHER periods: a handful of writes, not one per line.
        assert!(writes < 100, "{writes} writes for 1000 lines");
        assert_eq!(queue.dropped(), 0);
    }

    #[test]
    fn a_line_that_does_not_fit_is_dropped_and_counted_never_split() {
        /// Blocks every write until released: a stderr whose reader stopped.
        struct Stalled(Arc<(Mutex<bool>, Condvar)>, Sink);
        impl Write for Stalled {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                self.1.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let out = Stalled(gate.clone(), sink.clone());
        let (queue, guard) = LogQueue::start(100, out, "test-log").unwrap();
        let mut writer = &queue;
        // The first line goes to the writer, which then blocks in `write`.
        writer.write_all(b"first\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !queue.shared.lock().buf.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never took a batch"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 0..20 {
            writer.write_all(b"0123456789\n").unwrap(); // 11 bytes: 9 fit in 100
        }
        assert_eq!(queue.dropped(), 11);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().0.clone()).unwrap();
        assert_eq!(text, format!("first\n{}", "0123456789\n".repeat(9)));
    }
}
