//! `mlagent kernels`: correctness checks and benchmarks of the fused ops of `mlagent-kernels`
//! (flash attention forward/backward and the PPO loss from logits) on a chosen device.

use anyhow::{Result, bail};
use burn::backend::{Autodiff, Flex, NdArray, Wgpu};
use mlagent_engine::device::CudaBackend;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Distribution, FloatDType, Int, Tensor, TensorData};
use clap::{Subcommand, ValueEnum};
use mlagent_engine::DeviceKind;
use mlagent_kernels::device_memory::{check_buffer_fits, pool_bytes};
use mlagent_kernels::check::{AttentionCase, attention_rel_errors, ppo_rel_errors, uniform};
use mlagent_kernels::ppo::{PpoBatch, ppo_loss_reference};
use mlagent_kernels::attention::attention_reference;
use mlagent_kernels::{AttentionMask, BackwardFrom, KernelBackend, KlEstimator, KlPenalty, PpoConfig, backward_from, flash_attention, ppo_loss};
use std::time::Instant;

/// Check and time the fused kernels (flash attention, PPO loss from logits).
///
/// Example: mlagent kernels check --device wgpu --dtype f32 --causal --format json
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Compare the fused ops with a float64 CPU reference on fresh random inputs.
    ///
    /// Attention: output and dQ/dK/dV for the loss Σ out∘W (random W), with left padding on odd
    /// batch rows. PPO: loss and dlogits with dual clip c = 3 and a k3 KL penalty (β = 0.1), on
    /// targets anywhere in the vocabulary, masks with zeros, advantages of both signs and ratios
    /// on both sides of the clip range. Each error is ‖ours − ref‖ / ‖ref‖. The attention backward
    /// checked is the kernels' (training uses them only where the register-tile ones apply, else
    /// the closed-form reference; see MLAGENT_ATTENTION_BWD in the README).
    /// MLAGENT_ATTENTION=portable|cmma|mma|mma-direct|mma-emulated|cmma-emulated picks the
    /// kernels (default: the register-tile mma kernels where the device has mma.sync (CUDA,
    /// f16/bf16), else tensor-core cmma, else portable); MLAGENT_MMA_ROWS=16 gives the mma forward
    /// 16 query rows per warp instead of 32, MLAGENT_MMA_ASYNC=0 loads the mma kernels' tiles
    /// through registers instead of cp.async, MLAGENT_MMA_BWD=fused runs the mma backward as one
    /// kernel (dQ by atomic adds; slower than the two kernels on an H200), MLAGENT_MMA_BWD=wide
    /// runs its dK/dV kernel with FlashAttention-2's warp layout (P and dS through shared memory;
    /// not yet timed), MLAGENT_MMA_BWD=wide-fused also adds dQ in that kernel (FlashAttention-2's
    /// single backward kernel; not yet timed), and MLAGENT_MMA_BWD_PLANES=2|4|8 sets the dK/dV
    /// side's warps per cube. The kernels that ran are named on stderr (json) or in the header.
    ///
    /// Example: mlagent kernels check --device wgpu --dtype f32 --batch 2 --heads 6 --kv-heads 2
    /// --seq-len 128 --head-dim 64 --causal --vocab 5000 --tokens 64 --format json
    Check(CheckArgs),
    /// Time a fused op against burn's built-in attention or the plain-ops PPO reference.
    ///
    /// Median of --repeats timed runs after --warmup runs, the device synchronised around each
    /// (host work and launch latency included), and the mean of --repeats runs queued back to back
    /// ("queued": the device's time per run, as CUDA-event timings report it).
    /// Attention reports TFLOP/s (4·B·H·S²·D, halved when causal; backward counted as 2.5× the
    /// forward), PPO reports GB/s (logits read, plus dlogits written with --bwd). --bwd times the
    /// forward and the backward from a fixed random dO (as FlashAttention's benchmarks call
    /// out.backward(dO): the graph is seeded with dO, no product or reduction over the output), with
    /// --reference-bwd the closed-form backward instead of the kernels.
    /// --baseline reference compares attention with the plain-ops reference instead of burn's
    /// attention (whose autotuning can take minutes on CUDA). On WGPU and CUDA each implementation's first call also reports device
    /// memory beyond its inputs: what it kept (its outputs, gradients with --bwd) and a bound on its
    /// peak (the memory pools' reserved bytes after it less those in use before).
    ///
    /// Example: mlagent kernels bench --device cuda --dtype bf16 --op attention --seq-len 4096 --causal --bwd
    Bench(BenchArgs),
}

