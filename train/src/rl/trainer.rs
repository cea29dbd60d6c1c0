//! The PPO loop of ML-Agent's stage 2 (§3.2, eq. 4): roll out, score with the frozen actor,
//! reference and critic, compute advantages, then PPO epochs over mini-batches for the actor
//! (clipped surrogate + k3 KL to the reference, token-mean) and the critic (clipped value loss).

use super::advantage::{gae, mean_std, single_step, whiten};
use super::pool::StatesPool;
use super::rollout::{self, Transition};
use super::value_loss::clipped_value_loss;
use crate::actor::{PromptCodec, action_logits, action_logprobs, seq_batch, state_values, state_values_tensor};
use crate::episodes::GenConfig;
use crate::error::{Result, TrainError};
use crate::sft::trainer::{Adam, clip_global_norm, copy_tokenizer_files, load_optimizer, save_optimizer, write_checkpoint_dir};
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, FloatDType, Tensor, TensorData};
use mlagent_agent::ActionKind;
use mlagent_agent::episode::EpisodeConfig;
use mlagent_engine::{Qwen2, Qwen2Config, SamplingParams, StorageDType};
use mlagent_kernels::{KernelBackend, KlEstimator, KlPenalty, PpoBatch, PpoConfig, PpoTokenParams, ppo_loss};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where transitions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// ML-Agent's step-wise RL: single actions from expert states, `A = r − V(s)`.
    Step,
    /// The baseline: whole episodes from the task start, GAE.
    Episode,
}

/// RL settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RlConfig {
    /// Step-wise or episode-wise.
    pub mode: Mode,
    /// The frozen reference policy (the SFT model), also the actor's and critic's start.
    pub reference: PathBuf,
    /// Expert trajectories (`trajectories.jsonl` of `mlagent collect`) for the states pool.
    pub trajectories: PathBuf,
    /// Seed of the built-in suite the trajectories were collected on.
    pub suite_seed: u64,
    /// PPO iterations (rollout + update).
    pub iterations: usize,
    /// States (step mode) or episodes (episode mode) per iteration.
    pub batch: usize,
    /// Steps per episode in episode mode.
    pub episode_steps: usize,
    /// Iterations at the start that train only the critic (verl's `critic_warmup`): while V(s) is
    /// still noise, A = r − V(s) is noise too.
    #[serde(default)]
    pub critic_warmup: usize,
    /// Passes over each rollout.
    pub ppo_epochs: usize,
    /// Mini-batches (optimizer steps) per pass.
    pub mini_batches: usize,
    /// Sequences per forward/backward call.
    pub micro_batch: usize,
    /// Actor learning rate.
    pub actor_lr: f64,
    /// Critic learning rate.
    pub critic_lr: f64,
    /// PPO ε (ratio clipped to 1 ± ε).
    pub clip: f32,
    /// Dual-clip constant c for negative advantages (verl's `clip_ratio_c`), if any.
    pub dual_clip: Option<f32>,
    /// β of the k3 KL to the reference.
    pub kl_coef: f32,
    /// verl's `cliprange_value`.
    pub value_clip: f32,
    /// Global gradient-norm clip for both models.
    pub max_grad_norm: f64,
    /// GAE γ (episode mode).
    pub gamma: f64,
    /// GAE λ (episode mode).
    pub lambda: f64,
    /// Sampling temperature of rollouts (log-probs are taken at the same temperature).
    pub temperature: f32,
    /// Longest action in tokens.
    pub max_new_tokens: usize,
    /// Longest prompt in tokens (head and tail kept, as in SFT).
    pub max_prompt_tokens: usize,
    /// Prompts per generate call.
    pub gen_batch: usize,
    /// Parallel environment workers.
    pub workers: usize,
    /// Seed of state sampling, token sampling and mini-batch order.
    pub seed: u64,
    /// Environment settings (history length, timeouts).
    pub episode: EpisodeConfig,
}

