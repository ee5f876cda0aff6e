//! Braiins OS / Braiins OS+ public API v1: gRPC (HTTP/2, protobuf) on TCP 50051.
//!
//! Protocol (braiins `bos-plus-api` protos, package `braiins.bos.v1`; cross-checked with pyasic's
//! `web/braiins_os/boser.py`):
//! * `AuthenticationService/Login {username, password}` answers the session token in the
//!   `authorization` response header (and in `LoginResponse.token`); every other call sends it
//!   back as the `authorization` request metadata. A bad password is `UNAUTHENTICATED`.
//! * pause: `ActionsService/PauseMining`; resume: `ActionsService/ResumeMining`.
//! * power limit: `PerformanceService/SetPowerTarget {save_action: SAVE_AND_APPLY,
//!   power_target: {watt}}`.
//! * status: `MinerService/GetMinerDetails.status` (NORMAL = hashing),
//!   `MinerService/GetMinerStats.power_stats.approximated_consumption`,
//!   `PerformanceService/GetTunerState.power_target_mode_state.current_target`.
//!
//! No protoc is needed: the few messages are written by hand below with prost's derive, with
//! the field numbers of the published protos, and calls go through `tonic::client::Grpc` with
//! `ProstCodec`.

use std::time::Duration;

use tokio::sync::{Mutex, OnceCell};
use tonic::codec::ProstCodec;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::{
    Capabilities, ControlError, FirmwareKind, MinerControl, MinerEndpoint, MinerStatus, Secret,
};

