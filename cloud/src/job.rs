//! A pool job: a Stratum job built from a block template, and the block it becomes when a share
//! meets the network target.

use crate::coinbase;
use crate::template::PreparedTemplate;
use bitcoin::consensus::encode::VarInt;
use bitcoin::consensus::Encodable;
use bitcoin::ScriptBuf;
use blgv_stratum::{DuplicateFilter, Job, Target};
use std::sync::Arc;
use std::time::Instant;

/// What every coinbase of this pool carries.
#[derive(Debug, Clone)]
pub struct CoinbasePolicy {
    pub tag: Vec<u8>,
    pub payout_script: ScriptBuf,
    /// extranonce1 + extranonce2 bytes.
    pub extranonce_len: usize,
}

#[derive(Debug)]
pub struct PoolJob {
    pub job: Job,
    pub template: Arc<PreparedTemplate>,
    pub network_target: Target,
    pub created_at: Instant,
    /// Serialized once, sent to every miner.
    pub notify_line: Arc<str>,
    pub seen: DuplicateFilter,
}

impl PoolJob {
    pub fn build(
        job_id: String,
        template: Arc<PreparedTemplate>,
        clean_jobs: bool,
        ntime: u32,
        policy: &CoinbasePolicy,
    ) -> PoolJob {
        let outputs = [(template.coinbase_value, policy.payout_script.clone())];
        PoolJob::build_paying(job_id, template, clean_jobs, ntime, policy, &outputs)
    }

    /// The same job with a coinbase paying `outputs` (amounts summing to the template's
    /// coinbase value) instead of the pool: a SOLO miner's work. Same id, ntime and age.
    pub fn paying(&self, policy: &CoinbasePolicy, outputs: &[(u64, ScriptBuf)]) -> PoolJob {
        let mut job = PoolJob::build_paying(
            self.job.job_id.clone(),
            self.template.clone(),
            self.job.clean_jobs,
            self.job.ntime,
            policy,
            outputs,
        );
        job.created_at = self.created_at;
        job
    }

    fn build_paying(
        job_id: String,
        template: Arc<PreparedTemplate>,
        clean_jobs: bool,
        ntime: u32,
        policy: &CoinbasePolicy,
        outputs: &[(u64, ScriptBuf)],
    ) -> PoolJob {
        let parts = coinbase::build(
            template.height,
            policy.extranonce_len,
            &policy.tag,
            outputs,
            template.witness_commitment.as_ref(),
        );
        let job = Job::new(
            job_id,
            template.prevhash,
            parts.coinb1,
            parts.coinb2,
            coinbase::merkle_branch(&template.txids),
            template.version,
            template.nbits,
            ntime.max(template.mintime),
            clean_jobs,
        );
        let notify_line = Arc::from(blgv_stratum::line::notify(&job));
        PoolJob {
            network_target: Target::from_compact(template.nbits).unwrap_or(Target::MAX),
            job,
            template,
            created_at: Instant::now(),
            notify_line,
            seen: DuplicateFilter::default(),
        }
    }

    /// The full block for a solved header: header ‖ tx count ‖ coinbase (with the witness
    /// reserved value when the template commits to witnesses) ‖ the template's transactions.
    pub fn block(&self, header: &[u8; 80], extranonce1: &[u8], extranonce2: &[u8]) -> Vec<u8> {
        let legacy = self.job.coinbase(extranonce1, extranonce2);
        let coinbase = if self.template.witness_commitment.is_some() {
            coinbase::with_witness_reserved_value(&legacy)
        } else {
            legacy
        };
        let mut block = Vec::with_capacity(80 + 9 + coinbase.len() + self.template.tx_data.len());
        block.extend_from_slice(header);
        VarInt(1 + self.template.txids.len() as u64)
            .consensus_encode(&mut block)
            .expect("writing to a Vec cannot fail");
        block.extend_from_slice(&coinbase);
        block.extend_from_slice(&self.template.tx_data);
        block
    }
}
