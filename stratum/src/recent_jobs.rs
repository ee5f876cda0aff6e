//! The window of jobs a server accepts shares for, and per-job duplicate detection.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// How many jobs since the last `clean_jobs` are kept: miners may submit for a job a few
/// notifies old, and pools accept those until a clean job supersedes them.
pub const JOBS_KEPT: usize = 16;

/// Jobs valid for new shares: everything since the last clean job, newest last.
#[derive(Debug)]
pub struct RecentJobs<J> {
    jobs: VecDeque<(String, Arc<J>)>,
}

impl<J> Default for RecentJobs<J> {
    fn default() -> Self {
        RecentJobs {
            jobs: VecDeque::new(),
        }
    }
}

impl<J> RecentJobs<J> {
    /// Add a job; a clean job makes every older one stale.
    pub fn insert(&mut self, job_id: String, clean_jobs: bool, job: Arc<J>) {
        if clean_jobs {
            self.jobs.clear();
        }
        self.jobs.push_back((job_id, job));
        while self.jobs.len() > JOBS_KEPT {
            self.jobs.pop_front();
        }
    }

    pub fn get(&self, job_id: &str) -> Option<Arc<J>> {
        self.jobs
            .iter()
            .rev()
            .find(|(id, _)| id == job_id)
            .map(|(_, j)| j.clone())
    }

    pub fn latest(&self) -> Option<Arc<J>> {
        self.jobs.back().map(|(_, j)| j.clone())
    }

    pub fn clear(&mut self) {
        self.jobs.clear();
    }
}

/// Fingerprints of the shares accepted for one job: a repeat is a duplicate.
#[derive(Debug, Default)]
pub struct DuplicateFilter {
    seen: Mutex<HashSet<u128>>,
}

impl DuplicateFilter {
    /// Record a share's fingerprint ([`crate::ShareHash::fingerprint`]); false when it was
    /// already submitted.
    pub fn first_submission(&self, fingerprint: u128) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_jobs_supersede_and_the_window_is_bounded() {
        let mut r = RecentJobs::default();
        r.insert("a".into(), true, Arc::new(1));
        r.insert("b".into(), false, Arc::new(2));
        assert_eq!(*r.get("a").unwrap(), 1);
        r.insert("c".into(), true, Arc::new(3));
        assert!(r.get("a").is_none() && r.get("b").is_none());
        for i in 0..40 {
            r.insert(format!("j{i}"), false, Arc::new(i));
        }
        assert!(r.get("j23").is_none());
        assert_eq!(*r.get("j24").unwrap(), 24);
        assert_eq!(*r.latest().unwrap(), 39);
    }

    #[test]
    fn duplicates_are_caught() {
        let d = DuplicateFilter::default();
        assert!(d.first_submission(7));
        assert!(!d.first_submission(7));
        assert!(d.first_submission(8));
    }
}
