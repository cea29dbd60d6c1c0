//! `mlagent rl`: stage 2 of ML-Agent, step-wise PPO (or the episode-wise baseline).

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use mlagent_engine::{AutodiffTask, DeviceKind, Qwen2Config};
use mlagent_kernels::KernelBackend;
use mlagent_train::rl::{Mode, RlConfig, RlRun};
use std::io::Write;
use std::path::PathBuf;

/// Train the agent with PPO on single steps sampled from expert states (ML-Agent §3.2), or with
/// whole episodes (--mode episode, the baseline of the paper's Fig. 4).
///
/// Each iteration samples --batch states from the pool of expert trajectories, lets the policy
/// act once in each (temperature sampling, batched, KV cache), runs every action in a fresh
/// episode restored to its state (parallel workers) and scores it with the agentic reward (eq. 6).
/// The critic (a value head on a copy of the SFT model) gives A = r − V(s), whitened over the
/// batch; the actor minimises the PPO clipped surrogate (ε 0.2, dual clip 3) plus β·k3 KL to the
/// frozen SFT model (token mean), the critic a clipped value loss. Unset learning rates take the
/// paper's 7B settings (actor 1e-6, critic 1e-5) or, under 100M parameters (the tiny preset),
/// 1e-5 and 1e-4.
///
/// Writes OUT/metrics.jsonl (one line per iteration), OUT/curves.png, OUT/checkpoint-N (actor,
/// critic, optimizers; resumable) and OUT/model (the final actor as an HF dir).
///
/// Example: mlagent rl --model runs/sft/model --data data/sft/trajectories.jsonl --out runs/rl
#[derive(clap::Args)]
pub struct Args {
    /// The SFT model: the actor's start, the critic's backbone and the frozen KL reference.
    #[arg(long, required_unless_present = "resume")]
    model: Option<PathBuf>,
    /// Expert trajectories (trajectories.jsonl from `mlagent collect`): the states pool.
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// step (ML-Agent) or episode (whole episodes from the task start, GAE).
    #[arg(long, default_value = "step", value_parser = ["step", "episode"])]
    mode: String,
    /// PPO iterations (rollout + update) [default: 20; with --resume, the checkpoint's].
    #[arg(long)]
    iterations: Option<usize>,
    /// States (step mode) or episodes (episode mode) per iteration.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Steps of each episode in episode mode.
    #[arg(long, default_value_t = 5)]
    episode_steps: usize,
    /// First iterations that train only the critic (verl's critic_warmup).
    #[arg(long, default_value_t = 0)]
    critic_warmup: usize,
    /// Passes over each rollout.
    #[arg(long, default_value_t = 1)]
    ppo_epochs: usize,
    /// Optimizer steps per pass.
    #[arg(long, default_value_t = 2)]
    mini_batches: usize,
    /// Sequences per forward/backward.
    #[arg(long, default_value_t = 2)]
    micro_batch: usize,
    /// Actor learning rate.
    #[arg(long)]
    actor_lr: Option<f64>,
    /// Critic learning rate.
    #[arg(long)]
    critic_lr: Option<f64>,
    /// PPO clip ε.
    #[arg(long, default_value_t = 0.2)]
    clip: f32,
    /// Dual-clip constant for negative advantages (0 = off).
    #[arg(long, default_value_t = 3.0)]
    dual_clip: f32,
    /// β of the k3 KL penalty to the reference model.
    #[arg(long, default_value_t = 0.001)]
    kl_coef: f32,
    /// Value clip range of the critic loss.
    #[arg(long, default_value_t = 0.5)]
    value_clip: f32,
    /// GAE γ (episode mode).
    #[arg(long, default_value_t = 1.0)]
    gamma: f64,
    /// GAE λ (episode mode).
    #[arg(long, default_value_t = 1.0)]
    lambda: f64,
    /// Sampling temperature of rollouts.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Longest action in tokens.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Longest prompt in tokens: longer ones are shortened by their structure (tool manual to names, observations
    /// cut in the middle; responses and the cue kept), then cut to their first 60 % and last 40 % if still too long,
    /// exactly as `mlagent sft` cuts its samples; give the --max-prompt-tokens the model was trained with (default: 384 for small models,
    /// as `mlagent sft` trains them; 14000 otherwise).
    #[arg(long)]
    max_prompt_tokens: Option<usize>,
    /// Prompts per generate call.
    #[arg(long, default_value_t = 8)]
    gen_batch: usize,
    /// Seed of state choice, sampling and mini-batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a checkpoint every N iterations (0 = only at the end).
    #[arg(long, default_value_t = 0)]
    save_every: usize,
    /// Stop after this many minutes of wall time (checked between iterations).
    #[arg(long)]
    minutes: Option<f64>,
    /// Continue from OUT/checkpoint-N (same settings; --iterations may extend the run).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Backend: cpu, wgpu, cuda or cuda:N (training computes in f32).
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    #[command(flatten)]
    env: super::EnvOpts,
}

struct Task {
    args: Args,
    cfg: Option<RlConfig>,
}

