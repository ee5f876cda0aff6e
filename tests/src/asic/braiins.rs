//! Braiins OS public API v1 emulator: gRPC on a raw HTTP/2 server (the `h2` crate, no tonic),
//! with the protobuf messages of `blgv_sensors::control::braiins::proto`.
//!
//! `AuthenticationService/Login` checks the credentials (UNAUTHENTICATED otherwise) and answers
//! the token both in the `authorization` response header and in the body; every other method
//! needs that token in the `authorization` request header. Implemented: `ActionsService/
//! PauseMining`, `ResumeMining`, `PerformanceService/SetPowerTarget` (range-checked,
//! INVALID_ARGUMENT), `GetTunerState`, `MinerService/GetMinerDetails`, `GetMinerStats`; others
//! are UNIMPLEMENTED.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use prost::Message;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use blgv_sensors::control::braiins::proto;

use super::{hold_silently, EmulatedMiner, Fault, GARBAGE};

/// gRPC status codes used here.
const OK: u8 = 0;
const INVALID_ARGUMENT: u8 = 3;
const UNIMPLEMENTED: u8 = 12;
const UNAUTHENTICATED: u8 = 16;

struct Server {
    miner: Arc<EmulatedMiner>,
    tokens: Mutex<Vec<String>>,
}

pub(crate) async fn serve(listener: TcpListener, miner: Arc<EmulatedMiner>) {
    let server = Arc::new(Server {
        miner,
        tokens: Mutex::new(Vec::new()),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            match server.miner.fault() {
                Fault::Silent => hold_silently(stream).await,
                Fault::Garbage => {
                    let mut stream = stream;
                    let _ = stream.write_all(GARBAGE).await;
                    let _ = stream.shutdown().await;
                }
                Fault::None => {
                    let _ = connection(stream, server).await;
                }
            }
        });
    }
}

async fn connection(stream: TcpStream, server: Arc<Server>) -> Result<(), h2::Error> {
    let mut conn = h2::server::handshake(stream).await?;
    while let Some(next) = conn.accept().await {
        let (request, respond) = next?;
        let server = server.clone();
        tokio::spawn(async move {
            let _ = handle(request, respond, server).await;
        });
    }
    Ok(())
}

enum Outcome {
    Reply(Vec<u8>, Option<String>),
    Fail(u8, String),
}

async fn handle(
    request: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    server: Arc<Server>,
) -> Result<(), h2::Error> {
    let path = request.uri().path().to_string();
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = request.into_body();
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    if server.miner.fault() == Fault::Silent {
        // Started answering before the fault was set: stall this call too.
        std::future::pending::<()>().await;
    }
    let outcome = match grpc_message(&buf) {
        Some(message) => server.dispatch(&path, message, token.as_deref()),
        None => Outcome::Fail(INVALID_ARGUMENT, "malformed gRPC frame".into()),
    };
    match outcome {
        Outcome::Reply(message, header_token) => {
            let mut response = Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/grpc");
            if let Some(t) = header_token {
                response = response.header("authorization", t);
            }
            let mut stream = respond.send_response(response.body(()).unwrap(), false)?;
            let mut frame = Vec::with_capacity(message.len() + 5);
            frame.push(0);
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(&message);
            stream.send_data(Bytes::from(frame), false)?;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(OK as u16));
            stream.send_trailers(trailers)?;
        }
        Outcome::Fail(code, message) => {
            // Trailers-only answer.
            let response = Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/grpc")
                .header("grpc-status", code.to_string())
                .header("grpc-message", percent_encode(&message))
                .body(())
                .unwrap();
            respond.send_response(response, true)?;
        }
    }
    Ok(())
}

/// The single uncompressed message of a unary request.
fn grpc_message(buf: &[u8]) -> Option<&[u8]> {
    if buf.len() < 5 || buf[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    buf.get(5..5 + len)
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Server {
    fn dispatch(&self, path: &str, message: &[u8], token: Option<&str>) -> Outcome {
        let method = path.rsplit('/').next().unwrap_or(path).to_string();
        self.miner.record(method);
        if path == proto::LOGIN {
            let Ok(login) = proto::LoginRequest::decode(message) else {
                return Outcome::Fail(INVALID_ARGUMENT, "bad LoginRequest".into());
            };
            let creds = self.miner.credentials();
            if login.username != creds.username || login.password != creds.password {
                return Outcome::Fail(UNAUTHENTICATED, "Invalid username or password".into());
            }
            let token: String = rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            self.tokens.lock().unwrap().push(token.clone());
            let reply = proto::LoginResponse {
                token: token.clone(),
                timeout_s: 3600,
            };
            return Outcome::Reply(reply.encode_to_vec(), Some(token));
        }
        let authorized = token.is_some_and(|t| self.tokens.lock().unwrap().iter().any(|k| k == t));
        if !authorized {
            return Outcome::Fail(
                UNAUTHENTICATED,
                "Missing or invalid authorization token".into(),
            );
        }
        let miner = &self.miner;
        let reply = match path {
            proto::PAUSE_MINING => proto::PauseMiningResponse {
                already_paused: miner.pause(),
            }
            .encode_to_vec(),
            proto::RESUME_MINING => proto::ResumeMiningResponse {
                already_mining: miner.resume(),
            }
            .encode_to_vec(),
            proto::SET_POWER_TARGET => {
                let Ok(req) = proto::SetPowerTargetRequest::decode(message) else {
                    return Outcome::Fail(INVALID_ARGUMENT, "bad SetPowerTargetRequest".into());
                };
                let watt = req.power_target.map(|p| p.watt).unwrap_or(0) as f64;
                let (min, max) = (miner.nominal_w() * 0.3, miner.nominal_w() * 1.2);
                if watt < min || watt > max {
                    return Outcome::Fail(
                        INVALID_ARGUMENT,
                        format!("Power target {watt} W is out of range {min:.0}-{max:.0} W"),
                    );
                }
                miner.set_limit(Some(watt));
                proto::SetPowerTargetResponse {
                    power_target: Some(proto::Power { watt: watt as u64 }),
                }
                .encode_to_vec()
            }
            proto::GET_TUNER_STATE => proto::GetTunerStateResponse {
                overall_tuner_state: 2,
                power_target_mode_state: Some(proto::PowerTargetModeState {
                    current_target: Some(proto::Power {
                        watt: miner.power_limit_w().unwrap_or(miner.nominal_w()).round() as u64,
                    }),
                }),
            }
            .encode_to_vec(),
            proto::GET_MINER_DETAILS => proto::GetMinerDetailsResponse {
                uid: "emulated-bos".into(),
                hostname: "bos-emulator".into(),
                status: if miner.is_paused() {
                    proto::MINER_STATUS_PAUSED
                } else {
                    proto::MINER_STATUS_NORMAL
                },
            }
            .encode_to_vec(),
            proto::GET_MINER_STATS => proto::GetMinerStatsResponse {
                power_stats: Some(proto::MinerPowerStats {
                    approximated_consumption: Some(proto::Power {
                        watt: miner.power_w().round() as u64,
                    }),
                }),
            }
            .encode_to_vec(),
            _ => return Outcome::Fail(UNIMPLEMENTED, format!("Method {path} not implemented")),
        };
        Outcome::Reply(reply, None)
    }
}
