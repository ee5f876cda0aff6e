//! Polling helper for tests: the simulated site is asynchronous, so tests wait for a condition
//! on stats snapshots instead of sleeping a fixed time.

use std::time::Duration;

/// Polls `f` every 20 ms until it returns true or `timeout` elapses.
///
/// Returns whether the condition became true. `f` is checked once more at the deadline, so a
/// condition that became true during the last sleep is not reported as a timeout.
pub async fn wait_until<F: Fn() -> bool>(timeout: Duration, f: F) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