/// Hand-written prost messages of `braiins.bos.v1` (only the fields used here).
pub mod proto {
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct LoginRequest {
        #[prost(string, tag = "1")]
        pub username: String,
        #[prost(string, tag = "2")]
        pub password: String,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct LoginResponse {
        #[prost(string, tag = "1")]
        pub token: String,
        #[prost(uint32, tag = "2")]
        pub timeout_s: u32,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct PauseMiningRequest {}

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct PauseMiningResponse {
        #[prost(bool, tag = "1")]
        pub already_paused: bool,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ResumeMiningRequest {}

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ResumeMiningResponse {
        #[prost(bool, tag = "1")]
        pub already_mining: bool,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Power {
        #[prost(uint64, tag = "1")]
        pub watt: u64,
    }

    /// `braiins.bos.v1.SaveAction`.
    pub const SAVE_ACTION_SAVE_AND_APPLY: i32 = 2;

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct SetPowerTargetRequest {
        #[prost(int32, tag = "1")]
        pub save_action: i32,
        #[prost(message, optional, tag = "2")]
        pub power_target: Option<Power>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct SetPowerTargetResponse {
        #[prost(message, optional, tag = "1")]
        pub power_target: Option<Power>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct GetMinerDetailsRequest {}

    /// `braiins.bos.v1.MinerStatus` values.
    pub const MINER_STATUS_NOT_STARTED: i32 = 1;
    pub const MINER_STATUS_NORMAL: i32 = 2;
    pub const MINER_STATUS_PAUSED: i32 = 3;

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct GetMinerDetailsResponse {
        #[prost(string, tag = "1")]
        pub uid: String,
        #[prost(string, tag = "6")]
        pub hostname: String,
        #[prost(int32, tag = "12")]
        pub status: i32,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct GetMinerStatsRequest {}

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct MinerPowerStats {
        #[prost(message, optional, tag = "1")]
        pub approximated_consumption: Option<Power>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct GetMinerStatsResponse {
        #[prost(message, optional, tag = "3")]
        pub power_stats: Option<MinerPowerStats>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct GetTunerStateRequest {}

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct PowerTargetModeState {
        #[prost(message, optional, tag = "2")]
        pub current_target: Option<Power>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct GetTunerStateResponse {
        #[prost(int32, tag = "1")]
        pub overall_tuner_state: i32,
        #[prost(message, optional, tag = "2")]
        pub power_target_mode_state: Option<PowerTargetModeState>,
    }

    pub const LOGIN: &str = "/braiins.bos.v1.AuthenticationService/Login";
    pub const PAUSE_MINING: &str = "/braiins.bos.v1.ActionsService/PauseMining";
    pub const RESUME_MINING: &str = "/braiins.bos.v1.ActionsService/ResumeMining";
    pub const SET_POWER_TARGET: &str = "/braiins.bos.v1.PerformanceService/SetPowerTarget";
    pub const GET_TUNER_STATE: &str = "/braiins.bos.v1.PerformanceService/GetTunerState";
    pub const GET_MINER_DETAILS: &str = "/braiins.bos.v1.MinerService/GetMinerDetails";
    pub const GET_MINER_STATS: &str = "/braiins.bos.v1.MinerService/GetMinerStats";
}

const DEFAULT_USERNAME: &str = "root";

pub struct BraiinsOs {
    address: String,
    timeout: Duration,
    username: String,
    password: Option<Secret>,
    channel: OnceCell<Channel>,
    token: Mutex<Option<String>>,
}

impl BraiinsOs {
    pub fn new(endpoint: &MinerEndpoint) -> Self {
        BraiinsOs {
            address: endpoint.host_port(),
            timeout: endpoint.timeout(),
            username: endpoint
                .username
                .clone()
                .unwrap_or_else(|| DEFAULT_USERNAME.to_string()),
            password: endpoint.password.clone(),
            channel: OnceCell::new(),
            token: Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<Channel, ControlError> {
        self.channel
            .get_or_try_init(|| async {
                let endpoint = Endpoint::from_shared(format!("http://{}", self.address))
                    .map_err(|e| ControlError::Unreachable {
                        address: self.address.clone(),
                        detail: format!("not a usable address: {e}"),
                    })?
                    .connect_timeout(self.timeout)
                    // Our own deadline (below) fires first and names the miner; this one only
                    // stops a request that somehow outlives it.
                    .timeout(self.timeout + Duration::from_millis(500))
                    .tcp_nodelay(true);
                Ok(endpoint.connect_lazy())
            })
            .await
            .cloned()
    }

    fn map_status(&self, path: &str, status: Status) -> ControlError {
        let address = self.address.clone();
        let method = path.rsplit('/').next().unwrap_or(path);
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => ControlError::Auth {
                address,
                detail: format!("{method}: {}", status.message()),
                fix: "set `username` (default root) and `password` in this miner's endpoint \
                      config to the Braiins OS login"
                    .into(),
            },
            Code::DeadlineExceeded => ControlError::Timeout {
                address,
                after_ms: self.timeout.as_millis() as u64,
            },
            Code::Cancelled if source_chain(&status).contains("Timeout expired") => {
                ControlError::Timeout {
                    address,
                    after_ms: self.timeout.as_millis() as u64,
                }
            }
            Code::Unimplemented => ControlError::Unsupported {
                address,
                what: format!(
                    "this Braiins OS version does not implement {method} ({}); update Braiins OS \
                     to a version with public API v1",
                    status.message()
                ),
            },
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists
            | Code::NotFound
            | Code::ResourceExhausted
            | Code::Aborted => ControlError::Rejected {
                address,
                message: format!("{method}: {}", status.message()),
            },
            Code::Unavailable if is_connect_failure(&status) => ControlError::Unreachable {
                address,
                detail: status.message().to_string(),
            },
            _ => ControlError::Protocol {
                address,
                detail: format!(
                    "{method}: gRPC {:?}: {}{}",
                    status.code(),
                    status.message(),
                    source_chain(&status)
                ),
            },
        }
    }

    async fn unary<Req, Resp>(
        &self,
        path: &'static str,
        message: Req,
        token: Option<&str>,
    ) -> Result<(Resp, Option<String>), ControlError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let channel = self.channel().await?;
        let call = async {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.map_err(|e| {
                let status = Status::from_error(Box::new(e));
                self.map_status(path, status)
            })?;
            let mut request = Request::new(message);
            if let Some(token) = token {
                let value = token.parse().map_err(|_| ControlError::Protocol {
                    address: self.address.clone(),
                    detail: "the login token is not a valid header value".into(),
                })?;
                request.metadata_mut().insert("authorization", value);
            }
            let codec: ProstCodec<Req, Resp> = ProstCodec::default();
            let response = grpc
                .unary(request, PathAndQuery::from_static(path), codec)
                .await
                .map_err(|s| self.map_status(path, s))?;
            let header_token = response
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok((response.into_inner(), header_token))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(ControlError::Timeout {
                address: self.address.clone(),
                after_ms: self.timeout.as_millis() as u64,
            }),
        }
    }

    async fn login(&self) -> Result<String, ControlError> {
        let Some(password) = &self.password else {
            return Err(ControlError::Auth {
                address: self.address.clone(),
                detail: "no password configured".into(),
                fix: "set `password` (and `username`, default root) in this miner's endpoint \
                      config to the Braiins OS login"
                    .into(),
            });
        };
        let request = proto::LoginRequest {
            username: self.username.clone(),
            password: password.expose().to_string(),
        };
        let (reply, header): (proto::LoginResponse, _) =
            self.unary(proto::LOGIN, request, None).await?;
        let token = header
            .filter(|t| !t.is_empty())
            .or_else(|| Some(reply.token).filter(|t| !t.is_empty()))
            .ok_or_else(|| ControlError::Protocol {
                address: self.address.clone(),
                detail: "Login answered without a token".into(),
            })?;
        Ok(token)
    }

    /// An authenticated call; logs in when needed and once more if the token expired.
    async fn call<Req, Resp>(&self, path: &'static str, message: Req) -> Result<Resp, ControlError>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut slot = self.token.lock().await;
        let reused = slot.is_some();
        let token = match slot.as_ref() {
            Some(t) => t.clone(),
            None => {
                let t = self.login().await?;
                *slot = Some(t.clone());
                t
            }
        };
        drop(slot);
        match self.unary(path, message.clone(), Some(&token)).await {
            Ok((resp, _)) => Ok(resp),
            Err(ControlError::Auth { .. }) if reused => {
                let fresh = self.login().await?;
                *self.token.lock().await = Some(fresh.clone());
                self.unary(path, message, Some(&fresh))
                    .await
                    .map(|(r, _)| r)
            }
            Err(e) => Err(e),
        }
    }
}

fn source_chain(status: &Status) -> String {
    let mut out = String::new();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn is_connect_failure(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | NotFound
                    | AddrNotAvailable
                    | HostUnreachable
                    | NetworkUnreachable
            ) {
                return true;
            }
        }
        let text = s.to_string();
        if text.contains("Connection refused") || text.contains("dns error") {
            return true;
        }
        source = s.source();
    }
    status.message().contains("Connection refused")
}

#[async_trait::async_trait]
impl MinerControl for BraiinsOs {
    async fn pause(&self) -> Result<(), ControlError> {
        let _: proto::PauseMiningResponse = self
            .call(proto::PAUSE_MINING, proto::PauseMiningRequest {})
            .await?;
        Ok(())
    }

    async fn resume(&self) -> Result<(), ControlError> {
        let _: proto::ResumeMiningResponse = self
            .call(proto::RESUME_MINING, proto::ResumeMiningRequest {})
            .await?;
        Ok(())
    }

    async fn set_power_limit(&self, watts: u32) -> Result<(), ControlError> {
        let request = proto::SetPowerTargetRequest {
            save_action: proto::SAVE_ACTION_SAVE_AND_APPLY,
            power_target: Some(proto::Power { watt: watts as u64 }),
        };
        let _: proto::SetPowerTargetResponse = self.call(proto::SET_POWER_TARGET, request).await?;
        Ok(())
    }

    async fn status(&self) -> Result<MinerStatus, ControlError> {
        let details: proto::GetMinerDetailsResponse = self
            .call(proto::GET_MINER_DETAILS, proto::GetMinerDetailsRequest {})
            .await?;
        let stats: proto::GetMinerStatsResponse = self
            .call(proto::GET_MINER_STATS, proto::GetMinerStatsRequest {})
            .await?;
        let tuner: Result<proto::GetTunerStateResponse, _> = self
            .call(proto::GET_TUNER_STATE, proto::GetTunerStateRequest {})
            .await;
        let power_limit_w = match tuner {
            Ok(t) => t
                .power_target_mode_state
                .and_then(|s| s.current_target)
                .map(|p| p.watt.min(u32::MAX as u64) as u32),
            // Without a tuner (e.g. no licence for it) there is simply no target.
            Err(ControlError::Unsupported { .. }) | Err(ControlError::Rejected { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(MinerStatus {
            hashing: details.status == proto::MINER_STATUS_NORMAL,
            power_w: stats
                .power_stats
                .and_then(|p| p.approximated_consumption)
                .map(|p| p.watt as f64),
            power_limit_w,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            power_limit: true,
        }
    }

    fn kind(&self) -> FirmwareKind {
        FirmwareKind::BraiinsOs
    }
}
