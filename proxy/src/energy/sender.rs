//! Sends the outbox to the pool, oldest report first, one at a time (so the pool sees a site's
//! intervals in order), with the site's bearer token.
//!
//! | the pool answers | the report |
//! |---|---|
//! | 2xx (201 stored, 200 duplicate: it had it already) | is deleted from the outbox |
//! | 409 (it holds a *different* report for the interval) | is moved to the outbox's `refused` table and logged: retrying cannot help, and it must not hold up the later ones |
//! | anything else, or no answer | stays first in line; retried after a backoff that doubles from `retry_initial_ms` to `retry_max_ms` (±20 % jitter) |
//!
//! A 4xx other than 409 (wrong token, an unknown grid region, a clock far off) is retried too:
//! it needs the operator to fix a configuration, after which the queued reports go through;
//! the log says what the pool answered.

use super::config::ReportTarget;
use super::outbox::{Outbox, Queued};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Counters for status and tests.
#[derive(Debug, Default)]
pub struct SenderStats {
    /// Reports the pool acknowledged (stored or duplicate).
    pub sent: AtomicU64,
    /// Of those, the pool already had.
    pub duplicates: AtomicU64,
    /// Reports the pool refused for good (409).
    pub refused: AtomicU64,
    /// Failed attempts.
    pub failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl SenderStats {
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// Exponential backoff, capped, with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt (the nominal delay ±20 %), and double it for the one
    /// after, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        nominal.mul_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The nominal delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        self.next
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Acknowledged { duplicate: bool },
    Refused { status: u16, answer: String },
    Retry(String),
}

/// Classify the pool's answer.
pub fn classify(status: u16, body: &str) -> Outcome {
    let answer: String = body.chars().take(500).collect();
    match status {
        200..=299 => Outcome::Acknowledged {
            duplicate: body.contains("\"duplicate\""),
        },
        409 => Outcome::Refused { status, answer },
        _ => Outcome::Retry(format!("the pool answered {status}: {answer}")),
    }
}

pub struct Sender {
    pub outbox: Arc<Outbox>,
    pub target: ReportTarget,
    pub client: reqwest::Client,
    pub wake: Arc<Notify>,
    pub stats: Arc<SenderStats>,
    pub shutdown: CancellationToken,
}

/// A client for the pool; `Err` says why TLS could not be set up.
pub fn client(target: &ReportTarget) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(target.timeout())
        .connect_timeout(target.timeout())
        .user_agent(concat!("blgv-proxy/", env!("CARGO_PKG_VERSION")))
        .build()
}

async fn blocking<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    f: impl FnOnce(&Outbox) -> Result<T, super::outbox::OutboxError> + Send + 'static,
) -> Result<T, String> {
    let o = outbox.clone();
    tokio::task::spawn_blocking(move || f(&o))
        .await
        .map_err(|e| format!("outbox task failed: {e}"))?
        .map_err(|e| e.to_string())
}

