//! Recent jobs per upstream link, for validating shares and detecting duplicates.

use blgv_stratum::{DuplicateFilter, Job, RecentJobs, Target};
use std::sync::Arc;
use std::time::Instant;

/// A job as the proxy serves it.
#[derive(Debug)]
pub struct ActiveJob {
    pub job: Job,
    /// Position in the link's job sequence (vardiff uses it to know which difficulty applied).
    pub seq: u64,
    pub received_at: Instant,
    /// The upstream's target when the job arrived: the pool judges the job's shares by it.
    pub upstream_target: Target,
    /// The notify line sent to miners, serialized once for all of them.
    pub notify_line: Arc<str>,
    /// The same with `clean_jobs` forced on, for a miner that just changed extranonce (or
    /// missed events) and must drop what it was hashing. Also serialized once.
    pub clean_notify_line: Arc<str>,
    /// Accepted shares' fingerprints: a repeat is a duplicate.
    seen: DuplicateFilter,
}

impl ActiveJob {
    pub fn new(job: Job, seq: u64, upstream_target: Target) -> ActiveJob {
        let notify_line: Arc<str> = Arc::from(blgv_stratum::line::notify(&job));
        let clean_notify_line = if job.clean_jobs {
            notify_line.clone()
        } else {
            let mut clean = job.clone();
            clean.clean_jobs = true;
            Arc::from(blgv_stratum::line::notify(&clean))
        };
        ActiveJob {
            job,
            seq,
            received_at: Instant::now(),
            upstream_target,
            notify_line,
            clean_notify_line,
            seen: DuplicateFilter::default(),
        }
    }

    /// Record a share's fingerprint; false when it was already submitted.
    pub fn first_submission(&self, fingerprint: u128) -> bool {
        self.seen.first_submission(fingerprint)
    }
}

/// The proxy's window of jobs per link.
pub type JobStore = RecentJobs<ActiveJob>;