/// What one iteration did (verl's metric names where they exist).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IterMetrics {
    /// 1-based iteration.
    pub iteration: usize,
    /// Mean reward of the rollout.
    pub reward_mean: f64,
    /// Its standard deviation.
    pub reward_std: f64,
    /// Share of actions that parsed into a known action with the right keys.
    pub valid_rate: f64,
    /// Share of actions of kind edit.
    pub edit_rate: f64,
    /// Share of valid actions that failed (kind error).
    pub error_rate: f64,
    /// Transitions in the rollout.
    pub rollouts: usize,
    /// Transitions per second of rollout (generation + environment).
    pub rollouts_per_s: f64,
    /// `actor/pg_clipfrac`.
    pub clip_frac: f64,
    /// `actor/ppo_kl`: mean `old − logp` over updates.
    pub approx_kl: f64,
    /// Mean k3 KL of the rollout policy to the reference.
    pub ref_kl: f64,
    /// `actor/entropy` of the rollout policy over action tokens.
    pub entropy: f64,
    /// `critic/vf_loss`.
    pub value_loss: f64,
    /// Mean V(s) of the rollout.
    pub value_mean: f64,
    /// Mean actor gradient norm before clipping.
    pub actor_grad_norm: f64,
    /// Mean critic gradient norm before clipping.
    pub critic_grad_norm: f64,
    /// Optimizer steps taken (per model).
    pub updates: usize,
    /// Sequence tokens (prompt + action) per second of update, each through the actor's and the
    /// critic's forward and backward.
    pub update_tokens_per_s: f64,
    /// Wall seconds of the iteration.
    pub seconds: f64,
}

/// A PPO run in progress.
pub struct RlRun<B: AutodiffBackend> {
    /// The policy being trained.
    pub actor: Qwen2<B>,
    /// The value model.
    pub critic: Qwen2<B>,
    reference: Qwen2<B::InnerBackend>,
    actor_optim: Adam<B>,
    critic_optim: Adam<B>,
    /// Iterations done.
    pub iteration: usize,
    /// The settings.
    pub cfg: RlConfig,
    pool: StatesPool,
    codec: PromptCodec,
    model_config: Qwen2Config,
    device: B::Device,
}

// `!(x > 0.0)` is meant: it also rejects NaN.
#[allow(clippy::neg_cmp_op_on_partial_ord, clippy::nonminimal_bool)]
fn check(cfg: &RlConfig) -> Result<()> {
    let pos = [("batch", cfg.batch), ("ppo epochs", cfg.ppo_epochs), ("mini-batches", cfg.mini_batches), ("micro-batch", cfg.micro_batch)];
    if let Some((name, _)) = pos.iter().find(|(_, v)| *v == 0) {
        return Err(TrainError::Config(format!("{name} must be > 0")));
    }
    if cfg.mini_batches > cfg.batch {
        return Err(TrainError::Config(format!("{} mini-batches cannot split a batch of {}", cfg.mini_batches, cfg.batch)));
    }
    if !(cfg.actor_lr > 0.0 && cfg.critic_lr > 0.0) || !(cfg.clip > 0.0) || cfg.kl_coef < 0.0 {
        return Err(TrainError::Config("learning rates and clip must be > 0, the KL coefficient ≥ 0".into()));
    }
    if !(cfg.temperature > 0.0) {
        return Err(TrainError::Config("RL samples its actions: temperature must be > 0".into()));
    }
    if cfg.mode == Mode::Episode && cfg.episode_steps == 0 {
        return Err(TrainError::Config("episode steps must be > 0".into()));
    }
    Ok(())
}

fn adam<B: AutodiffBackend>() -> Adam<B> {
    AdamWConfig::new().with_weight_decay(0.0).init::<B, Qwen2<B>>()
}

