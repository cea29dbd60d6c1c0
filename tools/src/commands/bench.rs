//! `mlagent bench`: performance measurements printed as a table and optionally as JSON.

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use clap::Subcommand;
use mlagent_engine::preset::Preset;
use burn::tensor::backend::AutodiffBackend;
use mlagent_engine::{AutodiffTask, BackendTask, DeviceKind, ForwardInput, KvCache, Qwen2};
use mlagent_train::sft::{Sample, SftConfig, SftRun};
use std::path::PathBuf;
use std::time::Instant;

/// Benchmarks: the forward pass (prefill, decode) and the SFT training step. Each prints a short
/// table; stage times go to stderr as they happen.
///
/// Example: mlagent bench forward --preset tiny --tokens 512 --device cpu
/// Example: mlagent bench train --preset tiny --tokens 512 --device cpu
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
    /// greedy, after that prefill. One untimed run of the same shape comes first (GPU backends
    /// compile and autotune their kernels per shape).
    ///
    /// Example: mlagent bench forward --model models/tiny --tokens 512 --device cpu
    Forward(ForwardArgs),
    /// Tokens/s of the SFT trainer's optimizer step (forward + backward + AdamW), f32.
    ///
    /// Runs the step `mlagent sft` runs (`SftRun::train_step`: one micro-batch, loss on every
    /// position as in causal-LM training, global-norm clip 1.0, AdamW) on --batch rows of --tokens
    /// synthetic token ids. Reports the median step and the mean over the timed steps (device
    /// synchronised before and after). Stage times go to stderr as they happen.
    ///
    /// Example: mlagent bench train --preset 0.5b --batch 4 --tokens 1024 --steps 5 --device cuda
    Train(TrainArgs),
}

/// The model a benchmark runs: an HF directory, or random weights of a preset shape.
#[derive(clap::Args, Clone)]
struct ModelSource {
    /// HF model directory (or use --preset for random weights of a named shape).
    #[arg(long, required_unless_present = "preset")]
    model: Option<PathBuf>,
    /// Random-weight model of a named shape: tiny or 0.5b.
    #[arg(long, conflicts_with = "model")]
    preset: Option<Preset>,
}

impl ModelSource {
    /// Loads the model in `dtype` (a preset gets at least `positions` positions) and its name.
    fn load<B: Backend>(&self, dtype: FloatDType, positions: usize, device: &B::Device) -> Result<(Qwen2<B>, String)> {
        Ok(match (&self.model, self.preset) {
            (Some(dir), _) => (mlagent_engine::io::load::<B>(dir, dtype, device)?.0, dir.display().to_string()),
            (None, Some(p)) => {
                let mut cfg = p.config();
                cfg.max_position_embeddings = cfg.max_position_embeddings.max(positions);
                (mlagent_engine::io::init_random::<B>(&cfg, 0, 0.02, dtype, device), format!("preset {p:?}"))
            }
            (None, None) => bail!("give --model DIR or --preset NAME"),
        })
    }
}

#[derive(clap::Args, Clone)]
struct TrainArgs {
    #[command(flatten)]
    source: ModelSource,
    /// Tokens per row.
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// Rows per step.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed optimizer steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first (kernel compilation, autotuning, allocator warm-up).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Backend: cpu, wgpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// Recompute element-wise activations in the backward pass instead of keeping them (burn's
    /// balanced gradient checkpointing, as `mlagent sft --grad-checkpointing`).
    #[arg(long)]
    grad_checkpointing: bool,
    /// Print one JSON line with the results as well.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Clone)]
struct ForwardArgs {
    #[command(flatten)]
    source: ModelSource,
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

/// Seconds since `start`, for the stage lines on stderr.
fn stamp(start: Instant, what: &str) {
    eprintln!("[{:>7.1} s] {what}", start.elapsed().as_secs_f64());
}

struct Timing {
    prefill_s: f64,
    decode_s: f64,
}

/// Median (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) { (v[n / 2 - 1] + v[n / 2]) / 2.0 } else { v[n / 2] }
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
        let t0 = Instant::now();
        let (model, name) = a.source.load::<B>(dtype, a.tokens + a.decode_tokens + 1, &device)?;
        if a.tokens == 0 || a.tokens + a.decode_tokens > model.max_positions() {
            bail!("--tokens {} + --decode-tokens {} must be within 1..={} positions", a.tokens, a.decode_tokens, model.max_positions());
        }
        stamp(t0, "model ready");
        // The warm-up is a full run: GPU backends compile and autotune per shape (51 s for the first
        // 2048-token 0.5B prefill on an H200 after a 16-token warm-up; 0.05 s the next time).
        prefill_and_decode(&model, &a, &device);
        stamp(t0, "warm-up run done");
        let runs: Vec<Timing> = (0..a.repeats.max(1))
            .map(|i| {
                let r = prefill_and_decode(&model, &a, &device);
                stamp(t0, &format!("run {}: prefill {:.3} s, decode {:.3} s", i + 1, r.prefill_s, r.decode_s));
                r
            })
            .collect();
        let timing = Timing {
            prefill_s: median(runs.iter().map(|r| r.prefill_s).collect()),
            decode_s: median(runs.iter().map(|r| r.decode_s).collect()),
        };
        Ok((timing, name))
    }
}

