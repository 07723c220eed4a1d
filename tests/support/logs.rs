//! What outpost logs, captured: [`Captured::global`] installs a JSON subscriber for the whole
//! test binary and keeps every line in memory, so a test can wait for or check an access log line
//! (target `outpost::access`, written when a response body has been sent or abandoned).

use std::sync::{Arc, Mutex, OnceLock};

/// A log sink: every line outpost logs, as JSON.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The access log lines (target `outpost::access`) so far about requests to `upstream`
    /// (the fake's `host()`, unique to a test).
    pub fn access_lines(&self, upstream: &str) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON log line"))
            .filter(|v| v["target"] == "outpost::access" && v["fields"]["upstream"] == upstream)
            .collect()
    }

    /// The process-wide log sink of this test binary (JSON, outpost's own debug lines included).
    /// Global rather than per-thread: tracing caches per call site whether anyone listens, which
    /// a thread-local subscriber cannot reliably change while other tests run.
    pub fn global() -> &'static Captured {
        static LOGS: OnceLock<Captured> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Captured::default();
            let writer = logs.clone();
            tracing_subscriber::fmt()
                .json()
                .with_env_filter("info,server=debug,upstream=debug,storage=debug,outpost=debug")
                .with_writer(move || writer.clone())
                .init();
            logs
        })
    }
}
