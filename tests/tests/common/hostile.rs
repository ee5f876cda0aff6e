//! The hostile-input matrix, shared by the proxy's and the pool's Stratum servers: each case
//! with the answer a miner must get.

use super::{error_code, error_text, RawClient};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;

/// At difficulty 2^-32 every hash is a valid share, so the raw client submits "real" shares
/// without hashing and each case isolates exactly one fault.
pub const EVERYTHING_VALID: f64 = 1.0 / 4_294_967_296.0;

pub struct Work {
    pub job_id: String,
    pub ntime: u32,
    pub extranonce2_size: usize,
}

/// Subscribe + authorize (+ configure for version rolling) and wait for the first job.
pub async fn ready_client(
    addr: std::net::SocketAddr,
    worker: &str,
    configure: bool,
) -> (RawClient, Work) {
    let mut c = RawClient::connect(addr).await;
    if configure {
        let r = c.call(1, "mining.configure", json!([["version-rolling"], {"version-rolling.mask": "00ffe000", "version-rolling.min-bit-count": 2}])).await;
        assert_eq!(r["result"]["version-rolling"], true, "{r}");
        assert_eq!(
            r["result"]["version-rolling.mask"], "00ffe000",
            "grant = pool's 1fffe000 ∩ asked 00ffe000"
        );
    }
    let r = c.call(2, "mining.subscribe", json!(["hostile/1.0"])).await;
    let extranonce2_size = r["result"][2].as_u64().unwrap() as usize;
    let r = c.call(3, "mining.authorize", json!([worker, "x"])).await;
    assert_eq!(r["result"], true);
    let notify = c.notification("mining.notify").await;
    let p = &notify["params"];
    let work = Work {
        job_id: p[0].as_str().unwrap().to_string(),
        ntime: u32::from_str_radix(p[7].as_str().unwrap(), 16).unwrap(),
        extranonce2_size,
    };
    (c, work)
}

pub fn submit(worker: &str, w: &Work, en2: u64, nonce: u32) -> Value {
    let en2 = format!("{:0width$x}", en2, width = w.extranonce2_size * 2);
    json!([
        worker,
        w.job_id,
        en2,
        format!("{:08x}", w.ntime),
        format!("{nonce:08x}")
    ])
}