struct TrainTask(TrainArgs);

/// What `bench train` measured.
struct TrainTiming {
    /// Seconds of each timed step, as `SftRun::train_step` measured it.
    steps_s: Vec<f64>,
    /// Wall seconds of all timed steps, device synchronised at both ends.
    total_s: f64,
    /// Loss of every step, warm-up included.
    losses: Vec<f64>,
    name: String,
}

impl AutodiffTask for TrainTask {
    type Output = Result<TrainTiming>;
    fn run<B: AutodiffBackend + mlagent_kernels::KernelBackend>(self, device: B::Device) -> Self::Output
    where
        B::InnerBackend: mlagent_kernels::KernelBackend,
    {
        let a = self.0;
        if a.tokens < 2 || a.batch == 0 || a.steps == 0 {
            bail!("--tokens must be at least 2, --batch and --steps at least 1");
        }
        let t0 = Instant::now();
        let (model, name) = a.source.load::<B>(FloatDType::F32, a.tokens + 1, &device)?;
        if a.tokens > model.max_positions() {
            bail!("--tokens {} exceeds the model's {} positions", a.tokens, model.max_positions());
        }
        stamp(t0, "model ready");
        let v = model.vocab_size() as u64;
        let n = a.warmup + a.steps;
        // One row of `tokens + 1` ids gives `tokens` input positions, every one labelled.
        let samples: Vec<Sample> = (0..n * a.batch)
            .map(|r| Sample {
                ids: (0..=a.tokens).map(|j| (((r * (a.tokens + 1) + j) as u64 * 7919 + 13) % v) as u32).collect(),
                labels: vec![true; a.tokens + 1],
            })
            .collect();
        let cfg = SftConfig {
            epochs: 1,
            lr: 1e-5,
            batch_size: a.batch,
            grad_accum: 1,
            cutoff_len: a.tokens + 1,
            warmup_steps: 0,
            seed: 0,
            weight_decay: 0.0,
            beta2: 0.999,
            max_grad_norm: 1.0,
            save_every: 0,
            max_steps: None,
            max_prompt_tokens: None,
        };
        let mut run = SftRun::<B>::new(model, &samples, cfg, device.clone())?;
        let (mut losses, mut steps_s) = (Vec::with_capacity(n), Vec::with_capacity(a.steps));
        let mut start = Instant::now();
        for i in 0..n {
            if i == a.warmup {
                B::sync(&device)?; // the timed steps start on an idle device
                start = Instant::now();
            }
            let m = run.train_step(&samples);
            let what = if i < a.warmup { format!("warm-up step {}", i + 1) } else { format!("step {}", i + 1 - a.warmup) };
            stamp(t0, &format!("{what}: {:.3} s, loss {:.4}", m.seconds, m.loss));
            losses.push(m.loss);
            if i >= a.warmup {
                steps_s.push(m.seconds);
            }
        }
        B::sync(&device)?;
        Ok(TrainTiming { steps_s, total_s: start.elapsed().as_secs_f64(), losses, name })
    }
}

fn run_train(a: TrainArgs) -> Result<()> {
    let (device, json, b, t, ckpt) = (a.device, a.json, a.batch, a.tokens, a.grad_checkpointing);
    let timing = device.run_autodiff_checkpointed(TrainTask(a), ckpt)?;
    let tokens = (b * t) as f64;
    let steps = timing.steps_s.len() as f64;
    let median_s = median(timing.steps_s.clone());
    let mean_tps = tokens * steps / timing.total_s;
    println!("model    {}", timing.name);
    let ckpt_note = if ckpt { ", gradient checkpointing" } else { "" };
    println!("device   {device}, f32 weights, activations and AdamW state, batch {b} × {t} tokens{ckpt_note}");
    println!("| measure            | seconds/step | tokens/s |");
    println!("|--------------------|--------------|----------|");
    println!("| median step        | {median_s:>12.3} | {:>8.1} |", tokens / median_s);
    println!("| mean, synchronised | {:>12.3} | {mean_tps:>8.1} |", timing.total_s / steps);
    if json {
        println!(
            "{}",
            serde_json::json!({"model": timing.name, "device": device.to_string(), "dtype": "f32", "batch": b, "tokens": t,
                "steps": timing.steps_s.len(), "median_step_s": median_s, "median_tokens_per_s": tokens / median_s,
                "mean_tokens_per_s": mean_tps, "grad_checkpointing": ckpt, "losses": timing.losses})
        );
    }
    Ok(())
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let a = match args.what {
        What::Forward(a) => a,
        What::Train(a) => return run_train(a),
    };
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
