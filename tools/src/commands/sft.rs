//! `mlagent sft`: stage 1 of ML-Agent, supervised fine-tuning on expert trajectories.

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::FloatDType;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use mlagent_engine::{AutodiffTask, DeviceKind, Qwen2Config, TextTokenizer};
use mlagent_train::sft::{Sample, SftConfig, SftRun, fit_messages, read_conversations, tokenize, truncate, validate};
use std::io::Write;
use std::path::PathBuf;

/// Fine-tune a model on an SFT dataset (from `mlagent collect`): loss on the assistant's actions
/// only, AdamW with a cosine schedule, gradient accumulation, global-norm clipping at 1.0, and
/// checkpoints that resume bit-exactly.
///
/// The dataset is JSONL in ShareGPT form ({"conversations": [{"from": "human"|"gpt", "value"}]})
/// or OpenAI messages ({"messages": [{"role", "content"}]}). Unset options take the paper's
/// settings for 7B-size models (lr 2e-5, 2 epochs, effective batch 64, cutoff 15000) or, for
/// models under 100M parameters (the tiny preset) the settings measured to teach it the action
/// format: lr 2e-3, warmup 10, AdamW β₂ 0.95, 4 epochs, batch 1 × 1, cutoff 640 with prompts fitted to
/// 384.
/// Writes OUT/model (HF dir, loadable by `mlagent generate` and transformers), OUT/checkpoint-N,
/// OUT/metrics.jsonl.
///
/// Example: mlagent sft --model models/tiny --data data/sft_sharegpt.jsonl --out runs/sft
#[derive(clap::Args)]
pub struct Args {
    /// The model to start from (HF dir with tokenizer and chat template).
    #[arg(long, required_unless_present = "resume")]
    model: Option<PathBuf>,
    /// SFT dataset (JSONL, ShareGPT or OpenAI messages).
    #[arg(long)]
    data: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Passes over the data.
    #[arg(long)]
    epochs: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Samples per micro-batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Truncate samples to this many tokens (keeps the prompt's head and tail and the action).
    #[arg(long)]
    cutoff_len: Option<usize>,
    /// Longest prompt kept, in tokens (default: --cutoff-len minus --eval-max-new-tokens). Longer
    /// prompts are shortened by their structure (tool manual to names, observations cut in the middle;
    /// responses and the cue kept), then keep their first 60 % and last 40 % if still too long, exactly as `mlagent rl` and `mlagent eval` cut them
    /// with the same --max-prompt-tokens: give those commands this value, so the model acts on
    /// prompts shaped like the ones it learnt from.
    #[arg(long)]
    max_prompt_tokens: Option<usize>,
    /// AdamW's second-moment decay β₂ (default: 0.999 as HF transformers; 0.95 for small models, as
    /// nanoGPT and most from-scratch pre-training runs use).
    #[arg(long)]
    adam_beta2: Option<f32>,
    /// Linear warmup steps (default: 0; 10 for small models).
    #[arg(long)]
    warmup: Option<usize>,
    /// Seed of the data order (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Save a checkpoint every N optimizer steps (default 0: only at the end).
    #[arg(long)]
    save_every: Option<usize>,
    /// Stop after N optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Continue from a checkpoint directory (OUT/checkpoint-N) with its saved settings; the
    /// samples are prepared from --data as that run prepared them (its cutoff and prompt length).
    /// Options that change what a step computes (--lr, --epochs, --cutoff-len, ...) may be given
    /// only with the checkpoint's values; --max-steps and --save-every may change.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Backend: cpu, wgpu, cuda or cuda:N. Training computes in f32 on every backend: burn 0.21 has
    /// no mixed-precision autocast, and a bf16 model would keep its weights and AdamW moments in
    /// bf16 too (no f32 master copy), which loses updates smaller than bf16's 8-bit mantissa.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// Gradient checkpointing as burn 0.21 offers it (balanced): element-wise activations (norms,
    /// SiLU, RoPE, residual adds) are recomputed in the backward pass instead of kept; matmul and
    /// fused-attention outputs are kept. Same gradients, less activation memory, some extra time.
    #[arg(long)]
    grad_checkpointing: bool,
    /// Expert trajectories NOT trained on (trajectories.jsonl of a separate `mlagent collect`): after
    /// training, the model's greedy action in --eval-states-count of their states runs in the real
    /// environment; valid-action rate and mean reward (eq. 6) go to OUT/eval_states.json.
    #[arg(long)]
    eval_states: Option<PathBuf>,
    /// States for --eval-states (spread evenly over the file's states).
    #[arg(long, default_value_t = 32)]
    eval_states_count: usize,
    /// Longest greedy action in --eval-states, in tokens (prompts are cut to --max-prompt-tokens).
    #[arg(long, default_value_t = 256)]
    eval_max_new_tokens: usize,
    /// Also evaluate the starting model on the same states, for comparison.
    #[arg(long)]
    eval_base: bool,
    /// Held-out SFT samples (an SFT dataset of trajectories NOT trained on): teacher-forced loss,
    /// next-token accuracy on the action tokens, and the share of samples whose every action token
    /// is the model's argmax (greedy decoding would reproduce them), for the final model on this
    /// file and on as many training samples; written to OUT/validation.json.
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// Also validate on --val-data every N optimizer steps (rows with `val_loss` in metrics.jsonl).
    #[arg(long, default_value_t = 0)]
    val_every: usize,
    /// Seed of the built-in task suite the --eval-states trajectories were collected on.
    #[arg(long, default_value_t = mlagent_agent::suite::DEFAULT_SEED)]
    suite_seed: u64,
}

/// The end-of-training check on --eval-states: greedy actions of `model` through the environment.
fn eval_states<B: burn::tensor::backend::Backend + mlagent_kernels::KernelBackend>(
    args: &Args,
    model: &mlagent_engine::Qwen2<B>,
    model_dir: &std::path::Path,
    max_prompt_tokens: usize,
    label: &str,
    device: &B::Device,
) -> Result<Option<mlagent_train::state_eval::StatesEval>> {
    let Some(path) = &args.eval_states else { return Ok(None) };
    let pool = mlagent_train::rl::StatesPool::from_jsonl(path, args.suite_seed)?;
    let codec = mlagent_train::actor::PromptCodec::from_dir(model_dir, max_prompt_tokens)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let work = args.out.join("eval_states").join(label);
    let r = mlagent_train::state_eval::evaluate_states(
        model,
        &codec,
        &pool,
        args.eval_states_count,
        args.eval_max_new_tokens,
        &mlagent_agent::episode::EpisodeConfig::default(),
        workers,
        &work,
        device,
    )?;
    println!(
        "{label}: greedy actions on {} held-out states: valid {:.1}%, mean reward {:.3}, kinds {:?}",
        r.states,
        100.0 * r.valid_rate,
        r.mean_reward,
        r.kinds
    );
    Ok(Some(r))
}

struct Task {
    args: Args,
    samples: Vec<Sample>,
    val_samples: Vec<Sample>,
    cfg: SftConfig,
    max_prompt_tokens: usize,
    model_dir: PathBuf,
    config: Qwen2Config,
    eos: Vec<u32>,
}

impl AutodiffTask for Task {
    type Output = Result<()>;
    fn run<B: AutodiffBackend + mlagent_kernels::KernelBackend>(self, device: B::Device) -> Result<()>
    where
        B::InnerBackend: mlagent_kernels::KernelBackend,
    {
        let Task { args, samples, val_samples, cfg, max_prompt_tokens, model_dir, config, eos } = self;
        let run_device = device.clone();
        let mut run = match &args.resume {
            Some(dir) => SftRun::<B>::resume(dir, &samples, cfg, device)?,
            None => {
                let (model, _) = mlagent_engine::io::load::<B>(&model_dir, FloatDType::F32, &device)?;
                SftRun::new(model, &samples, cfg, device)?
            }
        };
        std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
        let metrics_path = args.out.join("metrics.jsonl");
        let mut metrics = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)
            .with_context(|| format!("{}", metrics_path.display()))?;
        let total = run.total_steps();
        let bar = ProgressBar::new(total as u64).with_position(run.step as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}").expect("template"));
        let save_every = run.cfg.save_every;
        let mut last_val = None; // (step, validation) of the latest --val-every check
        while !run.finished() {
            let m = run.train_step(&samples);
            writeln!(metrics, "{}", serde_json::to_string(&m)?)?;
            bar.set_message(format!("loss {:.4}  lr {:.2e}  {:.0} tok/s", m.loss, m.lr, m.tokens as f64 / m.seconds));
            bar.inc(1);
            if args.val_every > 0 && !val_samples.is_empty() && m.step % args.val_every == 0 {
                let v = validate(&run.model.valid(), &val_samples, VAL_BATCH, &run_device);
                let row = serde_json::json!({"step": m.step, "val_loss": v.loss, "val_token_accuracy": v.token_accuracy, "val_exact": v.exact});
                writeln!(metrics, "{row}")?;
                bar.println(format!("step {}: val loss {:.4}, token accuracy {:.4}, exact {:.3}", m.step, v.loss, v.token_accuracy, v.exact));
                last_val = Some((m.step, v));
            }
            if save_every > 0 && m.step % save_every == 0 && m.step < total {
                run.save_checkpoint(&args.out.join(format!("checkpoint-{}", m.step)), &config, &model_dir, &eos)?;
            }
        }
        bar.finish();
        run.save_checkpoint(&args.out.join(format!("checkpoint-{}", run.step)), &config, &model_dir, &eos)?;
        // The final model as a plain HF dir.
        let final_dir = args.out.join("model");
        super::copy_model_dir(&args.out.join(format!("checkpoint-{}", run.step)).join("model"), &final_dir)?;
        println!("trained {} steps; model in {}, metrics in {}", run.step, final_dir.display(), metrics_path.display());
        let curves = args.out.join("curves.png");
        let title = format!("SFT {}", args.out.display());
        mlagent_train::plot::metrics_panels(&metrics_path, "step", &["loss", "lr", "grad_norm"], &curves, &title)
            .context("drawing the training curves (the model is saved)")?;
        println!("curves in {}", curves.display());
        if !val_samples.is_empty() {
            let model = run.model.valid();
            // The last --val-every check already validated the final weights when it fell on the last step.
            let val = match last_val {
                Some((step, v)) if step == run.step => v,
                _ => validate(&model, &val_samples, VAL_BATCH, &run_device),
            };
            let n = val_samples.len().min(samples.len());
            let picks: Vec<Sample> = mlagent_train::state_eval::spread(samples.len(), n).into_iter().map(|i| samples[i].clone()).collect();
            let train = validate(&model, &picks, VAL_BATCH, &run_device);
            for (label, v) in [("held-out", &val), ("training", &train)] {
                println!(
                    "{label} samples ({}): loss {:.4}, action-token accuracy {:.4}, reproduced exactly {:.1}%",
                    v.samples, v.loss, v.token_accuracy, 100.0 * v.exact
                );
            }
            let path = args.out.join("validation.json");
            std::fs::write(&path, serde_json::to_string_pretty(&serde_json::json!({"held_out": val, "training": train}))?)
                .with_context(|| format!("{}", path.display()))?;
        }
        if args.eval_states.is_some() {
            let mut report = serde_json::Map::new();
            if args.eval_base {
                let (base, _) = mlagent_engine::io::load::<B::InnerBackend>(&model_dir, FloatDType::F32, &run_device)?;
                let r = eval_states(&args, &base, &model_dir, max_prompt_tokens, "base", &run_device)?;
                report.insert("base".into(), serde_json::to_value(r)?);
            }
            let r = eval_states(&args, &run.model.valid(), &final_dir, max_prompt_tokens, "sft", &run_device)?;
            report.insert("sft".into(), serde_json::to_value(r)?);
            let path = args.out.join("eval_states.json");
            std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("{}", path.display()))?;
        }
        Ok(())
    }
}

