//! Recent jobs per upstream link, for validating shares and detecting duplicates.

use blgv_stratum::{Job, Target};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many jobs since the last `clean_jobs` are kept: miners may submit for a job a few
/// notifies old, and pools accept those until a clean job supersedes them.
pub const JOBS_KEPT: usize = 16;

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
    /// Fingerprints of accepted shares' hashes: a repeat is a duplicate.
    seen: Mutex<HashSet<u128>>,
}

impl ActiveJob {
    pub fn new(job: Job, seq: u64, upstream_target: Target) -> ActiveJob {
        let notify_line = Arc::from(blgv_stratum::line::notify(&job));
        ActiveJob {
            job,
            seq,
            received_at: Instant::now(),
            upstream_target,
            notify_line,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Record a share's fingerprint; false when it was already submitted.
    pub fn first_submission(&self, fingerprint: u128) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(fingerprint)
    }

    /// The notify line with `clean_jobs` forced on, for a miner that just changed extranonce and
    /// must drop what it was hashing.
    pub fn clean_notify_line(&self) -> String {
        let mut job = self.job.clone();
        job.clean_jobs = true;
        blgv_stratum::line::notify(&job)
    }
}

/// Jobs valid for new shares: everything since the last clean job, newest last.
#[derive(Debug, Default)]
pub struct JobStore {
    jobs: VecDeque<Arc<ActiveJob>>,
}

impl JobStore {
    pub fn insert(&mut self, job: Arc<ActiveJob>) {
        if job.job.clean_jobs {
            self.jobs.clear();
        }
        self.jobs.push_back(job);
        while self.jobs.len() > JOBS_KEPT {
            self.jobs.pop_front();
        }
    }

    pub fn get(&self, job_id: &str) -> Option<Arc<ActiveJob>> {
        self.jobs
            .iter()
            .rev()
            .find(|j| j.job.job_id == job_id)
            .cloned()
    }

    pub fn latest(&self) -> Option<Arc<ActiveJob>> {
        self.jobs.back().cloned()
    }
}
