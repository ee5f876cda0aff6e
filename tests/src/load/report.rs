//! What a load run measured: a serde-serializable report, a human table, and the goals from
//! the performance issue checked against the figures.

use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    pub requested: usize,
    pub connected: u64,
    pub ready: u64,
    /// Connections still open at the end of the hold (and of the share phase).
    pub held: u64,
    pub connect_failed: u64,
    pub handshake_failed: u64,
    pub lost: u64,
    pub reconnect_requests: u64,
    /// From the first connect to the last miner having difficulty and a job.
    pub ramp_secs: f64,
    pub source_ips: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyFigures {
    /// Which proxy ran (`blgv-proxy`, `para proxy`).
    pub flavor: String,
    pub pid: u32,
    /// VmRSS with no miner connected.
    pub rss_idle_kb: u64,
    /// VmRSS with every miner connected, idle, holding a job.
    pub rss_loaded_kb: u64,
    /// (rss_loaded − rss_idle) / ready miners.
    pub rss_per_miner_bytes: f64,
    pub rss_end_kb: u64,
    pub peak_rss_kb: u64,
    pub threads: u64,
    /// utime + stime over the whole run.
    pub cpu_total_secs: f64,
    /// CPU seconds spent accepting the miners (connect + handshake).
    pub cpu_ramp_secs: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FanoutRound {
    pub job_id: u64,
    pub expected: u64,
    pub received: u64,
    /// Upstream sent the job → first miner had it.
    pub first_ms: f64,
    /// Upstream sent the job → last miner had it.
    pub last_ms: f64,
    pub first_to_last_ms: f64,
    /// Proxy CPU for this round (all threads, schedstat) per miner reached.
    pub proxy_cpu_us_per_miner: f64,
    /// Proxy context switches (all threads) per miner reached.
    pub proxy_switches_per_miner: f64,
    /// This harness's CPU during the round (10 ms ticks).
    pub harness_cpu_ms: f64,
    /// Other processes' CPU during the round (10 ms ticks): a busy machine slows fan-out.
    pub other_cpu_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Shares {
    pub target_rate: f64,
    pub miners: usize,
    pub warmup_secs: f64,
    pub window_secs: f64,
    pub submitted_in_window: u64,
    pub accepted_in_window: u64,
    /// Accepted replies per second for shares sent in the window.
    pub accepted_per_sec: f64,
    pub submitted_total: u64,
    pub accepted_total: u64,
    pub rejected_total: u64,
    pub latency: Latency,
    /// Proxy utime + stime during the window.
    pub cpu_secs: f64,
    pub cpu_us_per_share: f64,
    /// Proxy context switches (all threads) per accepted share.
    pub proxy_switches_per_share: f64,
    /// This harness (miners, pacer, upstream) during the window.
    pub harness_cpu_secs: f64,
    /// Every other process on the machine during the window: a busy machine skews latency.
    pub other_cpu_secs: f64,
    pub machine_idle_secs: f64,
    /// Submitted shares whose hash meets the upstream target.
    pub expected_forwards: u64,
    pub upstream_received: u64,
    pub pacer_max_lag_ms: f64,
    pub write_blocked: u64,
    pub write_errors: u64,
    pub exhausted: u64,
    pub planning_secs: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamFigures {
    pub difficulty: f64,
    pub connections: u64,
    pub submits: u64,
    pub accepted: u64,
    pub invalid: u64,
    pub invalid_samples: Vec<String>,
}

/// The machine during the run (it is shared: other processes' CPU skews latency).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub loadavg_start: f64,
    pub loadavg_end: f64,
    pub harness_cpu_secs: f64,
    /// CPU seconds of every process but the proxy and the harness during the run.
    pub other_cpu_secs: f64,
    /// CPU-seconds available (wall time × CPUs) during the run.
    pub wall_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub name: String,
    pub measured: String,
    /// None when this run's parameters do not match the goal's.
    pub pass: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub miner_difficulty: f64,
    pub nofile_limit: u64,
    pub connections: Connections,
    pub proxy: ProxyFigures,
    pub fanout: Vec<FanoutRound>,
    pub shares: Option<Shares>,
    pub upstream: UpstreamFigures,
    pub machine: Machine,
    pub goals: Vec<Goal>,
    /// Oddities seen by the simulated miners (first few).
    pub miner_notes: Vec<String>,
    /// WARN/ERROR lines of the proxy's log (first few).
    pub proxy_log_problems: Vec<String>,
    /// Why the run is not clean; empty = clean. The binary exits non-zero otherwise.
    pub failures: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn fanout_median_last_ms(&self) -> f64 {
        median(self.fanout.iter().map(|r| r.last_ms).collect())
    }

    pub fn fanout_max_last_ms(&self) -> f64 {
        self.fanout.iter().map(|r| r.last_ms).fold(0.0, f64::max)
    }

    /// Checks the figures against the goals.
    pub fn evaluate_goals(&mut self) {
        let mut goals = Vec::new();
        let c = &self.connections;
        goals.push(Goal {
            name: "connections held ≥ 19,000".into(),
            measured: format!("{} of {}", c.held, c.requested),
            pass: (c.requested >= 19_000).then_some(c.held >= 19_000),
        });
        goals.push(Goal {
            name: "RSS per idle miner ≤ 2 KB".into(),
            measured: format!("{:.0} B", self.proxy.rss_per_miner_bytes),
            pass: (c.ready >= 1_000).then_some(self.proxy.rss_per_miner_bytes <= 2048.0),
        });
        if !self.fanout.is_empty() {
            let max = self.fanout_max_last_ms();
            goals.push(Goal {
                name: "new-job fan-out to 15,000 miners ≤ 40 ms".into(),
                measured: format!(
                    "{:.1} ms worst of {} (median {:.1} ms) to {} miners",
                    max,
                    self.fanout.len(),
                    self.fanout_median_last_ms(),
                    c.ready
                ),
                pass: (c.ready >= 15_000).then_some(max <= 40.0),
            });
        }
        if let Some(s) = &self.shares {
            goals.push(Goal {
                name: "throughput keeps up with the offered rate (≥ 99 %)".into(),
                measured: format!("{:.0} of {:.0} shares/s", s.accepted_per_sec, s.target_rate),
                pass: Some(s.accepted_per_sec >= 0.99 * s.target_rate),
            });
            goals.push(Goal {
                name: "CPU per accepted share ≤ 4 µs at 30,000 shares/s".into(),
                measured: format!("{:.2} µs at {:.0}/s", s.cpu_us_per_share, s.target_rate),
                // The goal is set at 30,000/s; CPU per share falls as the rate rises (fewer
                // wake-ups per share), so a faster run says nothing about it.
                pass: ((s.target_rate - 30_000.0).abs() < 1.0).then_some(s.cpu_us_per_share <= 4.0),
            });
            let (name, limit, applies) = if s.target_rate >= 60_000.0 {
                ("p99 submit→reply ≤ 3 ms at 60,000 shares/s", 3000.0, true)
            } else {
                (
                    "p99 submit→reply ≤ 0.5 ms at 30,000 shares/s",
                    500.0,
                    s.target_rate >= 30_000.0,
                )
            };
            goals.push(Goal {
                name: name.into(),
                measured: format!("{:.0} µs at {:.0}/s", s.latency.p99_us, s.target_rate),
                pass: applies.then_some(s.latency.p99_us <= limit),
            });
        }
        self.goals = goals;
    }

    /// The human table.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let c = &self.connections;
        let p = &self.proxy;
        let _ = writeln!(
            o,
            "{} load run: {} — {} miners, miner difficulty {:e}, upstream difficulty {:e} (≈1 share in {:.0} forwarded)",
            if self.proxy.flavor.is_empty() { "blgv-proxy" } else { &self.proxy.flavor },
            self.scenario,
            c.requested,
            self.miner_difficulty,
            self.upstream.difficulty,
            self.upstream.difficulty / self.miner_difficulty
        );
        let _ = writeln!(o, "  {:<34} value", "figure");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(o, "  {k:<34} {v}");
        };
        row(
            "connections held",
            format!(
                "{} / {} (ready {}, connect failed {}, handshake failed {}, lost {}; ramp {:.1} s over {} source IPs)",
                c.held, c.requested, c.ready, c.connect_failed, c.handshake_failed, c.lost, c.ramp_secs, c.source_ips
            ),
        );
        row(
            "proxy RSS idle → loaded",
            format!(
                "{:.1} MiB → {:.1} MiB (end {:.1} MiB, peak {:.1} MiB, {} threads)",
                p.rss_idle_kb as f64 / 1024.0,
                p.rss_loaded_kb as f64 / 1024.0,
                p.rss_end_kb as f64 / 1024.0,
                p.peak_rss_kb as f64 / 1024.0,
                p.threads
            ),
        );
        row(
            "RSS per idle miner",
            format!("{:.0} B", p.rss_per_miner_bytes),
        );
        row(
            "proxy CPU accepting the miners",
            format!(
                "{:.2} s ({:.0} µs per miner)",
                p.cpu_ramp_secs,
                p.cpu_ramp_secs * 1e6 / (c.ready.max(1) as f64)
            ),
        );
        if !self.fanout.is_empty() {
            let rounds: Vec<String> = self
                .fanout
                .iter()
                .map(|r| {
                    format!(
                        "{:.1}/{:.1}/{:.1}{}",
                        r.first_ms,
                        r.last_ms,
                        r.first_to_last_ms,
                        if r.received < r.expected {
                            format!(" ({} of {}!)", r.received, r.expected)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            row(
                "fan-out to last miner (median/max)",
                format!(
                    "{:.1} ms / {:.1} ms; first-to-last median {:.1} ms",
                    self.fanout_median_last_ms(),
                    self.fanout_max_last_ms(),
                    median(self.fanout.iter().map(|r| r.first_to_last_ms).collect())
                ),
            );
            row("fan-out rounds first/last/spread ms", rounds.join("  "));
            row(
                "fan-out proxy CPU per miner",
                format!(
                    "{:.1} µs (median of rounds); others' CPU during rounds: {}",
                    median(
                        self.fanout
                            .iter()
                            .map(|r| r.proxy_cpu_us_per_miner)
                            .collect()
                    ),
                    self.fanout
                        .iter()
                        .map(|r| format!("{:.0} ms", r.other_cpu_ms))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if let Some(s) = &self.shares {
            row(
                "offered rate",
                format!(
                    "{:.0} shares/s over {} miners, {:.1} s warm-up + {:.1} s measured",
                    s.target_rate, s.miners, s.warmup_secs, s.window_secs
                ),
            );
            row(
                "accepted end to end",
                format!(
                    "{:.0} shares/s ({} of {} sent in the window; {} rejected in the run)",
                    s.accepted_per_sec,
                    s.accepted_in_window,
                    s.submitted_in_window,
                    s.rejected_total
                ),
            );
            let l = &s.latency;
            row(
                "submit→reply latency",
                format!(
                    "p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
                    l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
                ),
            );
            row(
                "proxy CPU per accepted share",
                format!(
                    "{:.2} µs ({:.2} CPU s in the window)",
                    s.cpu_us_per_share, s.cpu_secs
                ),
            );
            row(
                "proxy context switches per share",
                format!("{:.2}", s.proxy_switches_per_share),
            );
            row(
                "CPU in the window: harness / others",
                format!(
                    "{:.2} s / {:.2} s (machine idle {:.2} CPU s)",
                    s.harness_cpu_secs, s.other_cpu_secs, s.machine_idle_secs
                ),
            );
            row(
                "forwarded upstream",
                format!(
                    "{} received, {} expected (hash meets the upstream target); {} invalid",
                    s.upstream_received, s.expected_forwards, self.upstream.invalid
                ),
            );
            row(
                "generator",
                format!(
                    "pacer max lag {:.1} ms, {} writes blocked, {} write errors, {} out of shares; planning {:.1} s",
                    s.pacer_max_lag_ms, s.write_blocked, s.write_errors, s.exhausted, s.planning_secs
                ),
            );
        }
        row("proxy CPU total", format!("{:.2} s", p.cpu_total_secs));
        let m = &self.machine;
        row(
            "machine",
            format!(
                "{} CPUs, load {:.1} → {:.1}; run: harness {:.1} CPU s, other processes {:.1} CPU s of {:.1}",
                m.cpus, m.loadavg_start, m.loadavg_end, m.harness_cpu_secs, m.other_cpu_secs, m.wall_secs
            ),
        );
        let _ = writeln!(o, "goals (from the performance issue):");
        for g in &self.goals {
            let tag = match g.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a ",
            };
            let _ = writeln!(o, "  [{tag}] {:<50} {}", g.name, g.measured);
        }
        for n in &self.miner_notes {
            let _ = writeln!(o, "  miner note: {n}");
        }
        for n in &self.proxy_log_problems {
            let _ = writeln!(o, "  proxy log: {n}");
        }
        for s in &self.upstream.invalid_samples {
            let _ = writeln!(o, "  INVALID FORWARD: {s}");
        }
        if self.failures.is_empty() {
            let _ = writeln!(o, "result: clean run");
        } else {
            for f in &self.failures {
                let _ = writeln!(o, "FAILED: {f}");
            }
        }
        o
    }
}