/// Element type of the inputs (arithmetic is f32 inside the kernels).
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

impl From<Dtype> for FloatDType {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => FloatDType::F32,
            Dtype::F16 => FloatDType::F16,
            Dtype::Bf16 => FloatDType::BF16,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Format {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Op {
    Attention,
    Ppo,
}

#[derive(clap::Args, Clone)]
struct CheckArgs {
    /// Backend: cpu, ndarray, wgpu (the CPU adapter when no GPU exists, e.g. Mesa lavapipe), cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// Input dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    /// Attention batch size B.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Query heads H.
    #[arg(long, default_value_t = 6)]
    heads: usize,
    /// Key/value heads (must divide --heads).
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// Sequence length S (queries and keys).
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Head dimension D.
    #[arg(long, default_value_t = 32)]
    head_dim: usize,
    /// Causal attention.
    #[arg(long)]
    causal: bool,
    /// PPO vocabulary size V.
    #[arg(long, default_value_t = 1000)]
    vocab: usize,
    /// PPO tokens N.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output: a table, or one JSON line (the last line of stdout).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also compare each kernel on its own, without autodiff (log-probs forward and backward,
    /// attention forward and backward from fixed inputs), and the plain-ops references run on the
    /// device, printing each stage's error and first differing elements to stderr as it finishes
    /// (and a "stages" key in the JSON): pins a wrong gradient on one kernel, the autodiff wiring
    /// or the backend.
    #[arg(long)]
    stages: bool,
    /// Multiply the keys of the t-th 64-key tile by 1 + G·t (G ≥ 0): scores then rise tile after
    /// tile, so the forward kernels raise their running row maxima again and again (their
    /// rescaling paths, which random inputs rarely reach). 12 does it at head dim 16–128.
    #[arg(long, default_value_t = 0.0)]
    key_growth: f64,
}

#[derive(clap::Args, Clone)]
struct BenchArgs {
    /// Backend: cpu, ndarray, wgpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// Input dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    /// Which op.
    #[arg(long, value_enum)]
    op: Op,
    /// Attention sequence length S.
    #[arg(long, default_value_t = 4096)]
    seq_len: usize,
    /// Causal attention.
    #[arg(long)]
    causal: bool,
    /// Time forward + backward instead of forward only.
    #[arg(long)]
    bwd: bool,
    /// Attention batch size B.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Query heads H.
    #[arg(long, default_value_t = 28)]
    heads: usize,
    /// Key/value heads.
    #[arg(long, default_value_t = 4)]
    kv_heads: usize,
    /// Head dimension D.
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
    /// PPO tokens N.
    #[arg(long, default_value_t = 8192)]
    tokens: usize,
    /// PPO vocabulary V.
    #[arg(long, default_value_t = 152064)]
    vocab: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Untimed runs first (kernel compilation, autotune).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Output: a table, or a table and one JSON line.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Time only our kernel, not the baseline (burn's attention / the plain-ops reference), e.g.
    /// when the baseline's own autotuning takes longer than the device time at hand.
    #[arg(long)]
    no_baseline: bool,
    /// What ours is compared with: `burn` (attention only: burn's built-in attention, K/V repeated
    /// to H heads outside the timing) or `reference` (the plain burn ops the kernels are checked
    /// against: attention through matmuls with its [B, H, S, S] scores materialised, GQA by
    /// reshaping; for PPO the only baseline). Default: burn for attention, reference for PPO.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// With --op attention --bwd: time our forward kernel with the closed-form reference backward
    /// (FA2's formulas on whole [S, S] matrices through burn's matmuls), which is what training
    /// uses where the register-tile kernels do not apply (f32, WGPU), instead of the backward
    /// kernels.
    #[arg(long)]
    reference_bwd: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Baseline {
    Burn,
    Reference,
}

/// Work generic over an autodiff backend with the fused ops (the inner backend has them too).
trait KernelTask {
    type Output;
    fn run<B>(self, device: B::Device) -> Self::Output
    where
        B: KernelBackend + BackwardFrom,
        B::InnerBackend: KernelBackend;
}

fn on_device<T: KernelTask>(device: DeviceKind, task: T) -> T::Output {
    match device {
        DeviceKind::Cpu => task.run::<Autodiff<Flex>>(Default::default()),
        DeviceKind::CpuNdarray => task.run::<Autodiff<NdArray<f32>>>(Default::default()),
        DeviceKind::Wgpu => task.run::<Autodiff<Wgpu>>(mlagent_engine::device::wgpu_device()),
        DeviceKind::Cuda(n) => task.run::<Autodiff<CudaBackend>>(burn::backend::cuda::CudaDevice::new(n)),
    }
}

fn check_dtype<B: Backend>(device: &B::Device, dtype: Dtype, kind: DeviceKind) -> Result<()> {
    let d: DType = FloatDType::from(dtype).into();
    if !B::supports_dtype(device, d) {
        let name = format!("{dtype:?}").to_lowercase();
        bail!("--dtype {name} is not supported on {kind}; use --dtype f32 (or {name} on a device that has it)");
    }
    Ok(())
}

fn check_heads(heads: usize, kv_heads: usize, head_dim: usize) -> Result<()> {
    if heads == 0 || kv_heads == 0 || head_dim == 0 || !heads.is_multiple_of(kv_heads) {
        bail!("--heads {heads} must be a positive multiple of --kv-heads {kv_heads}, and --head-dim {head_dim} positive");
    }
    Ok(())
}

/// A one-line error, before any allocation, when a buffer of `bytes` exceeds the device's largest
/// single buffer (CubeCL's WGPU server would panic on it); `fix` says which flags shrink it.
fn fits(device: &dyn std::any::Any, bytes: usize, what: &str, fix: &str) -> Result<()> {
    check_buffer_fits(device, bytes as u64, what).map_err(|e| anyhow::anyhow!("{e}: {fix}"))
}

struct CheckTask(CheckArgs);

impl KernelTask for CheckTask {
    type Output = Result<serde_json::Value>;
    fn run<B>(self, device: B::Device) -> Self::Output
    where
        B: KernelBackend + BackwardFrom,
        B::InnerBackend: KernelBackend,
    {
        let a = self.0;
        check_dtype::<B>(&device, a.dtype, a.device)?;
        fits(&device, a.tokens * a.vocab * 4, &format!("the f32 logits [{}, {}]", a.tokens, a.vocab), "use smaller --tokens or --vocab")?;
        fits(&device, a.batch * a.heads * a.seq_len * a.seq_len * 4, "the attention scores the reference backward materialises", "use a smaller --seq-len")?;
        let case = AttentionCase {
            batch: a.batch,
            heads: a.heads,
            kv_heads: a.kv_heads,
            q_len: a.seq_len,
            k_len: a.seq_len,
            head_dim: a.head_dim,
            causal: a.causal,
            q_offset: 0,
            // Odd rows are left-padded by a fifth of the sequence.
            pad_lens: Some((0..a.batch).map(|b| if b % 2 == 1 { a.seq_len / 5 } else { 0 }).collect()),
            seed: a.seed,
            key_growth: a.key_growth,
        };
        let [fwd, dq, dk, dv] = attention_rel_errors::<B>(&case, a.dtype.into(), &device);
        let mut cfg = PpoConfig::default();
        cfg.token.dual_clip = Some(3.0);
        cfg.token.kl = Some(KlPenalty { estimator: KlEstimator::K3, coef: 0.1 });
        let (loss, grad) = ppo_rel_errors::<B>(a.tokens, a.vocab, &cfg, a.dtype.into(), a.seed + 100, &device);
        let mut report = serde_json::json!({
            "attention": {"fwd_rel_err": fwd, "dq_rel_err": dq, "dk_rel_err": dk, "dv_rel_err": dv},
            "ppo": {"loss_rel_err": loss, "grad_rel_err": grad},
        });
        if a.stages {
            // Printed as each stage finishes, so a stage that never returns still leaves the others.
            let mut print = |s: &mlagent_kernels::check::Stage| {
                eprintln!("stage {:<40} rel_err {:.3e}  mismatched {:>7}  first {:?}", s.name, s.rel_err, s.mismatched, s.first)
            };
            let stages = mlagent_kernels::check::stages::<B::InnerBackend>(&case, a.tokens, a.vocab, a.dtype.into(), &device, &mut print);
            let mut rows = serde_json::Map::new();
            for s in stages {
                rows.insert(s.name, serde_json::json!({"rel_err": s.rel_err, "mismatched": s.mismatched}));
            }
            report["stages"] = serde_json::Value::Object(rows);
        }
        Ok(report)
    }
}

fn check(a: CheckArgs) -> Result<()> {
    // This command measures the kernels: run the backward kernels, not the default closed-form reference.
    mlagent_kernels::attention_ops::set_backward_kernel(true);
    check_heads(a.heads, a.kv_heads, a.head_dim)?;
    if !(0.0..=1e3).contains(&a.key_growth) {
        bail!("--key-growth {} must be in [0, 1000]", a.key_growth);
    }
    if a.batch == 0 || a.seq_len == 0 || a.vocab == 0 || a.tokens == 0 {
        bail!("--batch, --seq-len, --vocab and --tokens must be positive");
    }
    // The f64 reference materialises the [B, H, S, S] scores (several copies under autodiff).
    let scores = a.batch * a.heads * a.seq_len * a.seq_len;
    if scores > 1 << 26 || a.tokens * a.vocab > 1 << 27 {
        bail!("shapes too large for the float64 reference (B·H·S² ≤ 2^26, N·V ≤ 2^27): use smaller --seq-len or --vocab");
    }
    let (format, device, dtype) = (a.format, a.device, a.dtype);
    let report = on_device(device, CheckTask(a))?;
    let kernel = forward_kernel_note();
    if format == Format::Text {
        println!("device {device}, dtype {dtype:?}{kernel}; relative errors against the float64 CPU reference");
        for (op, keys) in [("attention", &["fwd_rel_err", "dq_rel_err", "dk_rel_err", "dv_rel_err"][..]), ("ppo", &["loss_rel_err", "grad_rel_err"][..])] {
            for k in keys {
                println!("  {op:<9} {k:<13} {:.3e}", report[op][k].as_f64().unwrap_or(f64::NAN));
            }
        }
    } else {
        // The last line stays exactly the report; the kernel goes to stderr.
        if !kernel.is_empty() {
            eprintln!("{}", kernel.trim_start_matches(", "));
        }
        println!("{report}");
    }
    Ok(())
}

/// ", attention forward kernel: NAME" for the kernel the last attention forward ran on a CubeCL
/// device (a requested `MLAGENT_ATTENTION` kernel falls back where the device cannot run it),
/// and the last register-tile backward's layout when not the default (", backward: fused mma
/// kernel", ", backward: wide dK/dV kernel", the latter with " with dQ by atomic adds" when fused),
/// with ", dQ kernel with 32 rows per warp" when it ran so; empty on the CPU.
fn forward_kernel_note() -> String {
    let copies = if mlagent_kernels::cube::last_forward_async_copy() { " (cp.async tiles)" } else { "" };
    use mlagent_kernels::cube::BwdLayout;
    let layout = match mlagent_kernels::cube::last_backward_layout() {
        Some(BwdLayout::Fused) => ", backward: fused mma kernel",
        Some(BwdLayout::Wide) => ", backward: wide dK/dV kernel",
        Some(BwdLayout::WideFused) => ", backward: wide dK/dV kernel with dQ by atomic adds",
        _ => "",
    };
    let rows = match (mlagent_kernels::cube::last_backward_dq_mtiles(), layout) {
        (2, "") => ", backward: dQ kernel with 32 rows per warp",
        (2, _) => ", dQ kernel with 32 rows per warp",
        _ => "",
    };
    let fused = format!("{layout}{rows}");
    mlagent_kernels::cube::last_forward_kernel().map_or(String::new(), |k| format!(", attention forward kernel: {k}{copies}{fused}"))
}

/// Waits for the device's queued work.
fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))
}

/// Median milliseconds of `repeats` calls of `f` after `warmup` calls, synchronising the device
/// after each (the result is kept alive until then, so lazy backends cannot skip the work).
fn time_ms<B: Backend, T>(device: &B::Device, warmup: usize, repeats: usize, mut f: impl FnMut() -> T) -> Result<f64> {
    for _ in 0..warmup {
        let out = f();
        sync::<B>(device)?;
        drop(out);
    }
    let mut ms = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let out = f();
        sync::<B>(device)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

/// Device memory one call of `f` needed beyond what was allocated before it, in bytes.
#[derive(Clone, Copy)]
struct Extra {
    /// Still in use after the call, with its result (gradients included) kept.
    kept: u64,
    /// Upper bound on the peak: the pools' reserved bytes after the call less the bytes in use
    /// before it (peak use cannot exceed what the pools hold; CubeCL keeps pages until cleanup).
    peak_max: u64,
}

/// [`Extra`] for one call of `f`, after asking the pools to give back unused pages (which makes the
/// bound tighter); `None` off CubeCL devices.
fn extra_bytes<B: Backend, T>(device: &B::Device, f: impl FnOnce() -> T) -> Result<Option<Extra>> {
    sync::<B>(device)?;
    let Some((in_use, _)) = pool_bytes(device, true) else { return Ok(None) };
    let out = f();
    sync::<B>(device)?;
    let after = pool_bytes(device, false);
    drop(out);
    Ok(after.map(|(used, reserved)| Extra { kept: used.saturating_sub(in_use), peak_max: reserved.saturating_sub(in_use) }))
}

/// Mean milliseconds per call of `repeats` calls of `f` queued back to back, the device
/// synchronised only before and after (each result dropped once the next call is queued): the
/// device's time per call while the host stays ahead of it, which is what CUDA-event timings such
/// as `triton.testing.do_bench` report. [`time_ms`] also counts each call's host work and the
/// launch latency in front of an idle device.
fn time_queued_ms<B: Backend, T>(device: &B::Device, repeats: usize, mut f: impl FnMut() -> T) -> Result<f64> {
    sync::<B>(device)?;
    let start = Instant::now();
    let mut pending = None;
    for _ in 0..repeats {
        let out = f();
        drop(pending.replace(out));
    }
    sync::<B>(device)?;
    let ms = start.elapsed().as_secs_f64() * 1e3 / repeats as f64;
    drop(pending);
    Ok(ms)
}

/// A measured call: the median milliseconds of synchronised calls ([`time_ms`]), the mean of queued
/// ones ([`time_queued_ms`]), and the first call's [`Extra`].
#[derive(Clone, Copy)]
struct Timing {
    ms: f64,
    queued_ms: f64,
    extra: Option<Extra>,
}

/// [`Extra`] of `f`'s first call, then its median ms (see [`time_ms`]) and its queued ms.
fn measure<B: Backend, T>(device: &B::Device, warmup: usize, repeats: usize, mut f: impl FnMut() -> T) -> Result<Timing> {
    let extra = extra_bytes::<B, T>(device, &mut f)?;
    let ms = time_ms::<B, T>(device, warmup, repeats, &mut f)?;
    let queued_ms = time_queued_ms::<B, T>(device, repeats, &mut f)?;
    Ok(Timing { ms, queued_ms, extra })
}

/// One measured row: what ran, its [`Timing`], and the rates (TFLOP/s or GB/s) of both times.
struct Row {
    name: &'static str,
    time: Timing,
    rate: f64,
    queued_rate: f64,
}

/// Measures the baseline unless `skip` (`--no-baseline`).
fn baseline(skip: bool, time: impl FnOnce() -> Result<Timing>) -> Result<Option<Timing>> {
    if skip { Ok(None) } else { time().map(Some) }
}

/// Our row, then the baseline's when it was measured.
fn rows(ours: (&'static str, Timing), base: (&'static str, Option<Timing>), rate: impl Fn(f64) -> f64) -> Vec<Row> {
    let row = |name, time: Timing| Row { name, time, rate: rate(time.ms), queued_rate: rate(time.queued_ms) };
    let mut rows = vec![row(ours.0, ours.1)];
    if let (name, Some(time)) = base {
        rows.push(row(name, time));
    }
    rows
}

struct BenchTask(BenchArgs);

impl BenchTask {
    fn attention<B>(&self, dev: &B::Device) -> Result<(Vec<Row>, &'static str)>
    where
        B: KernelBackend + BackwardFrom,
        B::InnerBackend: KernelBackend,
    {
        let a = &self.0;
        let reference = a.baseline == Some(Baseline::Reference);
        let (b, h, kh, s, d) = (a.batch, a.heads, a.kv_heads, a.seq_len, a.head_dim);
        let dtype: FloatDType = a.dtype.into();
        let mut flops = 4.0 * (b * h) as f64 * (s * s) as f64 * d as f64;
        if a.causal {
            flops /= 2.0;
        }
        if a.bwd {
            flops *= 3.5; // forward + backward at 2.5× the forward
        }
        let rnd = |shape: [usize; 4]| Tensor::<B::InnerBackend, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), dev).cast(dtype);
        let (q, k, v) = (rnd([b, h, s, d]), rnd([b, kh, s, d]), rnd([b, kh, s, d]));
        // burn's attention has no GQA: it gets K and V repeated to H heads, outside the timing.
        let rep = |t: &Tensor<B::InnerBackend, 4>| t.clone().reshape([b, kh, 1, s, d]).expand([b, kh, h / kh, s, d]).reshape([b, h, s, d]);
        let (kr, vr) = (rep(&k), rep(&v));
        let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: a.causal };
        let (w, r) = (a.warmup, a.repeats);
        let tf = |ms: f64| flops / (ms * 1e-3) / 1e12;
        let (fused, base) = if a.bwd {
            let ad = |t: &Tensor<B::InnerBackend, 4>| Tensor::<B, 4>::from_inner(t.clone()).require_grad();
            let (q, k, v, kr, vr) = (ad(&q), ad(&k), ad(&v), ad(&kr), ad(&vr));
            let mask = AttentionMask::<B>::new(a.causal, 0, None, s, s, dev);
            // The backward starts from a fixed random dO, as FlashAttention's benchmarks call
            // out.backward(dO): no reduction, product or fill over the output is timed.
            let dout = rnd([b, h, s, d]);
            let from_dout = |out: Tensor<B, 4>| backward_from(out, dout.clone());
            from_dout(flash_attention(q.clone(), k.clone(), v.clone(), &mask))?;
            let fused = measure::<B, _>(dev, w, r, || from_dout(flash_attention(q.clone(), k.clone(), v.clone(), &mask)))?;
            let base = baseline(a.no_baseline, || match reference {
                true => measure::<B, _>(dev, w, r, || from_dout(attention_reference(q.clone(), k.clone(), v.clone(), &mask))),
                false => measure::<B, _>(dev, w, r, || from_dout(burn_attention(q.clone(), kr.clone(), vr.clone(), None, None, opts))),
            })?;
            (fused, base)
        } else {
            let mask = AttentionMask::<B::InnerBackend>::new(a.causal, 0, None, s, s, dev);
            let fused = measure::<B::InnerBackend, _>(dev, w, r, || flash_attention(q.clone(), k.clone(), v.clone(), &mask))?;
            let base = baseline(a.no_baseline, || match reference {
                true => measure::<B::InnerBackend, _>(dev, w, r, || attention_reference(q.clone(), k.clone(), v.clone(), &mask)),
                false => measure::<B::InnerBackend, _>(dev, w, r, || burn_attention(q.clone(), kr.clone(), vr.clone(), None, None, opts)),
            })?;
            (fused, base)
        };
        let ours = if a.reference_bwd { "mlagent fwd, reference bwd" } else { "mlagent flash attention" };
        let base_name = if reference { "plain-ops reference" } else { "burn attention" };
        Ok((rows((ours, fused), (base_name, base), tf), "TFLOP/s"))
    }