fn tensor1<B: burn::tensor::backend::Backend>(v: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// Scores of one rollout under the frozen models.
pub(crate) struct Scored {
    /// Per transition: old log-probs of its action tokens.
    pub old_logp: Vec<Vec<f32>>,
    /// Per transition: reference log-probs.
    pub ref_logp: Vec<Vec<f32>>,
    /// Per transition: V(s).
    pub values: Vec<f64>,
    pub entropy: f64,
    pub ref_kl: f64,
}

impl<B: AutodiffBackend + KernelBackend> RlRun<B>
where
    B::InnerBackend: KernelBackend,
{
    /// Starts a run: actor and reference from `cfg.reference`, the critic from the same weights
    /// plus a fresh value head (or the one saved there).
    pub fn new(cfg: RlConfig, device: B::Device) -> Result<Self> {
        check(&cfg)?;
        let pool = StatesPool::from_jsonl(&cfg.trajectories, cfg.suite_seed)?;
        if pool.is_empty() {
            return Err(TrainError::Config(format!("{}: no states to train on", cfg.trajectories.display())));
        }
        let (actor, model_config) = mlagent_engine::io::load::<B>(&cfg.reference, FloatDType::F32, &device)?;
        let (mut critic, _) = mlagent_engine::io::load::<B>(&cfg.reference, FloatDType::F32, &device)?;
        mlagent_engine::io::add_value_head(&mut critic, cfg.seed, 0.02, &device);
        let (reference, _) = mlagent_engine::io::load::<B::InnerBackend>(&cfg.reference, FloatDType::F32, &device)?;
        let codec = PromptCodec::from_dir(&cfg.reference, cfg.max_prompt_tokens)?;
        if cfg.max_prompt_tokens + cfg.max_new_tokens >= actor.max_positions() {
            return Err(TrainError::Config(format!(
                "max prompt tokens {} + max new tokens {} exceed the model's {} positions",
                cfg.max_prompt_tokens,
                cfg.max_new_tokens,
                actor.max_positions()
            )));
        }
        Ok(Self { actor, critic, reference, actor_optim: adam(), critic_optim: adam(), iteration: 0, cfg, pool, codec, model_config, device })
    }

    /// The states pool.
    pub fn pool(&self) -> &StatesPool {
        &self.pool
    }

    fn generation(&self) -> GenConfig {
        GenConfig {
            sampling: SamplingParams { temperature: self.cfg.temperature, top_k: None, top_p: None },
            max_new_tokens: self.cfg.max_new_tokens,
            batch: self.cfg.gen_batch,
        }
    }

    /// The rollout of iteration `self.iteration` (deterministic state choice for a seed).
    fn rollout(&self, policy: &Qwen2<B::InnerBackend>, work: &Path) -> Result<Vec<Transition>> {
        let seed = self.cfg.seed.wrapping_add(self.iteration as u64 * 1_000_033);
        match self.cfg.mode {
            Mode::Step => {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut picks = Vec::with_capacity(self.cfg.batch);
                while picks.len() < self.cfg.batch {
                    let mut all: Vec<usize> = (0..self.pool.len()).collect();
                    all.shuffle(&mut rng);
                    picks.extend(all.into_iter().take(self.cfg.batch - picks.len()));
                }
                rollout::stepwise(policy, &self.codec, &self.pool, &picks, &self.cfg.episode, self.generation(), self.cfg.workers, work, seed, &self.device)
            }
            Mode::Episode => rollout::episodewise(
                policy,
                &self.codec,
                &self.pool,
                self.cfg.batch,
                self.iteration * self.cfg.batch,
                self.cfg.episode_steps,
                &self.cfg.episode,
                self.generation(),
                self.cfg.workers,
                work,
                seed,
                &self.device,
            ),
        }
    }

    /// One iteration: rollout in `work`, scoring, advantages, PPO epochs.
    pub fn iterate(&mut self, work: &Path) -> Result<IterMetrics> {
        let t0 = Instant::now();
        let policy = self.actor.valid();
        let critic = self.critic.valid();
        let tr = self.rollout(&policy, work)?;
        let rollout_s = t0.elapsed().as_secs_f64();
        let scored = score(&policy, &self.reference, &critic, &tr, self.cfg.micro_batch, self.cfg.temperature, &self.device)?;
        let (adv, ret) = advantages(&self.cfg, &tr, &scored.values);

        let t1 = Instant::now();
        let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ (0x9e37_79b9 + self.iteration as u64));
        let mut models = Models { actor: &mut self.actor, critic: &mut self.critic, actor_optim: &mut self.actor_optim, critic_optim: &mut self.critic_optim };
        let train_actor = self.iteration >= self.cfg.critic_warmup;
        let u = ppo_update(&mut models, &self.cfg, &tr, &scored, &adv, &ret, train_actor, &mut rng, &self.device)?;
        let update_s = t1.elapsed().as_secs_f64();
        self.iteration += 1;

        let rewards: Vec<f64> = tr.iter().map(|t| t.reward).collect();
        let (reward_mean, reward_std) = mean_std(&rewards);
        let share = |f: &dyn Fn(&Transition) -> bool| tr.iter().filter(|t| f(t)).count() as f64 / tr.len().max(1) as f64;
        Ok(IterMetrics {
            iteration: self.iteration,
            reward_mean,
            reward_std,
            valid_rate: share(&|t| t.valid),
            edit_rate: share(&|t| t.kind == ActionKind::Edit),
            error_rate: share(&|t| t.kind == ActionKind::Error),
            rollouts: tr.len(),
            rollouts_per_s: tr.len() as f64 / rollout_s.max(1e-9),
            clip_frac: u.clip_frac,
            approx_kl: u.approx_kl,
            ref_kl: scored.ref_kl,
            entropy: scored.entropy,
            value_loss: u.value_loss,
            value_mean: mean_std(&scored.values).0,
            actor_grad_norm: u.actor_grad_norm,
            critic_grad_norm: u.critic_grad_norm,
            updates: u.updates,
            update_tokens_per_s: u.tokens as f64 / update_s.max(1e-9),
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Writes `dir` atomically: `actor/` (HF dir + tokenizer), `critic/` (with
    /// `value_head.safetensors`), both optimizers' state and `trainer_state.json`.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let state = serde_json::json!({"iteration": self.iteration, "config": self.cfg});
        write_checkpoint_dir(dir, &state, |tmp| {
            for (name, model) in [("actor", &self.actor), ("critic", &self.critic)] {
                let d = tmp.join(name);
                mlagent_engine::io::save(&model.valid(), &self.model_config, &d, StorageDType::F32, &self.codec.eos)?;
                copy_tokenizer_files(&self.cfg.reference, &d)?;
            }
            save_optimizer(&self.actor_optim, &self.actor, &tmp.join("actor_optimizer"))?;
            save_optimizer(&self.critic_optim, &self.critic, &tmp.join("critic_optimizer"))
        })
    }

    /// Continues the run saved in `dir`; `iterations` (if given) replaces the planned total.
    pub fn resume(dir: &Path, iterations: Option<usize>, device: B::Device) -> Result<Self> {
        let bad = |m: String| TrainError::Checkpoint { path: dir.into(), message: m };
        let sp = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&sp).map_err(|e| TrainError::io(&sp, e))?;
        let state: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut cfg: RlConfig = serde_json::from_value(state["config"].clone()).map_err(|e| bad(e.to_string()))?;
        if let Some(n) = iterations {
            cfg.iterations = n;
        }
        let iteration = state["iteration"].as_u64().ok_or_else(|| bad("trainer_state.json has no iteration".into()))? as usize;
        let mut run = Self::new(cfg, device.clone())?;
        run.actor = mlagent_engine::io::load::<B>(&dir.join("actor"), FloatDType::F32, &device)?.0;
        run.critic = mlagent_engine::io::load::<B>(&dir.join("critic"), FloatDType::F32, &device)?.0;
        if run.critic.value_head.is_none() {
            return Err(bad("critic/ has no value_head.safetensors".into()));
        }
        run.actor_optim = load_optimizer(adam(), &run.actor, &dir.join("actor_optimizer"), &device)?;
        run.critic_optim = load_optimizer(adam(), &run.critic, &dir.join("critic_optimizer"), &device)?;
        run.iteration = iteration;
        Ok(run)
    }

    /// True when every planned iteration is done.
    pub fn finished(&self) -> bool {
        self.iteration >= self.cfg.iterations
    }
}

/// Old log-probs, reference log-probs, entropy and V(s) of a rollout, `micro_batch` sequences
/// per forward, without gradient.
pub(crate) fn score<B: KernelBackend>(
policy: &Qwen2<B>,
reference: &Qwen2<B>,
critic: &Qwen2<B>,
tr: &[Transition],
micro_batch: usize,
temperature: f32,
device: &B::Device,
) -> Result<Scored> {
    let mut s = Scored { old_logp: Vec::new(), ref_logp: Vec::new(), values: Vec::new(), entropy: 0.0, ref_kl: 0.0 };
    let (mut ent_sum, mut kl_sum, mut tokens) = (0.0, 0.0, 0usize);
    for chunk in tr.chunks(micro_batch) {
        let pairs: Vec<(&[u32], &[u32])> = chunk.iter().map(|t| (&t.prompt[..], &t.action[..])).collect();
        let batch = seq_batch::<B>(&pairs, device);
        let n: usize = batch.lens.iter().sum();
        let (old, ent) = action_logprobs(policy, &batch, temperature);
        let (refl, _) = action_logprobs(reference, &batch, temperature);
        let values = state_values(critic, &batch)?;
        ent_sum += ent * n as f64;
        tokens += n;
        let mut at = 0;
        for &len in &batch.lens {
            let (o, r) = (old[at..at + len].to_vec(), refl[at..at + len].to_vec());
            kl_sum += o.iter().zip(&r).map(|(&o, &r)| k3(o as f64, r as f64)).sum::<f64>();
            s.old_logp.push(o);
            s.ref_logp.push(r);
            at += len;
        }
        s.values.extend(values.into_iter().map(f64::from));
    }
    s.entropy = ent_sum / tokens.max(1) as f64;
    s.ref_kl = kl_sum / tokens.max(1) as f64;
    Ok(s)
}

/// Advantages (whitened over the batch) and returns per transition: `r − V(s)` in step mode, GAE
/// over each episode's consecutive transitions in episode mode.
pub(crate) fn advantages(cfg: &RlConfig, tr: &[Transition], values: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let rewards: Vec<f64> = tr.iter().map(|t| t.reward).collect();
    let (adv, ret) = match cfg.mode {
        Mode::Step => single_step(&rewards, values),
        Mode::Episode => {
            let (mut adv, mut ret) = (vec![0.0; tr.len()], vec![0.0; tr.len()]);
            let mut start = 0;
            while start < tr.len() {
                let end = (start..tr.len()).find(|&i| tr[i].episode != tr[start].episode).unwrap_or(tr.len());
                let (a, r) = gae(&rewards[start..end], &values[start..end], cfg.gamma, cfg.lambda);
                adv[start..end].copy_from_slice(&a);
                ret[start..end].copy_from_slice(&r);
                start = end;
            }
            (adv, ret)
        }
    };
    (whiten(&adv), ret)
}

/// The models one PPO update changes.
pub(crate) struct Models<'a, B: AutodiffBackend> {
    pub actor: &'a mut Qwen2<B>,
    pub critic: &'a mut Qwen2<B>,
    pub actor_optim: &'a mut Adam<B>,
    pub critic_optim: &'a mut Adam<B>,
}

/// Sums over one update, for metrics.
#[derive(Debug, Default)]
pub(crate) struct UpdateStats {
    pub clip_frac: f64,
    pub approx_kl: f64,
    pub value_loss: f64,
    pub actor_grad_norm: f64,
    pub critic_grad_norm: f64,
    pub updates: usize,
    pub tokens: usize,
}

fn ppo_config(cfg: &RlConfig) -> PpoConfig {
    PpoConfig {
        token: PpoTokenParams {
            clip_low: cfg.clip,
            clip_high: cfg.clip,
            dual_clip: cfg.dual_clip,
            kl: (cfg.kl_coef > 0.0).then_some(KlPenalty { estimator: KlEstimator::K3, coef: cfg.kl_coef }),
        },
        aggregation: mlagent_kernels::Aggregation::TokenMean,
    }
}

/// PPO epochs over mini-batches of `tr`: per mini-batch one actor step (token-mean loss over its
/// action tokens, accumulated over micro-batches) and one critic step (clipped value loss).
/// With `train_actor` false only the critic learns. Returns the mean diagnostics per mini-batch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ppo_update<B: AutodiffBackend + KernelBackend>(
    m: &mut Models<'_, B>,
    cfg: &RlConfig,
    tr: &[Transition],
    scored: &Scored,
    adv: &[f64],
    ret: &[f64],
    train_actor: bool,
    rng: &mut StdRng,
    device: &B::Device,
) -> Result<UpdateStats> {
    let ppo = ppo_config(cfg);
    let (mut clip_sum, mut kl_sum, mut vloss_sum, mut agn, mut cgn, mut updates, mut trained_tokens) = (0.0, 0.0, 0.0, 0.0, 0.0, 0usize, 0usize);
    let mut order: Vec<usize> = (0..tr.len()).collect();
    for _ in 0..cfg.ppo_epochs {
        order.shuffle(rng);
        let size = tr.len().div_ceil(cfg.mini_batches);
        for mb in order.chunks(size) {
            let mb_tokens: usize = mb.iter().map(|&i| tr[i].action.len()).sum();
            let mut actor_acc = GradientsAccumulator::<Qwen2<B>>::new();
            let mut critic_acc = GradientsAccumulator::<Qwen2<B>>::new();
            let (mut m_clip, mut m_kl, mut m_vl) = (0.0, 0.0, 0.0);
            for micro in mb.chunks(cfg.micro_batch) {
                let pairs: Vec<(&[u32], &[u32])> = micro.iter().map(|&i| (&tr[i].prompt[..], &tr[i].action[..])).collect();
                let batch = seq_batch::<B>(&pairs, device);
                let n: usize = batch.lens.iter().sum();
                if n > 0 && train_actor {
                    let cat = |f: &dyn Fn(usize) -> Vec<f32>| micro.iter().flat_map(|&i| f(i)).collect::<Vec<f32>>();
                    let pb = PpoBatch {
                        targets: batch.targets.clone(),
                        old_logp: tensor1(cat(&|i| scored.old_logp[i].clone()), device),
                        ref_logp: tensor1(cat(&|i| scored.ref_logp[i].clone()), device),
                        advantages: tensor1(cat(&|i| vec![adv[i] as f32; tr[i].action.len()]), device),
                        mask: Tensor::ones([n], device),
                    };
                    let logits = action_logits(&*m.actor, &batch, cfg.temperature);
                    let (loss, pm) = ppo_loss(logits, &pb, &ppo);
                    let w = n as f64 / mb_tokens as f64;
                    m_clip += pm.clip_frac * w;
                    m_kl += pm.approx_kl * w;
                    let grads = GradientsParams::from_grads(loss.mul_scalar(w).backward(), &*m.actor);
                    actor_acc.accumulate(&*m.actor, grads);
                }
                trained_tokens += micro.iter().map(|&i| tr[i].prompt.len() + tr[i].action.len()).sum::<usize>();
                let v = state_values_tensor(&*m.critic, &batch)?;
                let old_v = tensor1(micro.iter().map(|&i| scored.values[i] as f32).collect(), device);
                let r = tensor1(micro.iter().map(|&i| ret[i] as f32).collect(), device);
                let w = micro.len() as f64 / mb.len() as f64;
                let vl = clipped_value_loss(v, old_v, r, cfg.value_clip).mul_scalar(w);
                m_vl += vl.clone().into_scalar().elem::<f64>();
                let grads = GradientsParams::from_grads(vl.backward(), &*m.critic);
                critic_acc.accumulate(&*m.critic, grads);
            }
            if mb_tokens > 0 && train_actor {
                let mut g = actor_acc.grads();
                agn += clip_global_norm(&*m.actor, &mut g, cfg.max_grad_norm);
                *m.actor = m.actor_optim.step(cfg.actor_lr, m.actor.clone(), g);
            }
            let mut g = critic_acc.grads();
            cgn += clip_global_norm(&*m.critic, &mut g, cfg.max_grad_norm);
            *m.critic = m.critic_optim.step(cfg.critic_lr, m.critic.clone(), g);
            clip_sum += m_clip;
            kl_sum += m_kl;
            vloss_sum += m_vl;
            updates += 1;
        }
    }
    let u = updates.max(1) as f64;
    Ok(UpdateStats {
        clip_frac: clip_sum / u,
        approx_kl: kl_sum / u,
        value_loss: vloss_sum / u,
        actor_grad_norm: agn / u,
        critic_grad_norm: cgn / u,
        updates,
        tokens: trained_tokens,
    })
}

