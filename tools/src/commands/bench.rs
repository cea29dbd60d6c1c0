//! `mlagent bench`: performance measurements printed as a table and optionally as JSON.

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use clap::Subcommand;
use mlagent_engine::preset::Preset;
use mlagent_engine::{BackendTask, DeviceKind, ForwardInput, KvCache, Qwen2};
use std::path::PathBuf;
use std::time::Instant;

/// Benchmarks. Each prints a short table; times are medians over --repeats after one warm-up.
///
/// Example: mlagent bench forward --preset tiny --tokens 512 --device cpu
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Prefill and decode tokens/s of the model forward pass.
    ///
    /// Prefill: one forward over --tokens prompt tokens filling the KV cache, logits for the last
    /// position (as generation does). Decode: --decode-tokens single-token steps with the cache,
    /// greedy, after that prefill.
    ///
    /// Example: mlagent bench forward --model models/tiny --tokens 512 --device cpu
    Forward(ForwardArgs),
}

#[derive(clap::Args, Clone)]
struct ForwardArgs {
    /// HF model directory (or use --preset for random weights of a named shape).
    #[arg(long, required_unless_present = "preset")]
    model: Option<PathBuf>,
    /// Random-weight model of a named shape: tiny or 0.5b.
    #[arg(long, conflicts_with = "model")]
    preset: Option<Preset>,
    /// Prompt length for prefill.
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// Decode steps after prefill.
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
    /// Batch rows (each the same length).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Backend: cpu, ndarray, wgpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// Compute in bf16 (CUDA only).
    #[arg(long)]
    bf16: bool,
    /// Print one JSON line with the results as well.
    #[arg(long)]
    json: bool,
}

struct Task(ForwardArgs);

struct Timing {
    prefill_s: f64,
    decode_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn prefill_and_decode<B: mlagent_kernels::KernelBackend>(model: &Qwen2<B>, a: &ForwardArgs, device: &B::Device) -> Timing {
    let (b, t) = (a.batch, a.tokens);
    let v = model.vocab_size() as i64;
    let ids: Vec<i64> = (0..b * t).map(|i| (i as i64 * 7919 + 13) % v).collect();
    let input = ForwardInput {
        input_ids: Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), device),
        positions: Tensor::<B, 1, Int>::arange(0..t as i64, device).reshape([1, t]).repeat_dim(0, b),
        pad_lens: None,
    };
    let mut cache = KvCache::new(model.num_layers());
    let start = Instant::now();
    let hidden = model.forward_hidden(&input, Some(&mut cache));
    let logits = model.logits(hidden.narrow(1, t - 1, 1)); // [B, 1, V]
    let mut next = logits.argmax(2).reshape([b, 1]).into_data().convert::<i64>().to_vec::<i64>().expect("ids");
    let prefill_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for step in 0..a.decode_tokens {
        let input = ForwardInput {
            input_ids: Tensor::<B, 2, Int>::from_data(TensorData::new(next.clone(), [b, 1]), device),
            positions: Tensor::<B, 2, Int>::from_data(TensorData::new(vec![(t + step) as i64; b], [b, 1]), device),
            pad_lens: None,
        };
        let logits = model.forward(&input, Some(&mut cache)); // [B, 1, V]
        next = logits.argmax(2).reshape([b, 1]).into_data().convert::<i64>().to_vec::<i64>().expect("ids");
    }
    Timing { prefill_s, decode_s: start.elapsed().as_secs_f64() }
}

impl BackendTask for Task {
    type Output = Result<(Timing, String)>;
    fn run<B: Backend + mlagent_kernels::KernelBackend>(self, device: B::Device, dtype: FloatDType) -> Self::Output {
        let a = self.0;
        let (model, name) = match (&a.model, a.preset) {
            (Some(dir), _) => (mlagent_engine::io::load::<B>(dir, dtype, &device)?.0, dir.display().to_string()),
            (None, Some(p)) => {
                let mut cfg = p.config();
                cfg.max_position_embeddings = cfg.max_position_embeddings.max(a.tokens + a.decode_tokens + 1);
                (mlagent_engine::io::init_random::<B>(&cfg, 0, 0.02, dtype, &device), format!("preset {p:?}"))
            }
            (None, None) => bail!("give --model DIR or --preset NAME"),
        };
        if a.tokens == 0 || a.tokens + a.decode_tokens > model.max_positions() {
            bail!("--tokens {} + --decode-tokens {} must be within 1..={} positions", a.tokens, a.decode_tokens, model.max_positions());
        }
        let warm = ForwardArgs { tokens: a.tokens.min(16), decode_tokens: 2, ..a.clone() };
        prefill_and_decode(&model, &warm, &device);
        let runs: Vec<Timing> = (0..a.repeats.max(1)).map(|_| prefill_and_decode(&model, &a, &device)).collect();
        let timing = Timing {
            prefill_s: median(runs.iter().map(|r| r.prefill_s).collect()),
            decode_s: median(runs.iter().map(|r| r.decode_s).collect()),
        };
        Ok((timing, name))
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let What::Forward(a) = args.what;
    let (device, bf16, json) = (a.device, a.bf16, a.json);
    let (b, t, d) = (a.batch, a.tokens, a.decode_tokens);
    let (timing, name) = device.run(Task(a), bf16)?;
    let prefill_tps = (b * t) as f64 / timing.prefill_s;
    let decode_tps = if d > 0 { (b * d) as f64 / timing.decode_s } else { 0.0 };
    let dtype = if device.dtype(bf16) == FloatDType::BF16 { "bf16" } else { "f32" };
    println!("model    {name}");
    println!("device   {device}, {dtype}, batch {b}");
    println!("| phase   | tokens | seconds | tokens/s |");
    println!("|---------|--------|---------|----------|");
    println!("| prefill | {:>6} | {:>7.3} | {:>8.1} |", b * t, timing.prefill_s, prefill_tps);
    println!("| decode  | {:>6} | {:>7.3} | {:>8.1} |", b * d, timing.decode_s, decode_tps);
    if json {
        println!(
            "{}",
            serde_json::json!({"model": name, "device": device.to_string(), "dtype": dtype, "batch": b,
                "prefill_tokens": t, "decode_tokens": d, "prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps})
        );
    }
    Ok(())
}
