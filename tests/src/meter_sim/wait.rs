//! Waiting for a published value (meter readings) with a deadline, without sleeping blindly.

use std::fmt::Debug;
use std::time::Duration;

use tokio::sync::watch;

/// Wait until the receiver's value satisfies `pred` (checking the current value first), or fail
/// after `within` with the last value seen. Also fails if the sender is gone.
pub async fn wait_for<T: Clone + Debug>(
    rx: &mut watch::Receiver<T>,
    within: Duration,
    mut pred: impl FnMut(&T) -> bool,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        {
            let v = rx.borrow_and_update();
            if pred(&v) {
                return Ok(v.clone());
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Err(_) => {
                return Err(format!(
                    "condition not met within {within:?}; last value: {:?}",
                    *rx.borrow()
                ))
            }
            Ok(Err(_)) => {
                return Err(format!(
                    "sender dropped (task ended or panicked); last value: {:?}",
                    *rx.borrow()
                ))
            }
            Ok(Ok(())) => {}
        }
    }
}
