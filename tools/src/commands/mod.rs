//! One file per subcommand; shared argument helpers here.

pub mod bench;
pub mod chat_template;
pub mod collect;
pub mod demo;
pub mod env;
pub mod eval;
pub mod generate;
pub mod grade;
pub mod info;
pub mod init_model;
pub mod kernels;
pub mod logits;
pub mod rl;
pub mod sft;
pub mod tasks;

use anyhow::{Context, Result, bail};

/// Parses `1,2,3` into token ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().with_context(|| format!("token id {t:?} is not a non-negative integer")))
        .collect::<Result<Vec<u32>>>()?;
    if ids.is_empty() {
        bail!("no token ids given");
    }
    Ok(ids)
}