    fn ppo<B>(&self, dev: &B::Device) -> Result<(Vec<Row>, &'static str)>
    where
        B: KernelBackend + BackwardFrom,
        B::InnerBackend: KernelBackend,
    {
        let a = &self.0;
        let (n, v) = (a.tokens, a.vocab);
        let dtype: FloatDType = a.dtype.into();
        let x = Tensor::<B, 2>::random([n, v], Distribution::Uniform(-3.0, 3.0), dev).cast(dtype);
        let f = |s: u64, scale: f32, shift: f32| {
            Tensor::<B, 1>::from_data(TensorData::new(uniform(n, s).iter().map(|u| u * scale + shift).collect::<Vec<f32>>(), [n]), dev)
        };
        let targets: Vec<i64> = uniform(n, 1).iter().map(|u| (((u + 1.0) / 2.0 * v as f32) as i64).min(v as i64 - 1)).collect();
        let batch = PpoBatch {
            targets: Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [n]), dev),
            old_logp: f(2, 0.5, -12.0),
            ref_logp: f(3, 0.5, -12.0),
            advantages: f(4, 1.0, 0.0),
            mask: f(5, 0.0, 1.0),
        };
        let cfg = PpoConfig::default();
        let bytes = (n * v * DType::from(dtype).size()) as f64 * if a.bwd { 2.0 } else { 1.0 };
        let gbs = |ms: f64| bytes / (ms * 1e-3) / 1e9;
        let (w, r) = (a.warmup, a.repeats);
        let (fused, base) = if a.bwd {
            let x = x.require_grad();
            let fused = measure::<B, _>(dev, w, r, || ppo_loss(x.clone(), &batch, &cfg).0.backward())?;
            let base = baseline(a.no_baseline, || measure::<B, _>(dev, w, r, || ppo_loss_reference(x.clone(), &batch, &cfg).0.backward()))?;
            (fused, base)
        } else {
            let fused = measure::<B, _>(dev, w, r, || ppo_loss(x.clone(), &batch, &cfg).0)?;
            let base = baseline(a.no_baseline, || measure::<B, _>(dev, w, r, || ppo_loss_reference(x.clone(), &batch, &cfg).0))?;
            (fused, base)
        };
        Ok((rows(("mlagent fused PPO loss", fused), ("plain-ops reference", base), gbs), "GB/s"))
    }
}

