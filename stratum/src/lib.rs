//! Stratum V1 for BLGV Site: the wire protocol, share math, validation and vardiff shared by the
//! site proxy and the pool coordinator. No sockets, config or storage live here.

pub mod codec;
mod extranonce;
mod hash;
mod hex_field;
mod job;
pub mod limits;
pub mod message;
mod recent_jobs;
mod share;
mod submit_fast;
mod target;
pub mod vardiff;

pub use codec::{CodecError, LineCodec};
pub use extranonce::Extranonce;
pub use hash::{sha256d, ShareHash};
pub use job::{swap_prevhash_words, Job};
pub use message::{
    line, Authorize, ClientRequest, Configure, ErrorCode, Frame, FrameError, ParamError,
    ServerNotification, StratumError, Submit, Subscribe, SubscribeResult,
};
pub use recent_jobs::{DuplicateFilter, RecentJobs, JOBS_KEPT};
pub use share::{check_share, hash_difficulty, CheckedShare, ShareRejection, ShareRules};
pub use submit_fast::parse_submit_line;
pub use target::{Difficulty, InvalidDifficulty, Target};
pub use vardiff::{Vardiff, VardiffRules};
