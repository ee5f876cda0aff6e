//! From templates to jobs: long-poll the node, publish a job per template (clean when the
//! previous block changed), refresh on an interval, and keep miners busy from the last template
//! when the node goes away.

use crate::job::{CoinbasePolicy, PoolJob};
use crate::monitor::NodeMonitor;
use crate::stats::{bump, PoolStats};
use crate::template::{NodeError, PreparedTemplate, TemplateSource};
use blgv_stratum::RecentJobs;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

pub struct JobFeed {
    current: watch::Sender<Option<Arc<PoolJob>>>,
    recent: RwLock<RecentJobs<PoolJob>>,
    last_template: Mutex<Option<Arc<PreparedTemplate>>>,
    next_id: AtomicU64,
    policy: CoinbasePolicy,
    /// Woken when one of our blocks was accepted: fetch the next template at once.
    pub block_accepted: Notify,
    /// The last jobs published, newest last (for `/api/jobs`).
    history: Mutex<VecDeque<JobSummary>>,
}

/// How many published jobs `/api/jobs` lists.
pub const JOB_HISTORY: usize = 20;

/// A published job, as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobSummary {
    pub job_id: String,
    pub height: u32,
    pub prevhash: String,
    pub nbits: String,
    pub network_difficulty: f64,
    pub ntime: u32,
    pub clean_jobs: bool,
    pub coinbase_value_sats: u64,
    pub transactions: usize,
    pub has_witness_commitment: bool,
    pub created_at_ms: i64,
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl JobFeed {
    pub fn new(policy: CoinbasePolicy) -> JobFeed {
        JobFeed {
            current: watch::channel(None).0,
            recent: RwLock::new(RecentJobs::default()),
            last_template: Mutex::new(None),
            next_id: AtomicU64::new(1),
            policy,
            block_accepted: Notify::new(),
            history: Mutex::new(VecDeque::with_capacity(JOB_HISTORY)),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PoolJob>>> {
        self.current.subscribe()
    }

    pub fn get(&self, job_id: &str) -> Option<Arc<PoolJob>> {
        self.recent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(job_id)
    }

    pub fn latest(&self) -> Option<Arc<PoolJob>> {
        self.current.borrow().clone()
    }

    /// Publish a job for `template`; `clean_jobs` when it builds on a new previous block.
    pub fn publish(&self, template: Arc<PreparedTemplate>) -> Arc<PoolJob> {
        let clean = self
            .last_template
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(template.clone())
            .is_none_or(|last| last.prevhash != template.prevhash);
        let id = format!("{:x}", self.next_id.fetch_add(1, Relaxed));
        let job = Arc::new(PoolJob::build(
            id.clone(),
            template,
            clean,
            unix_now(),
            &self.policy,
        ));
        self.recent
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, clean, job.clone());
        {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            if history.len() == JOB_HISTORY {
                history.pop_front();
            }
            history.push_back(JobSummary {
                job_id: job.job.job_id.clone(),
                height: job.template.height,
                prevhash: job.template.prevhash_display.clone(),
                nbits: format!("{:08x}", job.template.nbits),
                network_difficulty: job.network_target.to_difficulty().as_f64(),
                ntime: job.job.ntime,
                clean_jobs: job.job.clean_jobs,
                coinbase_value_sats: job.template.coinbase_value,
                transactions: job.template.txids.len(),
                has_witness_commitment: job.template.witness_commitment.is_some(),
                created_at_ms: crate::monitor::unix_ms(),
            });
        }
        self.current.send_replace(Some(job.clone()));
        job
    }

    /// The last published jobs, newest first.
    pub fn history(&self) -> Vec<JobSummary> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.iter().rev().cloned().collect()
    }

    pub fn policy(&self) -> &CoinbasePolicy {
        &self.policy
    }

    /// A new job from the last template with a fresh ntime (keeps miners busy while the node is
    /// unreachable). Returns false when there is no template yet.
    pub fn refresh_from_last(&self) -> bool {
        let last = self
            .last_template
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match last {
            Some(t) => {
                self.publish(t);
                true
            }
            None => false,
        }
    }
}

/// The template loop; runs until `shutdown`.
pub async fn run<S: TemplateSource>(
    source: Arc<S>,
    feed: Arc<JobFeed>,
    refresh: Duration,
    stats: Arc<PoolStats>,
    node: Arc<NodeMonitor>,
    shutdown: CancellationToken,
) {
    // Refuse to mine on the wrong chain or a syncing node: wait until the node is usable.
    let mut delay = Duration::from_millis(250);
    loop {
        let started = std::time::Instant::now();
        let result = source.chain_info().await;
        node.observe("getblockchaininfo", Some(started.elapsed()), &result);
        match result {
            Ok(info) => {
                tracing::info!(chain = %info.chain, blocks = info.blocks, "connected to the Bitcoin node");
                break;
            }
            Err(e) => {
                bump(&stats.node_errors);
                tracing::error!("{e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }

    let mut longpoll: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            r = source.get_template(longpoll.clone()) => {
                // A long poll lasts as long as the node likes: only ordinary calls are timed.
                let elapsed = longpoll.is_none().then(|| started.elapsed());
                node.observe("getblocktemplate", elapsed, &r);
                Some(r)
            }
            // Refresh: a new template (new transactions, new time) at least this often.
            _ = tokio::time::sleep(refresh) => None,
            _ = feed.block_accepted.notified() => { longpoll = None; continue; }
            _ = shutdown.cancelled() => return,
        };
        match outcome {
            None => longpoll = None,
            Some(Ok(template)) => match PreparedTemplate::from_template(template) {
                Ok(t) => {
                    if failures > 0 {
                        tracing::info!("the Bitcoin node answers again");
                    }
                    failures = 0;
                    longpoll = t.longpoll_id.clone();
                    let job = feed.publish(Arc::new(t));
                    bump(&stats.templates);
                    stats
                        .last_template_ms
                        .store(crate::monitor::unix_ms(), Relaxed);
                    tracing::debug!(job = %job.job.job_id, height = job.template.height, clean = job.job.clean_jobs, txs = job.template.txids.len(), "new job");
                }
                Err(e) => failures = on_failure(&feed, &stats, e, failures, &shutdown).await,
            },
            Some(Err(e)) => failures = on_failure(&feed, &stats, e, failures, &shutdown).await,
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

async fn on_failure(
    feed: &JobFeed,
    stats: &PoolStats,
    e: NodeError,
    failures: u32,
    shutdown: &CancellationToken,
) -> u32 {
    bump(&stats.node_errors);
    let kept = feed.refresh_from_last();
    if kept {
        tracing::warn!("{e}; jobs keep flowing from the last template");
    } else {
        tracing::error!("{e}; no template yet, miners wait for work");
    }
    let delay = Duration::from_millis(250 * 2u64.pow(failures.min(5))).min(Duration::from_secs(5));
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.cancelled() => {}
    }
    failures + 1
}
