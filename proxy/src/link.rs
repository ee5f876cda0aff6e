//! One live upstream connection as miners see it: the extranonce it granted, its version mask,
//! its difficulty and its jobs. A new connection (reconnect, failover, `set_extranonce`) is a new
//! `Link` with a new epoch; shares hashed for an older epoch are stale.

use crate::extranonce_layout::ExtranonceLayout;
use crate::jobs::{ActiveJob, JobStore};
use blgv_stratum::{Difficulty, Extranonce, Target};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Debug)]
pub struct Link {
    pub epoch: u64,
    pub pool_index: usize,
    pub pool_label: String,
    pub extranonce1: Extranonce,
    pub layout: ExtranonceLayout,
    state: RwLock<LinkState>,
}

/// What the upstream may change during the link's life.
#[derive(Debug)]
pub struct LinkState {
    /// Bits the upstream lets us roll (0 = none).
    pub version_mask: u32,
    pub difficulty: Difficulty,
    pub target: Target,
    pub jobs: JobStore,
    pub next_job_seq: u64,
}

impl Link {
    pub fn new(
        epoch: u64,
        pool_index: usize,
        pool_label: String,
        extranonce1: Extranonce,
        layout: ExtranonceLayout,
        version_mask: u32,
        difficulty: Difficulty,
    ) -> Link {
        Link {
            epoch,
            pool_index,
            pool_label,
            extranonce1,
            layout,
            state: RwLock::new(LinkState {
                version_mask,
                difficulty,
                target: difficulty.to_target(),
                jobs: JobStore::default(),
                next_job_seq: 1,
            }),
        }
    }

    /// Poisoning cannot leave LinkState inconsistent (every write is a single assignment or a
    /// JobStore insert), so a poisoned lock is simply taken over.
    pub fn read(&self) -> RwLockReadGuard<'_, LinkState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, LinkState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn job(&self, job_id: &str) -> Option<Arc<ActiveJob>> {
        self.read().jobs.get(job_id)
    }

    pub fn latest_job(&self) -> Option<Arc<ActiveJob>> {
        self.read().jobs.latest()
    }

    pub fn difficulty(&self) -> Difficulty {
        self.read().difficulty
    }

    pub fn version_mask(&self) -> u32 {
        self.read().version_mask
    }
}
