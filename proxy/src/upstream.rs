//! The Stratum V1 client side: one TCP connection to a pool, its handshake, and line I/O.

use crate::config::{Config, UpstreamConfig};
use blgv_stratum::{
    line, Configure, Difficulty, Extranonce, Frame, LineCodec, ServerNotification, Submit,
    Subscribe, SubscribeResult,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::FramedRead;

pub const USER_AGENT: &str = concat!("blgv-proxy/", env!("CARGO_PKG_VERSION"));

const ID_CONFIGURE: u64 = 1;
const ID_SUBSCRIBE: u64 = 2;
const ID_AUTHORIZE: u64 = 3;
const ID_EXTRANONCE_SUBSCRIBE: u64 = 4;
/// Submit ids start here so they never collide with handshake ids.
pub const FIRST_SUBMIT_ID: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {pool}: {source}")]
    Connect {
        pool: String,
        source: std::io::Error,
    },
    #[error("{pool} did not answer {stage} in time")]
    Timeout { pool: String, stage: &'static str },
    #[error("{pool} refused {stage}: {message}")]
    Refused {
        pool: String,
        stage: &'static str,
        message: String,
    },
    #[error("{pool} sent an unusable {stage}: {message}")]
    Protocol {
        pool: String,
        stage: &'static str,
        message: String,
    },
    #[error("{pool} closed the connection")]
    Closed { pool: String },
    #[error("I/O error with {pool}: {message}")]
    Io { pool: String, message: String },
}

/// What the pool granted during the handshake, plus anything it pushed meanwhile.
#[derive(Debug)]
pub struct Handshake {
    pub extranonce1: Extranonce,
    pub extranonce2_size: usize,
    pub version_mask: u32,
    pub difficulty: Option<Difficulty>,
    /// Notifications that arrived before the handshake finished, in order.
    pub early: Vec<ServerNotification>,
}

/// An established upstream connection.
pub struct UpstreamConn {
    pub pool_label: String,
    reader: FramedRead<OwnedReadHalf, LineCodec>,
    writer: OwnedWriteHalf,
}

/// What a line from the pool turned out to be.
pub enum Incoming {
    Notification(ServerNotification),
    Response {
        id: Option<u64>,
        accepted: bool,
        error: Option<blgv_stratum::StratumError>,
    },
    /// A line we could not use; logged and skipped (a pool's quirk must not drop miners).
    Ignored(String),
}

impl UpstreamConn {
    /// Connect and run configure → subscribe → authorize → extranonce.subscribe.
    pub async fn open(
        pool: &UpstreamConfig,
        config: &Config,
    ) -> Result<(UpstreamConn, Handshake), UpstreamError> {
        let label = pool.label().to_string();
        let connect = tokio::time::timeout(
            config.failover.connect_timeout(),
            TcpStream::connect(pool.address()),
        )
        .await
        .map_err(|_| UpstreamError::Timeout {
            pool: label.clone(),
            stage: "the TCP connect",
        })?
        .map_err(|source| UpstreamError::Connect {
            pool: label.clone(),
            source,
        })?;
        let _ = connect.set_nodelay(true);
        let (r, w) = connect.into_split();
        let mut conn = UpstreamConn {
            pool_label: label,
            reader: FramedRead::new(r, LineCodec::new(config.proxy.max_line_length.max(1 << 20))),
            writer: w,
        };
        let hs = conn.handshake(pool, config).await?;
        Ok((conn, hs))
    }

    async fn handshake(
        &mut self,
        pool: &UpstreamConfig,
        config: &Config,
    ) -> Result<Handshake, UpstreamError> {
        let mask = config.version_rolling.mask_bits();
        let mut out = String::new();
        if mask != 0 {
            let c = Configure {
                extensions: vec!["version-rolling".into()],
                version_rolling_mask: Some(mask),
                version_rolling_min_bit_count: 2,
            };
            out.push_str(&line::request(
                ID_CONFIGURE,
                "mining.configure",
                c.to_params(),
            ));
        }
        let sub = Subscribe {
            user_agent: Some(USER_AGENT.into()),
            session_id: None,
        };
        out.push_str(&line::request(
            ID_SUBSCRIBE,
            "mining.subscribe",
            sub.to_params(),
        ));
        out.push_str(&line::request(
            ID_AUTHORIZE,
            "mining.authorize",
            json!([pool.user, pool.password]),
        ));
        out.push_str(&line::request(
            ID_EXTRANONCE_SUBSCRIBE,
            "mining.extranonce.subscribe",
            json!([]),
        ));
        self.send(&out).await?;

        let deadline = Instant::now() + config.failover.handshake_timeout();
        let mut version_mask = if mask != 0 { None } else { Some(0) };
        let mut subscribed: Option<SubscribeResult> = None;
        let mut authorized = false;
        let mut difficulty = None;
        let mut early = Vec::new();
        while subscribed.is_none() || !authorized || version_mask.is_none() {
            let stage = if subscribed.is_none() {
                "mining.subscribe"
            } else if !authorized {
                "mining.authorize"
            } else {
                "mining.configure"
            };
            let frame = match timeout_at(deadline, self.next_frame()).await {
                Err(_) => {
                    return Err(UpstreamError::Timeout {
                        pool: self.pool_label.clone(),
                        stage,
                    })
                }
                Ok(f) => f?,
            };
            match frame {
                Frame::Response { id, result, error } => match id.as_u64() {
                    Some(ID_CONFIGURE) => {
                        // A pool without BIP310 answers an error: mine without rolling.
                        version_mask = Some(Configure::granted_mask(&result).unwrap_or(0) & mask);
                    }
                    Some(ID_SUBSCRIBE) => {
                        if let Some(e) = error {
                            return Err(self.refused("mining.subscribe", e.message));
                        }
                        subscribed = Some(SubscribeResult::from_result(&result).map_err(|e| {
                            UpstreamError::Protocol {
                                pool: self.pool_label.clone(),
                                stage: "subscribe result",
                                message: e.to_string(),
                            }
                        })?);
                    }
                    Some(ID_AUTHORIZE) => {
                        if error.is_some() || result != Value::Bool(true) {
                            let why = error
                                .map(|e| e.message)
                                .unwrap_or_else(|| result.to_string());
                            return Err(self.refused(
                                "mining.authorize",
                                format!("{why} (check upstreams.user / upstreams.password)"),
                            ));
                        }
                        authorized = true;
                    }
                    _ => {}
                },
                Frame::Request { method, params, .. } => {
                    match ServerNotification::parse(&method, &params) {
                        Ok(ServerNotification::SetDifficulty(d)) => difficulty = Some(d),
                        Ok(ServerNotification::SetVersionMask(m)) => {
                            version_mask = Some(m & mask);
                        }
                        Ok(n) => early.push(n),
                        Err(e) => {
                            tracing::warn!(pool = %self.pool_label, %method, error = %e, "ignoring malformed notification")
                        }
                    }
                }
            }
        }
        let s = subscribed.expect("loop ends only when subscribed");
        Ok(Handshake {
            extranonce1: s.extranonce1,
            extranonce2_size: s.extranonce2_size,
            version_mask: version_mask.unwrap_or(0),
            difficulty,
            early,
        })
    }

    fn refused(&self, stage: &'static str, message: String) -> UpstreamError {
        UpstreamError::Refused {
            pool: self.pool_label.clone(),
            stage,
            message,
        }
    }

    async fn next_frame(&mut self) -> Result<Frame, UpstreamError> {
        loop {
            match self.reader.next().await {
                None => {
                    return Err(UpstreamError::Closed {
                        pool: self.pool_label.clone(),
                    })
                }
                Some(Err(e)) => {
                    return Err(UpstreamError::Io {
                        pool: self.pool_label.clone(),
                        message: e.to_string(),
                    })
                }
                Some(Ok(bytes)) => match Frame::parse(&bytes) {
                    Ok(f) => return Ok(f),
                    Err(e) => {
                        tracing::warn!(pool = %self.pool_label, error = %e, "ignoring unparsable line from pool")
                    }
                },
            }
        }
    }

    /// The next message from the pool.
    pub async fn next(&mut self) -> Result<Incoming, UpstreamError> {
        Ok(match self.next_frame().await? {
            Frame::Response { id, result, error } => Incoming::Response {
                id: id.as_u64(),
                accepted: error.is_none() && result == Value::Bool(true),
                error,
            },
            Frame::Request { method, params, .. } => {
                match ServerNotification::parse(&method, &params) {
                    Ok(n) => Incoming::Notification(n),
                    Err(e) => Incoming::Ignored(format!("{method}: {e}")),
                }
            }
        })
    }

    pub async fn send(&mut self, text: &str) -> Result<(), UpstreamError> {
        self.writer
            .write_all(text.as_bytes())
            .await
            .map_err(|e| UpstreamError::Io {
                pool: self.pool_label.clone(),
                message: e.to_string(),
            })
    }

    pub fn submit_line(id: u64, submit: &Submit) -> String {
        line::request(id, "mining.submit", submit.to_params())
    }
}
