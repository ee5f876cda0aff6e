//! The async runtime the proxy runs on, sized by `proxy.threads`.
//!
//! Two shapes, each better at one thing (measured on the 2-core development VM with the load
//! harness on the same cores; docs/PERFORMANCE.md, "Where the goals stand, and the machine's
//! floor"):
//!
//! * **One worker per core** (`threads = 0`, the default): a work-stealing runtime. When one
//!   worker is descheduled, another runs the ready miners, so the reply tail stays short on a
//!   busy box: p99 1.2–1.9 ms at 60,000 shares/s.
//! * **One event loop** (`threads = 1`): every miner on one thread. A share costs fewer
//!   wake-ups: on a work-stealing runtime, each batch of ready sockets one worker takes from
//!   epoll also wakes an idle worker to come and steal, and on a small box that costs more than
//!   the share itself. 15–17 µs of CPU per share at 30,000/s instead of 19.6–19.8 µs, and
//!   fan-out no slower; but a descheduled loop holds every miner, so on a shared 2-core box p99
//!   at 60,000/s is about 12 ms. The frugal choice for a box that does little else.
//!
//! Blocking work (SQLite, the energy outbox) runs on tokio's blocking pool either way, so it
//! never stalls the event loop.

use crate::config::ProxySection;

/// More worker threads than this is a typo, not a box (validated as `proxy.threads`).
pub const MAX_THREADS: usize = 256;

/// The runtime for `proxy.threads`: 1 is a current-thread runtime (one event loop on the thread
/// that calls `block_on`), N > 1 a multi-thread runtime with N workers, 0 one worker per core.
pub fn build(section: &ProxySection) -> std::io::Result<tokio::runtime::Runtime> {
    match section.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                builder.worker_threads(n);
            }
            builder.enable_all().build()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::runtime::RuntimeFlavor;

    fn section(threads: usize) -> ProxySection {
        ProxySection {
            threads,
            ..ProxySection::default()
        }
    }

    #[test]
    fn one_thread_is_a_single_event_loop() {
        let rt = build(&section(1)).expect("runtime");
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        assert_eq!(rt.metrics().num_workers(), 1);
        // Spawned tasks run on the thread that blocks on the runtime: no other thread exists
        // to run them, which is the point.
        let caller = std::thread::current().id();
        let ran_on = rt.block_on(async {
            tokio::spawn(async { std::thread::current().id() })
                .await
                .expect("task")
        });
        assert_eq!(ran_on, caller);
    }

    #[test]
    fn more_threads_are_work_stealing_workers() {
        let rt = build(&section(3)).expect("runtime");
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(rt.metrics().num_workers(), 3);
    }

    #[test]
    fn zero_means_one_worker_per_core() {
        let rt = build(&section(0)).expect("runtime");
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(rt.metrics().num_workers(), cores);
    }

    #[test]
    fn the_default_is_one_worker_per_core() {
        assert_eq!(ProxySection::default().threads, 0);
    }
}