/// Schulman's k3 estimate of KL(π‖π_ref) for one token: `exp(ref − logp) − (ref − logp) − 1`.
pub fn k3(logp: f64, ref_logp: f64) -> f64 {
    let d = ref_logp - logp;
    d.exp() - d - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use mlagent_engine::io::{add_value_head, init_random};

    type B = Autodiff<Flex>;

    fn model_config() -> Qwen2Config {
        let v = serde_json::json!({"vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "tie_word_embeddings": true});
        Qwen2Config::from_value(v, Path::new("test")).unwrap()
    }

    fn cfg() -> RlConfig {
        RlConfig {
            mode: Mode::Step,
            reference: "unused".into(),
            trajectories: "unused".into(),
            suite_seed: 0,
            iterations: 1,
            batch: 2,
            episode_steps: 1,
            critic_warmup: 0,
            ppo_epochs: 2,
            mini_batches: 1,
            micro_batch: 1,
            actor_lr: 1e-2,
            critic_lr: 1e-2,
            clip: 0.2,
            dual_clip: Some(3.0),
            kl_coef: 0.001,
            value_clip: 0.5,
            max_grad_norm: 1.0,
            gamma: 1.0,
            lambda: 1.0,
            temperature: 1.0,
            max_new_tokens: 4,
            max_prompt_tokens: 32,
            gen_batch: 2,
            workers: 1,
            seed: 0,
            episode: EpisodeConfig::default(),
        }
    }

    fn transition(action: Vec<u32>, reward: f64) -> Transition {
        Transition { task: "t".into(), episode: 0, prompt: vec![1, 2, 3, 4], action, reward, kind: ActionKind::Edit, valid: true }
    }

    #[test]
    fn update_follows_the_advantage_and_values_move_to_returns() {
        let dev = Default::default();
        let mut actor = init_random::<B>(&model_config(), 3, 0.05, FloatDType::F32, &dev);
        let mut critic = init_random::<B>(&model_config(), 4, 0.05, FloatDType::F32, &dev);
        add_value_head(&mut critic, 5, 0.02, &dev);
        let reference = actor.valid();
        let (mut ao, mut co) = (adam::<B>(), adam::<B>());
        let tr = vec![transition(vec![5, 6, 7], 1.0), transition(vec![8, 9], 0.0)];
        let c = cfg();
        let before = score(&actor.valid(), &reference, &critic.valid(), &tr, 2, 1.0, &dev).unwrap();
        let sum = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>();
        let mut rng = StdRng::seed_from_u64(0);
        for _ in 0..4 {
            let s = score(&actor.valid(), &reference, &critic.valid(), &tr, 2, 1.0, &dev).unwrap();
            let rewards: Vec<f64> = tr.iter().map(|t| t.reward).collect();
            let (adv, ret) = single_step(&rewards, &s.values);
            let mut m = Models { actor: &mut actor, critic: &mut critic, actor_optim: &mut ao, critic_optim: &mut co };
            let u = ppo_update(&mut m, &c, &tr, &s, &whiten(&adv), &ret, true, &mut rng, &dev).unwrap();
            assert_eq!(u.updates, 2);
            assert_eq!(u.tokens, 2 * (2 * 4 + 5));
            assert!(u.value_loss.is_finite() && u.clip_frac >= 0.0);
        }
        let after = score(&actor.valid(), &reference, &critic.valid(), &tr, 2, 1.0, &dev).unwrap();
        assert!(sum(&after.old_logp[0]) > sum(&before.old_logp[0]), "rewarded action became less likely");
        assert!(sum(&after.old_logp[1]) < sum(&before.old_logp[1]), "punished action became more likely");
        // Same state, returns 1 and 0: V(s) moves toward 0.5.
        assert!((after.values[0] - 0.5).abs() < (before.values[0] - 0.5).abs(), "{:?} → {:?}", before.values, after.values);
        assert!(after.ref_kl > 0.0 && before.ref_kl.abs() < 1e-9);
    }

    #[test]
    fn episode_mode_runs_gae_per_episode() {
        let mut t = vec![transition(vec![5], 1.0), transition(vec![5], 0.0), transition(vec![5], 1.0)];
        t[2].episode = 1;
        let c = RlConfig { mode: Mode::Episode, ..cfg() };
        // Episode 0: returns 1, 0 (γ = λ = 1); episode 1: return 1 — not mixed across episodes.
        let (adv, ret) = advantages(&c, &t, &[0.0, 0.0, 0.0]);
        assert_eq!(ret, vec![1.0, 0.0, 1.0]);
        assert_eq!(adv, whiten(&[1.0, 0.0, 1.0]));
        let (_, ret) = advantages(&cfg(), &t, &[0.5, 0.5, 0.5]);
        assert_eq!(ret, vec![1.0, 0.0, 1.0]);
        assert_eq!(k3(-1.0, -1.0), 0.0);
        assert!(k3(-1.0, -2.0) > 0.0 && k3(-2.0, -1.0) > 0.0);
    }
}