impl Sender {
    async fn attempt(&self, q: &Queued) -> Outcome {
        let request = self
            .client
            .post(self.target.endpoint())
            .bearer_auth(self.target.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(q.body.clone());
        match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                classify(status, &body)
            }
            Err(e) => Outcome::Retry(format!("cannot reach the pool: {e}")),
        }
    }

    /// Send until `shutdown`. A report being sent when the proxy stops (or dies) stays in the
    /// outbox and is sent again on the next start; the pool recognises it as a duplicate.
    pub async fn run(self) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.target.retry_initial_ms),
            Duration::from_millis(self.target.retry_max_ms),
        );
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            // Registered before looking, so a report queued meanwhile is not missed.
            let woken = self.wake.notified();
            let next = match blocking(&self.outbox, |o| o.oldest()).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "energy outbox unreadable; retrying");
                    self.pause(backoff.next_delay()).await;
                    continue;
                }
            };
            let Some(q) = next else {
                tokio::select! {
                    _ = woken => {}
                    _ = self.shutdown.cancelled() => return,
                }
                continue;
            };
            let outcome = tokio::select! {
                o = self.attempt(&q) => o,
                _ = self.shutdown.cancelled() => return,
            };
            let start = q.interval_start;
            match outcome {
                Outcome::Acknowledged { duplicate } => {
                    if let Err(e) = blocking(&self.outbox, move |o| o.acknowledged(start)).await {
                        tracing::error!(error = %e, "cannot delete an acknowledged energy report; it will be sent again (the pool counts it once)");
                    }
                    self.stats.sent.fetch_add(1, Relaxed);
                    if duplicate {
                        self.stats.duplicates.fetch_add(1, Relaxed);
                    }
                    if self.stats.last_error().is_some() {
                        tracing::info!(
                            interval_start = start,
                            "energy reports reach the pool again"
                        );
                    }
                    self.stats.set_error(None);
                    backoff.reset();
                }
                Outcome::Refused { status, answer } => {
                    tracing::error!(interval_start = start, status, %answer, "the pool holds a different energy report for this interval; this one is kept in the outbox's `refused` table");
                    let a = answer.clone();
                    if let Err(e) =
                        blocking(&self.outbox, move |o| o.refuse(start, status, &a)).await
                    {
                        tracing::error!(error = %e, "cannot set the refused energy report aside; retrying");
                        self.pause(backoff.next_delay()).await;
                        continue;
                    }
                    self.stats.refused.fetch_add(1, Relaxed);
                    backoff.reset();
                }
                Outcome::Retry(why) => {
                    self.stats.failures.fetch_add(1, Relaxed);
                    let delay = backoff.next_delay();
                    // Log the first failure and every change of reason, not every retry.
                    if self.stats.last_error().as_deref() != Some(why.as_str()) {
                        tracing::warn!(interval_start = start, attempts = q.attempts + 1, retry_in = ?delay, error = %why, "energy report not delivered; kept in the outbox and retried");
                    }
                    self.stats.set_error(Some(why.clone()));
                    let _ = blocking(&self.outbox, move |o| o.failed(start, &why)).await;
                    self.pause(delay).await;
                }
            }
        }
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::outbox::{BuilderState, HashMark, NewReport};
    use super::*;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut nominal = Vec::new();
        for _ in 0..6 {
            nominal.push(b.nominal().as_millis());
            let d = b.next_delay().as_millis();
            let n = *nominal.last().unwrap();
            assert!(d >= n * 8 / 10 && d <= n * 12 / 10, "{d} vs {n}");
        }
        assert_eq!(nominal, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.nominal().as_millis(), 100);
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(201, "{\"status\":\"stored\"}"),
            Outcome::Acknowledged { duplicate: false }
        );
        assert_eq!(
            classify(200, "{\"status\":\"duplicate\"}"),
            Outcome::Acknowledged { duplicate: true }
        );
        assert!(matches!(
            classify(409, "x"),
            Outcome::Refused { status: 409, .. }
        ));
        for s in [400, 401, 403, 413, 422, 500, 503] {
            assert!(matches!(classify(s, "x"), Outcome::Retry(_)), "{s}");
        }
    }

    struct Pool {
        received: Mutex<Vec<i64>>,
        /// Answer 503 to this many requests first (the pool is down).
        fail_first: AtomicUsize,
    }

    async fn report(
        State(p): State<Arc<Pool>>,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, String) {
        assert_eq!(
            headers.get("authorization").unwrap(),
            "Bearer site-token-0123456789"
        );
        if p.fail_first.load(Relaxed) > 0 {
            p.fail_first.fetch_sub(1, Relaxed);
            return (StatusCode::SERVICE_UNAVAILABLE, "down".into());
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        p.received
            .lock()
            .unwrap()
            .push(v["interval_start"].as_i64().unwrap());
        (StatusCode::CREATED, "{\"status\":\"stored\"}".into())
    }

    #[tokio::test]
    async fn a_week_offline_is_delivered_oldest_first_once_the_pool_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(&dir.path().join("o.db")).unwrap());
        let week: Vec<NewReport> = (0..2016)
            .map(|i| NewReport {
                interval_start: 1_000_000 + i * 300,
                interval_end: 1_000_300 + i * 300,
                body: format!("{{\"interval_start\": {}}}", 1_000_000 + i * 300),
            })
            .collect();
        let state = BuilderState {
            site_id: "s".into(),
            interval_secs: 300,
            last_end: 0,
            hashes: HashMark::default(),
        };
        outbox.enqueue(&week, &state).unwrap();
        let pool = Arc::new(Pool {
            received: Mutex::new(Vec::new()),
            fail_first: AtomicUsize::new(5),
        });
        let app = axum::Router::new()
            .route("/api/energy/report", axum::routing::post(report))
            .with_state(pool.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let target: ReportTarget = toml::from_str(&format!(
            "url = \"http://{addr}/\"\ntoken = \"site-token-0123456789\"\nretry_initial_ms = 10\nretry_max_ms = 40\n"
        ))
        .unwrap();
        let shutdown = CancellationToken::new();
        let stats = Arc::new(SenderStats::default());
        let sender = Sender {
            outbox: outbox.clone(),
            client: client(&target).unwrap(),
            target,
            wake: Arc::new(Notify::new()),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(sender.run());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !outbox.is_empty().unwrap() {
            assert!(tokio::time::Instant::now() < deadline, "outbox not drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        task.await.unwrap();
        let got = pool.received.lock().unwrap().clone();
        let want: Vec<i64> = week.iter().map(|r| r.interval_start).collect();
        assert_eq!(got, want, "every report once, in order");
        assert_eq!(stats.sent.load(Relaxed), 2016);
        assert_eq!(stats.failures.load(Relaxed), 5);
    }
}