impl AutodiffTask for Task {
    type Output = Result<()>;
    fn run<B: AutodiffBackend + KernelBackend>(self, device: B::Device) -> Result<()>
    where
        B::InnerBackend: KernelBackend,
    {
        let Task { args, cfg } = self;
        let start = std::time::Instant::now();
        let mut run = match (&args.resume, cfg) {
            (Some(dir), _) => RlRun::<B>::resume(dir, args.iterations, device)?,
            (None, Some(cfg)) => RlRun::<B>::new(cfg, device)?,
            (None, None) => bail!("give --model and --data, or --resume"),
        };
        println!(
            "{} states of expert trajectories on {} tasks ({}); mode {:?}, {} iterations × {}",
            run.pool().len(),
            run.pool().task_names().len(),
            run.pool().task_names().join(", "),
            run.cfg.mode,
            run.cfg.iterations,
            run.cfg.batch
        );
        std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
        let metrics_path = args.out.join("metrics.jsonl");
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("{}", metrics_path.display()))?;
        let work = args.out.join("rollouts");
        let bar = ProgressBar::new(run.cfg.iterations as u64).with_position(run.iteration as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} iterations  {msg}  eta {eta}").expect("template"));
        bar.set_message("first rollout…");
        while !run.finished() {
            if args.minutes.is_some_and(|m| start.elapsed().as_secs_f64() > m * 60.0) {
                bar.println(format!("--minutes {} reached after {} iterations", args.minutes.unwrap_or(0.0), run.iteration));
                break;
            }
            let m = run.iterate(&work)?;
            writeln!(metrics, "{}", serde_json::to_string(&m)?)?;
            bar.set_message(format!(
                "reward {:.3}  valid {:.0}%  kl {:.4}  vloss {:.4}  {:.1} rollouts/s",
                m.reward_mean,
                100.0 * m.valid_rate,
                m.ref_kl,
                m.value_loss,
                m.rollouts_per_s
            ));
            bar.inc(1);
            if args.save_every > 0 && m.iteration % args.save_every == 0 && !run.finished() {
                run.save_checkpoint(&args.out.join(format!("checkpoint-{}", m.iteration)))?;
            }
        }
        bar.finish();
        let ckpt = args.out.join(format!("checkpoint-{}", run.iteration));
        run.save_checkpoint(&ckpt)?;
        super::copy_model_dir(&ckpt.join("actor"), &args.out.join("model"))?;
        let png = args.out.join("curves.png");
        mlagent_train::plot::metrics_panels(
            &metrics_path,
            "iteration",
            &["reward_mean", "valid_rate", "value_loss", "ref_kl", "clip_frac", "entropy"],
            &png,
            &format!("mlagent rl ({:?} mode)", run.cfg.mode),
        )?;
        println!(
            "trained {} iterations in {:.1} min; model in {}, metrics in {}, curves in {}",
            run.iteration,
            start.elapsed().as_secs_f64() / 60.0,
            args.out.join("model").display(),
            metrics_path.display(),
            png.display()
        );
        Ok(())
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let cfg = match (&args.resume, &args.model, &args.data) {
        (Some(_), _, _) => None,
        (None, Some(model), Some(data)) => {
            let config = Qwen2Config::from_dir(model)?;
            let small = super::info::parameter_count(&config) < super::SMALL_MODEL_PARAMS;
            let max_new_tokens = args.max_new_tokens.unwrap_or(if small { super::SMALL_MAX_NEW_TOKENS } else { 1024 });
            let max_prompt_tokens =
                args.max_prompt_tokens.unwrap_or(if small { super::SMALL_MAX_PROMPT_TOKENS } else { 14_000 });
            Some(RlConfig {
                mode: if args.mode == "episode" { Mode::Episode } else { Mode::Step },
                reference: model.clone(),
                trajectories: data.clone(),
                suite_seed: args.env.suite_seed,
                iterations: args.iterations.unwrap_or(20),
                batch: args.batch,
                episode_steps: args.episode_steps,
                critic_warmup: args.critic_warmup,
                ppo_epochs: args.ppo_epochs,
                mini_batches: args.mini_batches,
                micro_batch: args.micro_batch,
                actor_lr: args.actor_lr.unwrap_or(if small { 1e-5 } else { 1e-6 }),
                critic_lr: args.critic_lr.unwrap_or(if small { 1e-4 } else { 1e-5 }),
                clip: args.clip,
                dual_clip: (args.dual_clip > 0.0).then_some(args.dual_clip),
                kl_coef: args.kl_coef,
                value_clip: args.value_clip,
                max_grad_norm: 1.0,
                gamma: args.gamma,
                lambda: args.lambda,
                temperature: args.temperature,
                max_new_tokens,
                max_prompt_tokens,
                gen_batch: args.gen_batch,
                workers: args.env.workers(),
                seed: args.seed,
                episode: args.env.episode(),
            })
        }
        _ => bail!("give --model DIR and --data trajectories.jsonl, or --resume CHECKPOINT"),
    };
    if args.dual_clip != 0.0 && args.dual_clip <= 1.0 {
        bail!("--dual-clip {} must be > 1 (or 0 for off)", args.dual_clip);
    }
    let device = args.device;
    device.run_autodiff(Task { args, cfg })
}