/// Reads an SFT dataset as training samples: prompts fitted to `max_prompt_tokens`, then
/// truncated to `cutoff`; samples with no action token left are dropped.
fn load_samples(path: &std::path::Path, tok: &TextTokenizer, max_prompt_tokens: usize, cutoff: usize) -> Result<Vec<Sample>> {
    let conversations = read_conversations(path)?;
    let mut samples = Vec::with_capacity(conversations.len());
    for (i, c) in conversations.iter().enumerate() {
        let at = || format!("{} sample {}", path.display(), i + 1);
        let c = fit_messages(tok, c, max_prompt_tokens).with_context(at)?;
        let s = tokenize(tok, &c).with_context(at)?;
        let s = truncate(&s, cutoff, max_prompt_tokens);
        if s.label_count() > 0 {
            samples.push(s);
        }
    }
    if samples.is_empty() {
        bail!("{}: no sample has assistant tokens left after truncation to {cutoff}", path.display());
    }
    Ok(samples)
}

/// The settings of the run saved in checkpoint `dir`, with --max-steps and --save-every applied
/// when given; an error names any other given option whose value differs from the checkpoint's.
fn resumed_config(args: &Args, dir: &std::path::Path) -> Result<SftConfig> {
    let (saved, step) = mlagent_train::sft::trainer::checkpoint_config(dir)?;
    fn same<T: PartialEq + std::fmt::Debug>(dir: &std::path::Path, flag: &str, given: Option<T>, saved: T) -> Result<()> {
        match given {
            Some(g) if g != saved => bail!(
                "--{flag} {g:?} differs from {}'s {saved:?}: a resumed run keeps its settings (drop --{flag})",
                dir.display()
            ),
            _ => Ok(()),
        }
    }
    same(dir, "epochs", args.epochs, saved.epochs)?;
    same(dir, "lr", args.lr, saved.lr)?;
    same(dir, "batch-size", args.batch_size, saved.batch_size)?;
    same(dir, "grad-accum", args.grad_accum, saved.grad_accum)?;
    same(dir, "cutoff-len", args.cutoff_len, saved.cutoff_len)?;
    same(dir, "adam-beta2", args.adam_beta2, saved.beta2)?;
    same(dir, "warmup", args.warmup, saved.warmup_steps)?;
    same(dir, "seed", args.seed, saved.seed)?;
    if let Some(m) = saved.max_prompt_tokens {
        same(dir, "max-prompt-tokens", args.max_prompt_tokens, m)?;
    }
    println!("resuming {} at step {step}", dir.display());
    Ok(SftConfig { max_steps: args.max_steps.or(saved.max_steps), save_every: args.save_every.unwrap_or(saved.save_every), ..saved })
}

