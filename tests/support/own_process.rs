//! One test run alone in a child process, for measurements that cover the whole process.
//!
//! The tests of a test binary run in parallel threads of one process, so what `/proc/self`
//! reports (the resident set size, say) is the sum of every test running at the time. A test
//! that measures the process calls [`run`]: the test binary is started again, filtered to that
//! one test with `--exact` and an environment variable telling it that it is the child, and the
//! child runs the body with nothing else in its process. The parent asserts that the child ran
//! exactly that test and that it passed, and shows the child's output otherwise.

use std::process::{Command, Stdio};

/// Set, to the test's name, in the child's environment.
const CHILD: &str = "OUTPOST_TEST_OWN_PROCESS";

/// Runs `body` as test `name` (the test function's name, which is its name in the test binary)
/// alone in a child process of the current test binary.
pub fn run(name: &str, body: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some_and(|v| v == name) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(&exe)
        .args([name, "--exact", "--test-threads=1"])
        .env(CHILD, name)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {name}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // `1 passed` also catches a name that matches no test (`0 passed`, exit status 0).
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed;"),
        "`{name}` run alone in a child process failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
}
