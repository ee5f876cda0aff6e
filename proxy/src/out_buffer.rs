//! The buffer a session writes its replies into during one loop turn, lent by the worker
//! thread.
//!
//! A session's output lives only from the line (or event) that produced it to the flush at the
//! end of the same turn. A `String` kept per session would hold its capacity for the life of an
//! idle miner (memory per miner is a goal of its own); allocating one per turn would put an
//! allocation on every share's path. So each worker thread keeps one spare buffer: a turn
//! borrows it on its first write and gives it back after its flush. A turn that waits in the
//! middle (rare: a subscribe waiting for a channel slot) simply leaves the next turn on that
//! thread to allocate its own, which then becomes the spare.

use std::cell::Cell;

/// A buffer that grew past this (the first clean job with a long merkle branch, a reconnect
/// batch) is freed rather than kept as the spare.
const KEEP_AT_MOST: usize = 16 * 1024;

thread_local! {
    static SPARE: Cell<String> = const { Cell::new(String::new()) };
}

/// The thread's spare buffer (empty), or a new one if another session has it.
pub fn borrow() -> String {
    SPARE.with(Cell::take)
}

/// Gives a buffer back to the thread once its bytes are written.
pub fn give_back(mut buf: String) {
    if buf.capacity() == 0 || buf.capacity() > KEEP_AT_MOST {
        return;
    }
    buf.clear();
    SPARE.with(|spare| spare.set(buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_buffer_goes_round_without_allocating_again() {
        let mut out = borrow();
        out.push_str("{\"id\":1,\"result\":true,\"error\":null}\n");
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        give_back(out);
        let again = borrow();
        assert!(again.is_empty());
        assert_eq!((again.as_ptr(), again.capacity()), (ptr, cap));
        // While it is lent, another borrower gets a buffer of its own.
        let other = borrow();
        assert_eq!(other.capacity(), 0);
        give_back(again);
    }

    #[test]
    fn a_huge_buffer_is_not_kept() {
        let _ = borrow();
        give_back(String::with_capacity(KEEP_AT_MOST + 1));
        assert_eq!(borrow().capacity(), 0);
    }
}