/// Samples per forward pass of `--val-data` validation.
const VAL_BATCH: usize = 4;

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    // With --resume, the model dir (tokenizer, config) is the checkpoint's.
    let model_dir = match (&args.resume, &args.model) {
        (Some(r), _) => r.join("model"),
        (None, Some(m)) => m.clone(),
        (None, None) => bail!("give --model DIR or --resume CHECKPOINT"),
    };
    let config = Qwen2Config::from_dir(&model_dir)?;
    let tok = TextTokenizer::from_dir(&model_dir)?;
    let small = super::info::parameter_count(&config) < super::SMALL_MODEL_PARAMS;
    let mut cfg = SftConfig {
        epochs: args.epochs.unwrap_or(if small { 4 } else { 2 }),
        lr: args.lr.unwrap_or(if small { 2e-3 } else { 2e-5 }),
        batch_size: args.batch_size.unwrap_or(if small { 1 } else { 8 }),
        grad_accum: args.grad_accum.unwrap_or(if small { 1 } else { 8 }),
        cutoff_len: args.cutoff_len.unwrap_or(if small { super::SMALL_CUTOFF } else { 15_000 }),
        warmup_steps: args.warmup.unwrap_or(if small { 10 } else { 0 }),
        seed: args.seed.unwrap_or(0),
        weight_decay: 0.0,
        beta2: args.adam_beta2.unwrap_or(if small { 0.95 } else { 0.999 }),
        max_grad_norm: 1.0,
        save_every: args.save_every.unwrap_or(0),
        max_steps: args.max_steps,
        max_prompt_tokens: None,
    };
    if let Some(dir) = &args.resume {
        cfg = resumed_config(&args, dir)?;
    }
    let max_prompt_tokens = match cfg.max_prompt_tokens.or(args.max_prompt_tokens) {
        Some(m) => m,
        None if cfg.cutoff_len > args.eval_max_new_tokens + 16 => cfg.cutoff_len - args.eval_max_new_tokens,
        None => bail!("--cutoff-len {} leaves no room for --eval-max-new-tokens {}", cfg.cutoff_len, args.eval_max_new_tokens),
    };
    cfg.max_prompt_tokens = Some(max_prompt_tokens);
    if max_prompt_tokens < 16 || max_prompt_tokens >= cfg.cutoff_len {
        bail!("--max-prompt-tokens {max_prompt_tokens} must be at least 16 and below --cutoff-len {}", cfg.cutoff_len);
    }
    let samples = load_samples(&args.data, &tok, max_prompt_tokens, cfg.cutoff_len)?;
    let val_samples = match &args.val_data {
        Some(p) => load_samples(p, &tok, max_prompt_tokens, cfg.cutoff_len)?,
        None => Vec::new(),
    };
    let tokens: usize = samples.iter().map(|s| s.ids.len()).sum();
    println!(
        "{} samples, {tokens} tokens ({} labelled), prompts cut to {max_prompt_tokens}; {cfg:?}",
        samples.len(),
        samples.iter().map(Sample::label_count).sum::<usize>()
    );
    let eos = mlagent_engine::tokenizer::eos_ids(&model_dir, Some(&tok))?;
    let (device, ckpt) = (args.device, args.grad_checkpointing);
    device.run_autodiff_checkpointed(Task { args, samples, val_samples, cfg, max_prompt_tokens, model_dir, config, eos }, ckpt)
}