/// Run every case against a server at `addr` whose miners start at [`EVERYTHING_VALID`] and may
/// be raised to difficulty ≥ 2^-16 by `mining.suggest_difficulty`. `new_job` must make the
/// server send a new job (used after a difficulty change).
pub async fn run_matrix<F, Fut>(addr: SocketAddr, new_job: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    // 1. Malformed JSON: error with id null, the connection stays usable.
    let mut c = RawClient::connect(addr).await;
    c.send_raw(b"{\"id\":1,\"method\":\n").await.unwrap();
    let r = c.response(Value::Null).await;
    assert_eq!(error_code(&r), Some(20));
    assert!(error_text(&r).contains("malformed JSON"), "{r}");
    c.send_raw(b"[1,2,3]\n").await.unwrap();
    let r = c.response(Value::Null).await;
    assert!(error_text(&r).contains("JSON object"), "{r}");
    let r = c.call(9, "mining.subscribe", json!([])).await;
    assert!(r["result"].is_array(), "still usable after garbage: {r}");

    // 2. A 1 MiB line with no newline: told why, then disconnected.
    let mut c = RawClient::connect(addr).await;
    let _ = c.send_raw(&vec![b'x'; 1 << 20]).await;
    let r = c.response(Value::Null).await;
    assert!(
        error_text(&r).contains("line longer than 65536 bytes"),
        "{r}"
    );
    assert!(
        c.closed().await,
        "connection must close after an oversized line"
    );

    // 3. Unknown method.
    let mut c = RawClient::connect(addr).await;
    let r = c.call(1, "mining.make_me_rich", json!([])).await;
    assert_eq!(error_code(&r), Some(20));
    assert!(
        error_text(&r).contains("unknown method \"mining.make_me_rich\""),
        "{r}"
    );

    // 4. Submit before subscribe (25), then before authorize (24).
    let r = c
        .call(
            2,
            "mining.submit",
            json!(["w", "1", "00000000", "00000000", "00000000"]),
        )
        .await;
    assert_eq!(error_code(&r), Some(25), "{r}");
    c.call(3, "mining.subscribe", json!(["x", null])).await;
    let r = c
        .call(
            4,
            "mining.submit",
            json!(["w", "1", "00000000", "00000000", "00000000"]),
        )
        .await;
    assert_eq!(error_code(&r), Some(24), "{r}");
    assert!(error_text(&r).contains("mining.authorize"), "{r}");

    // The remaining cases need live work.
    let (mut c, w) = ready_client(addr, "evil", true).await;

    // A valid share first: at this difficulty any nonce is one.
    let r = c.call(10, "mining.submit", submit("evil", &w, 1, 7)).await;
    assert_eq!(r["result"], true, "{r}");

    // 5. Duplicate of that share.
    let r = c.call(11, "mining.submit", submit("evil", &w, 1, 7)).await;
    assert_eq!(error_code(&r), Some(22), "{r}");

    // 6. Wrong extranonce2 length.
    let mut p = submit("evil", &w, 2, 7);
    p[2] = json!("00");
    let r = c.call(12, "mining.submit", p).await;
    assert_eq!(error_code(&r), Some(20));
    assert!(
        error_text(&r).contains(&format!("extranonce2 must be {} bytes", w.extranonce2_size)),
        "{r}"
    );

    // 7. Non-hex nonce.
    let mut p = submit("evil", &w, 3, 7);
    p[4] = json!("zzzzzzzz");
    let r = c.call(13, "mining.submit", p).await;
    assert_eq!(error_code(&r), Some(20));
    assert!(error_text(&r).contains("nonce must be 8 hex digits"), "{r}");

    // 8. ntime outside the window: before the job, and far in the future.
    for (id, ntime) in [(14, w.ntime - 1), (15, w.ntime + 3600)] {
        let mut p = submit("evil", &w, 4, 7);
        p[3] = json!(format!("{ntime:08x}"));
        let r = c.call(id, "mining.submit", p).await;
        assert_eq!(error_code(&r), Some(20));
        assert!(error_text(&r).contains("out of range"), "{r}");
    }

    // 9. Stale (unknown) job.
    let mut p = submit("evil", &w, 5, 7);
    p[1] = json!("no-such-job");
    let r = c.call(16, "mining.submit", p).await;
    assert_eq!(error_code(&r), Some(21), "{r}");

    // 10. Version bits outside the negotiated mask (granted 00ffe000).
    let mut p = submit("evil", &w, 6, 7);
    p.as_array_mut().unwrap().push(json!("10000000"));
    let r = c.call(17, "mining.submit", p).await;
    assert_eq!(error_code(&r), Some(20));
    assert!(
        error_text(&r).contains("outside the negotiated mask 00ffe000"),
        "{r}"
    );
    // ...while bits inside the mask are fine.
    let mut p = submit("evil", &w, 6, 7);
    p.as_array_mut().unwrap().push(json!("00ffe000"));
    let r = c.call(18, "mining.submit", p).await;
    assert_eq!(r["result"], true, "{r}");

    // 11. Worker the connection never authorized.
    let r = c
        .call(19, "mining.submit", submit("someone_else", &w, 7, 7))
        .await;
    assert_eq!(error_code(&r), Some(24), "{r}");

    // 12. Low difficulty: ask for difficulty 1, then a random nonce almost surely misses it.
    c.notifications.clear();
    let r = c.call(20, "mining.suggest_difficulty", json!([1])).await;
    assert_eq!(r["result"], true);
    let d = c.notification("mining.set_difficulty").await;
    let set = d["params"][0].as_f64().unwrap();
    assert!(set > EVERYTHING_VALID, "difficulty raised: {d}");
    // Shares on jobs sent before the change may still meet the old target (grace), so use a
    // job sent after it.
    new_job().await;
    let n = c.notification("mining.notify").await;
    let w2 = Work {
        job_id: n["params"][0].as_str().unwrap().to_string(),
        ntime: u32::from_str_radix(n["params"][7].as_str().unwrap(), 16).unwrap(),
        ..w
    };
    let mut low = 0;
    for i in 0..3u64 {
        let r = c
            .call(21 + i, "mining.submit", submit("evil", &w2, 100 + i, 1234))
            .await;
        match error_code(&r) {
            Some(23) => {
                assert!(error_text(&r).contains("Low difficulty share"), "{r}");
                low += 1;
            }
            None => {} // one chance in ~2^15 that a random hash meets it
            other => panic!("unexpected {other:?}: {r}"),
        }
    }
    assert!(low >= 2, "low-difficulty shares were not refused");

    // 13. Bad params of other methods.
    let r = c.call(30, "mining.authorize", json!([])).await;
    assert!(
        error_text(&r).contains("worker name must be a non-empty string"),
        "{r}"
    );
    let r = c.call(31, "mining.suggest_difficulty", json!(["-5"])).await;
    assert!(
        error_text(&r).contains("difficulty must be a positive number"),
        "{r}"
    );
    let r = c.call(32, "mining.submit", json!(["evil"])).await;
    assert!(error_text(&r).contains("expected at least 5 params"), "{r}");
}
