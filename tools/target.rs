//! The restore-target flags shared by lsw-pull, `litestream restore` and
//! friends.

use clap::Args;
use lsw::plan::{PlanRequest, Target};

use crate::cli;

#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Restore from this generation (default: the one written to last).
    #[arg(long, value_name = "GEN", value_parser = cli::parse_generation)]
    pub generation: Option<u64>,

    /// Restore the state right after this transaction (it must end a segment).
    #[arg(long, value_name = "N", conflicts_with_all = ["index", "timestamp"])]
    pub txid: Option<u64>,

    /// The same as --txid, in hex (Litestream's -index).
    #[arg(long, value_name = "HEX", value_parser = parse_hex, conflicts_with = "timestamp")]
    pub index: Option<u64>,

    /// Restore the newest state committed at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = cli::parse_timestamp)]
    pub timestamp: Option<u64>,
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("invalid hex index {s:?}"))
}

impl TargetArgs {
    pub fn request(&self) -> PlanRequest {
        let target = match (self.txid.or(self.index), self.timestamp) {
            (Some(t), _) => Target::Txid(t),
            (None, Some(ts)) => Target::Timestamp(ts),
            (None, None) => Target::Latest,
        };
        PlanRequest {
            generation: self.generation,
            target,
        }
    }
}