impl KernelTask for BenchTask {
    type Output = Result<(Vec<Row>, &'static str)>;
    fn run<B>(self, device: B::Device) -> Self::Output
    where
        B: KernelBackend + BackwardFrom,
        B::InnerBackend: KernelBackend,
    {
        let a = &self.0;
        check_dtype::<B>(&device, a.dtype, a.device)?;
        match a.op {
            // Inputs are drawn in f32 before the cast; the plain-ops reference's largest buffers are [N, V] f32 too.
            Op::Ppo => fits(&device, a.tokens * a.vocab * 4, &format!("the f32 logits [{}, {}]", a.tokens, a.vocab), "use smaller --tokens or --vocab")?,
            Op::Attention => {
                fits(&device, a.batch * a.heads * a.seq_len * a.head_dim * 4, "the f32 query tensor", "use a smaller --seq-len or --batch")?;
                let scores = a.batch * a.heads * a.seq_len * a.seq_len * 4;
                if a.reference_bwd {
                    fits(&device, scores, "the reference backward's [B, H, S, S] scores", "use a smaller --seq-len")?;
                }
                if !a.no_baseline {
                    fits(&device, scores, "the baseline's [B, H, S, S] scores", "use a smaller --seq-len, or --no-baseline")?;
                }
            }
        }
        match self.0.op {
            Op::Attention => self.attention::<B>(&device),
            Op::Ppo => self.ppo::<B>(&device),
        }
    }
}

const MIB: f64 = (1u64 << 20) as f64;

fn bench(a: BenchArgs) -> Result<()> {
    mlagent_kernels::attention_ops::set_backward_kernel(!a.reference_bwd);
    if a.reference_bwd && !(a.op == Op::Attention && a.bwd) {
        bail!("--reference-bwd chooses the attention backward: it needs --op attention --bwd");
    }
    if a.op == Op::Ppo && a.baseline == Some(Baseline::Burn) {
        bail!("--baseline burn: burn has no PPO loss; the PPO baseline is the plain-ops reference (--baseline reference)");
    }
    if a.repeats == 0 {
        bail!("--repeats must be at least 1 (10 or more for a reportable median)");
    }
    match a.op {
        Op::Attention => {
            check_heads(a.heads, a.kv_heads, a.head_dim)?;
            if a.batch == 0 || a.seq_len == 0 {
                bail!("--batch and --seq-len must be positive");
            }
        }
        Op::Ppo if a.tokens == 0 || a.vocab == 0 => bail!("--tokens and --vocab must be positive"),
        Op::Ppo => {}
    }
    let (format, device, dtype, op, bwd) = (a.format, a.device, a.dtype, a.op, a.bwd);
    let shape = match op {
        Op::Attention => format!("B={} H={} KV={} S={} D={} causal={}", a.batch, a.heads, a.kv_heads, a.seq_len, a.head_dim, a.causal),
        Op::Ppo => format!("N={} V={}", a.tokens, a.vocab),
    };
    let size = DType::from(FloatDType::from(dtype)).size();
    let (out_bytes, what) = match (op, bwd) {
        (Op::Ppo, true) => (Some(a.tokens * a.vocab * size), "one dlogits buffer"),
        (Op::Ppo, false) => (None, ""),
        (Op::Attention, true) => (Some(a.batch * (a.heads + 2 * a.kv_heads) * a.seq_len * a.head_dim * size), "dq + dk + dv"),
        (Op::Attention, false) => (Some(a.batch * a.heads * a.seq_len * a.head_dim * size), "the output"),
    };
    let (rows, unit) = on_device(device, BenchTask(a))?;
    let pass = if bwd { "forward+backward" } else { "forward" };
    let kernel = if op == Op::Attention { forward_kernel_note() } else { String::new() };
    println!("{op:?} {pass}, {shape}, device {device}, dtype {dtype:?}{kernel}");
    let queued = format!("{unit} queued");
    println!(
        "| {:<26} | {:>10} | {:>10} | {:>10} | {:>15} | {:>9} | {:>11} |",
        "implementation", "ms", unit, "queued ms", queued, "kept MiB", "peak ≤ MiB"
    );
    println!("|{:-<28}|{:->12}|{:->12}|{:->12}|{:->17}|{:->11}|{:->13}|", "", "", "", "", "", "", "");
    // Software adapters give tiny rates: switch to scientific notation rather than print 0.000.
    let fmt_rate = |r: f64| if r < 0.1 { format!("{r:.3e}") } else { format!("{r:.3}") };
    for row in &rows {
        let mib = |f: fn(&Extra) -> u64| row.time.extra.as_ref().map_or("-".to_string(), |e| format!("{:.1}", f(e) as f64 / MIB));
        println!(
            "| {:<26} | {:>10.3} | {:>10} | {:>10.3} | {:>15} | {:>9} | {:>11} |",
            row.name,
            row.time.ms,
            fmt_rate(row.rate),
            row.time.queued_ms,
            fmt_rate(row.queued_rate),
            mib(|e| e.kept),
            mib(|e| e.peak_max)
        );
    }
    println!(
        "ms: median of synchronised calls (host work and launch latency included); queued ms: mean of the same \
         number of calls queued back to back (the device's time per call, as CUDA-event timings report it)"
    );
    if let (Some(out), true) = (out_bytes, rows.iter().any(|r| r.time.extra.is_some())) {
        println!(
            "device memory of the first call beyond its inputs: kept = still in use with its result (grads included), \
             peak ≤ = pools' reserved bytes after it less those in use before; {what} is {:.1} MiB",
            out as f64 / MIB
        );
    }
    let speedup = rows.get(1).map(|base| base.time.ms / rows[0].time.ms);
    if let Some(x) = speedup {
        println!("speedup of {} over {}: {x:.2}x", rows[0].name, rows[1].name);
    }
    if format == Format::Json {
        let r: Vec<_> = rows.iter().map(|r| serde_json::json!({"impl": r.name, "ms": r.time.ms, unit: r.rate,
            "queued_ms": r.time.queued_ms, queued.as_str(): r.queued_rate,
            "kept_bytes": r.time.extra.map(|e| e.kept), "peak_bytes_max": r.time.extra.map(|e| e.peak_max)})).collect();
        println!(
            "{}",
            serde_json::json!({"op": format!("{op:?}").to_lowercase(), "pass": pass, "shape": shape, "device": device.to_string(),
                "dtype": format!("{dtype:?}").to_lowercase(), "results": r, "speedup": speedup,
                "attention_forward_kernel": (op == Op::Attention).then(mlagent_kernels::cube::last_forward_kernel).flatten(),
                "attention_cp_async": (op == Op::Attention).then(mlagent_kernels::cube::last_forward_async_copy),
                "attention_bwd_layout": (op == Op::Attention && bwd).then(mlagent_kernels::cube::last_backward_layout).flatten().map(|l| l.name()),
                "attention_bwd_dq_rows_per_warp": (op == Op::Attention && bwd)
                    .then(mlagent_kernels::cube::last_backward_dq_mtiles).filter(|&m| m > 0).map(|m| 16 * m)})
        );
    }
    Ok(())
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Check(a) => check(a),
        What::Bench(a) => bench(a),
    }
}
