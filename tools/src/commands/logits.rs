//! `mlagent logits`: one forward pass, logits written as a safetensors file.

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use mlagent_engine::generate::check_ids;
use mlagent_engine::{BackendTask, DeviceKind, ForwardInput, StorageDType};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Compute the logits of a token sequence and save them.
///
/// Writes one F32 tensor `logits` of shape [n, vocab] to the output file.
///
/// Example: mlagent logits --model models/tiny --input-ids 1,2,3 --output logits.safetensors
#[derive(clap::Args)]
pub struct Args {
    /// HF model directory (config.json + safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long, value_parser = super::parse_ids)]
    input_ids: std::vec::Vec<u32>,
    /// Output safetensors file.
    #[arg(long)]
    output: PathBuf,
    /// Backend: cpu, ndarray, wgpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// Compute in bf16 (CUDA only; f32 elsewhere).
    #[arg(long)]
    bf16: bool,
}

struct Task(Args);

impl BackendTask for Task {
    type Output = Result<(usize, Vec<f32>)>;
    fn run<B: Backend + mlagent_kernels::KernelBackend>(self, device: B::Device, dtype: FloatDType) -> Self::Output {
        let a = self.0;
        let (model, _) = mlagent_engine::io::load::<B>(&a.model, dtype, &device)?;
        check_ids(std::slice::from_ref(&a.input_ids), model.vocab_size())?;
        let n = a.input_ids.len();
        anyhow::ensure!(n <= model.max_positions(), "{n} tokens exceed the model's {} positions", model.max_positions());
        let ids: Vec<i64> = a.input_ids.iter().map(|&x| x as i64).collect();
        let input = ForwardInput {
            input_ids: Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), &device),
            positions: Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([1, n]),
            pad_lens: None,
        };
        let logits = model.forward(&input, None).cast(FloatDType::F32);
        let v = logits.dims()[2];
        Ok((v, logits.into_data().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?))
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let (output, n, device, bf16) = (args.output.clone(), args.input_ids.len(), args.device, args.bf16);
    let (v, values) = device.run(Task(args), bf16)?;
    let tensors = BTreeMap::from([("logits".to_string(), (vec![n, v], values))]);
    mlagent_engine::weights::save_safetensors(&output, &tensors, StorageDType::F32)
        .with_context(|| format!("writing {}", output.display()))?;
    println!("wrote logits [{n}, {v}] to {}", output.display());
    Ok(())
}
