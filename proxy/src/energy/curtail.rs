//! Curtailment per interval, from the curtailment loop's status (`blgv_sensors::curtailment`):
//! how long a grid signal was in force, how long the site was compliant (the site meter at or
//! under the limit, the loop's own definition), which signals, and the loop's events.
//!
//! The loop publishes its status at every tick; between two statuses the state is taken to be
//! the earlier one. Its history is a sliding window of the last 50 events: each new status is
//! compared with the previous one, so events are picked up as they appear, not lost when more
//! than 50 happen in one interval.

use super::integrate::interval_of;
use super::report::{event_text, CurtailmentEvent, CurtailmentSummary, MAX_EVENTS};
use blgv_sensors::curtailment::{CurtailmentEvent as LoopEvent, CurtailmentStatus};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
struct Phase {
    signal: Option<String>,
    compliant: bool,
}

impl Phase {
    fn of(s: &CurtailmentStatus) -> Phase {
        let compliant = match (s.measured_kw, s.limit_kw) {
            (Some(m), Some(l)) => m <= l,
            // A blind meter under a limit cannot show compliance.
            (None, Some(_)) => false,
            (_, None) => true,
        };
        Phase {
            signal: s.signal_id.clone(),
            compliant,
        }
    }
}

#[derive(Debug)]
pub struct CurtailmentTracker {
    interval: i64,
    last: Option<(f64, Phase)>,
    history: Vec<LoopEvent>,
    buckets: BTreeMap<i64, CurtailmentSummary>,
}

/// How many of `new`'s events are not in `old` (a window that slid forward).
fn fresh<'a>(old: &[LoopEvent], new: &'a [LoopEvent]) -> &'a [LoopEvent] {
    let max = old.len().min(new.len());
    for k in (1..=max).rev() {
        if old[old.len() - k..] == new[..k] {
            return &new[k..];
        }
    }
    new
}

impl CurtailmentTracker {
    pub fn new(interval_secs: i64) -> CurtailmentTracker {
        CurtailmentTracker {
            interval: interval_secs.max(1),
            last: None,
            history: Vec::new(),
            buckets: BTreeMap::new(),
        }
    }

    fn bucket(&mut self, t: f64) -> &mut CurtailmentSummary {
        self.buckets
            .entry(interval_of(t, self.interval))
            .or_default()
    }

    /// Time `[a, b)` spent in `phase`, cut at interval boundaries.
    fn span(&mut self, a: f64, b: f64, phase: &Phase) {
        let Some(id) = &phase.signal else {
            return;
        };
        let mut t = a;
        while t < b {
            let k = interval_of(t, self.interval);
            let end = b.min((k + self.interval) as f64);
            if end <= t {
                break;
            }
            let s = self.buckets.entry(k).or_default();
            s.signal_secs += end - t;
            if phase.compliant {
                s.compliant_secs += end - t;
            }
            if !s.signal_ids.contains(id) {
                s.signal_ids.push(id.clone());
            }
            t = end;
        }
    }

    /// The loop's status at unix time `t`.
    pub fn observe(&mut self, t: f64, status: &CurtailmentStatus) {
        if let Some((t0, phase)) = self.last.take() {
            if t > t0 {
                self.span(t0, t, &phase);
            }
        }
        self.last = Some((t, Phase::of(status)));
        let new: Vec<LoopEvent> = fresh(&self.history, &status.history).to_vec();
        for e in new {
            let b = self.bucket(e.at as f64);
            if b.events.len() < MAX_EVENTS {
                b.events.push(CurtailmentEvent {
                    at: e.at as i64,
                    signal_id: e.signal_id.clone(),
                    what: event_text(&e.what),
                });
            } else {
                b.events_omitted += 1;
            }
        }
        self.history = status.history.clone();
    }

    /// The interval with aligned start `start`, ending at `end`; the current state is taken to
    /// last until `end`.
    pub fn close(&mut self, start: i64, end: i64) -> CurtailmentSummary {
        let end = end as f64;
        if let Some((t0, phase)) = self.last.clone() {
            if t0 < end {
                self.span(t0, end, &phase);
                self.last = Some((end, phase));
            }
        }
        let s = self.buckets.remove(&start).unwrap_or_default();
        self.buckets.retain(|k, _| *k > start);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        signal: Option<&str>,
        limit: Option<f64>,
        measured: Option<f64>,
        history: &[(u64, &str)],
    ) -> CurtailmentStatus {
        CurtailmentStatus {
            signal_id: signal.map(str::to_string),
            limit_kw: limit,
            measured_kw: measured,
            history: history
                .iter()
                .map(|(at, what)| LoopEvent {
                    at: *at,
                    signal_id: signal.map(str::to_string),
                    what: what.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn signal_time_compliance_and_events_per_interval() {
        let mut c = CurtailmentTracker::new(10);
        c.observe(1.0, &status(None, None, Some(50.0), &[]));
        // 4 s: evt over its limit, then 3 s under it, across the boundary at 10.
        c.observe(
            4.0,
            &status(
                Some("evt"),
                Some(40.0),
                Some(50.0),
                &[(4, "signal evt in force")],
            ),
        );
        c.observe(
            8.0,
            &status(
                Some("evt"),
                Some(40.0),
                Some(39.0),
                &[(4, "signal evt in force"), (8, "shed")],
            ),
        );
        let first = c.close(0, 10);
        assert_eq!(first.signal_secs, 6.0);
        assert_eq!(first.compliant_secs, 2.0);
        assert_eq!(first.signal_ids, vec!["evt".to_string()]);
        let whats: Vec<&str> = first.events.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(whats, ["signal evt in force", "shed"]);
        c.observe(
            11.0,
            &status(
                None,
                None,
                Some(30.0),
                &[(4, "signal evt in force"), (8, "shed"), (11, "ended")],
            ),
        );
        let second = c.close(10, 20);
        assert_eq!((second.signal_secs, second.compliant_secs), (1.0, 1.0));
        assert_eq!(second.events.len(), 1);
        assert_eq!(c.close(20, 30), CurtailmentSummary::default());
    }

    #[test]
    fn the_sliding_history_is_diffed() {
        let e = |at: u64| LoopEvent {
            at,
            signal_id: None,
            what: format!("e{at}"),
        };
        let old = [e(1), e(2), e(3)];
        assert_eq!(fresh(&old, &[e(2), e(3), e(4)]), &[e(4)]);
        assert_eq!(fresh(&old, &[e(1), e(2), e(3)]), &[] as &[LoopEvent]);
        assert_eq!(fresh(&[], &[e(1)]), &[e(1)]);
        assert_eq!(fresh(&old, &[e(7), e(8)]), &[e(7), e(8)]);
    }
}
