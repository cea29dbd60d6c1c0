//! The SFT loop: deterministic length-bucketed batches, token-mean cross-entropy over
//! gradient-accumulated micro-batches, global-norm clipping, AdamW with cosine schedule, and
//! checkpoints from which a run resumes bit-exactly.
//!
//! Determinism: the batch plan is a pure function of (samples, seed, settings), so a checkpoint
//! only needs the model, the optimizer state and the step index to continue the same run.

use super::data::Sample;
use super::loss::label_nll_sum;
use super::schedule::cosine_with_warmup;
use crate::error::{Result, TrainError};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, FloatDType, Int, Tensor, TensorData};
use mlagent_engine::{ForwardInput, Qwen2, Qwen2Config, StorageDType};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// SFT settings (defaults: the paper's for 7B where they transfer; see the CLI for presets).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SftConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Longest sample in tokens (longer ones are truncated).
    pub cutoff_len: usize,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Seed of the data order.
    pub seed: u64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// AdamW's second-moment decay (HF's default 0.999; from-scratch pre-training usually takes 0.95).
    #[serde(default = "default_beta2")]
    pub beta2: f32,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f64,
    /// Save a checkpoint every this many steps (0 = only at the end).
    pub save_every: usize,
    /// Stop after this many optimizer steps (for tests and resume checks).
    pub max_steps: Option<usize>,
    /// Longest prompt the caller fitted the samples' prompts to (the trainer does not use it; it is
    /// saved so that a resumed run prepares its samples exactly as the first run did).
    #[serde(default)]
    pub max_prompt_tokens: Option<usize>,
}

fn default_beta2() -> f32 {
    0.999
}

/// AdamW as configured, with HF transformers' epsilon (1e-8; burn's default is 1e-5).
fn adamw<B: AutodiffBackend>(cfg: &SftConfig) -> Adam<B> {
    AdamWConfig::new().with_weight_decay(cfg.weight_decay).with_beta_2(cfg.beta2).with_epsilon(1e-8).init::<B, Qwen2<B>>()
}

/// What one optimizer step did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepMetrics {
    /// 1-based optimizer step.
    pub step: usize,
    /// Planned steps.
    pub total_steps: usize,
    /// Token-mean loss over the step's labelled tokens.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens processed (all positions, padding excluded).
    pub tokens: usize,
    /// Wall seconds of the step.
    pub seconds: f64,
}

/// The optimizer steps of a run: each a list of micro-batches of sample indices.
pub fn plan(samples: &[Sample], cfg: &SftConfig) -> Vec<Vec<Vec<usize>>> {
    let mut steps = Vec::new();
    for epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(cfg.seed.wrapping_add(epoch as u64)));
        // Length bucketing: sort within windows of 16 micro-batches, then shuffle the batches.
        let window = cfg.batch_size * 16;
        let mut micro: Vec<Vec<usize>> = Vec::new();
        for chunk in order.chunks(window) {
            let mut c = chunk.to_vec();
            c.sort_by_key(|&i| samples[i].ids.len());
            micro.extend(c.chunks(cfg.batch_size).map(<[usize]>::to_vec));
        }
        micro.shuffle(&mut StdRng::seed_from_u64(cfg.seed.wrapping_add(1_000_003 * (epoch as u64 + 1))));
        steps.extend(micro.chunks(cfg.grad_accum).map(<[Vec<usize>]>::to_vec));
    }
    steps
}

/// One micro-batch: right-padded inputs `[B, T−1]`, the flat indices `b·(T−1) + t` of the
/// labelled positions `[N]`, and their next tokens `[N]` (`None` when no position is labelled).
#[allow(clippy::type_complexity)]
pub(crate) fn micro_batch<B: burn::tensor::backend::Backend>(
    samples: &[Sample],
    rows: &[usize],
    device: &B::Device,
) -> (ForwardInput<B>, Option<(Tensor<B, 1, Int>, Tensor<B, 1, Int>)>) {
    let t = rows.iter().map(|&r| samples[r].ids.len()).max().unwrap_or(2).max(2) - 1;
    let b = rows.len();
    let mut inp = vec![0i64; b * t];
    let (mut at, mut tgt) = (Vec::new(), Vec::new());
    for (row, &r) in rows.iter().enumerate() {
        let s = &samples[r];
        for i in 0..s.ids.len() - 1 {
            inp[row * t + i] = s.ids[i] as i64;
            if s.labels[i + 1] {
                at.push((row * t + i) as i64);
                tgt.push(s.ids[i + 1] as i64);
            }
        }
    }
    // Right padding needs no attention mask: causal attention never looks forward.
    let input = ForwardInput {
        input_ids: Tensor::from_data(TensorData::new(inp, [b, t]), device),
        positions: Tensor::<B, 1, Int>::arange(0..t as i64, device).reshape([1, t]).repeat_dim(0, b),
        pad_lens: None,
    };
    let n = at.len();
    let labels = (n > 0).then(|| (Tensor::from_data(TensorData::new(at, [n]), device), Tensor::from_data(TensorData::new(tgt, [n]), device)));
    (input, labels)
}

struct ParamIds(Vec<ParamId>);

impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for ParamIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.id);
    }
}

/// Parameter ids in the module's (deterministic) visiting order.
fn param_ids<B: AutodiffBackend>(model: &Qwen2<B>) -> Vec<ParamId> {
    let mut v = ParamIds(Vec::new());
    model.visit(&mut v);
    v.0
}

struct GradNorm<'a> {
    grads: &'a GradientsParams,
    sq: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.sq += g.cast(FloatDType::F32).powi_scalar(2).sum().into_scalar().elem::<f64>();
        }
    }
}

struct GradScale<'a> {
    grads: &'a mut GradientsParams,
    scale: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradScale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.scale));
        }
    }
}

/// Global L2 norm of all gradients; scales them to `max_norm` when above it (`max_norm` 0 = off).
/// Returns the norm before clipping (as `torch.nn.utils.clip_grad_norm_`).
pub fn clip_global_norm<B: AutodiffBackend>(model: &Qwen2<B>, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut n = GradNorm { grads, sq: 0.0 };
    model.visit(&mut n);
    let norm = n.sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        model.visit(&mut GradScale { grads, scale: max_norm / (norm + 1e-6) });
    }
    norm
}

/// AdamW over a [`Qwen2`].
pub(crate) type Adam<B> = OptimizerAdaptor<AdamW, Qwen2<B>, B>;
type AdamRecord<B> = <Adam<B> as Optimizer<Qwen2<B>, B>>::Record;

/// Writes the optimizer state to `path` (`.bin` added), keyed by parameter order so that a
/// reloaded model (new parameter ids) can take it back.
pub(crate) fn save_optimizer<B: AutodiffBackend>(optim: &Adam<B>, model: &Qwen2<B>, path: &Path) -> Result<()> {
    let order: HashMap<ParamId, u64> = param_ids(model).iter().enumerate().map(|(i, id)| (*id, i as u64)).collect();
    let record: AdamRecord<B> = optim.to_record();
    let remapped: AdamRecord<B> = record.into_iter().filter_map(|(id, r)| order.get(&id).map(|&i| (ParamId::from(i), r))).collect();
    BinFileRecorder::<FullPrecisionSettings>::new()
        .record(remapped, path.to_path_buf())
        .map_err(|e| TrainError::Checkpoint { path: path.into(), message: e.to_string() })
}

/// Loads what [`save_optimizer`] wrote into `optim` for `model`.
pub(crate) fn load_optimizer<B: AutodiffBackend>(optim: Adam<B>, model: &Qwen2<B>, path: &Path, device: &B::Device) -> Result<Adam<B>> {
    let bad = |m: String| TrainError::Checkpoint { path: path.into(), message: m };
    let ids = param_ids(model);
    let record: AdamRecord<B> =
        BinFileRecorder::<FullPrecisionSettings>::new().load(path.to_path_buf(), device).map_err(|e| bad(format!("optimizer state: {e}")))?;
    let remapped: AdamRecord<B> = record
        .into_iter()
        .map(|(ord, r)| ids.get(ord.val() as usize).map(|id| (*id, r)).ok_or_else(|| bad("optimizer state does not match the model".into())))
        .collect::<Result<_>>()?;
    Ok(optim.load_record(remapped))
}

/// A training run in progress.
pub struct SftRun<B: AutodiffBackend> {
    /// The model being trained.
    pub model: Qwen2<B>,
    optim: Adam<B>,
    /// Optimizer steps done.
    pub step: usize,
    /// The settings.
    pub cfg: SftConfig,
    steps: Vec<Vec<Vec<usize>>>,
    device: B::Device,
}

impl<B: AutodiffBackend + mlagent_kernels::KernelBackend> SftRun<B> {
    /// Starts a run on `model` with the given samples.
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // `!(lr > 0.0)` also rejects NaN
    pub fn new(model: Qwen2<B>, samples: &[Sample], cfg: SftConfig, device: B::Device) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.grad_accum == 0 || cfg.epochs == 0 || !(cfg.lr > 0.0) {
            return Err(TrainError::Config("epochs, batch size, grad accumulation and lr must be > 0".into()));
        }
        let optim = adamw::<B>(&cfg);
        let steps = plan(samples, &cfg);
        Ok(Self { model, optim, step: 0, cfg, steps, device })
    }

    /// Steps this run will take.
    pub fn total_steps(&self) -> usize {
        let planned = self.steps.len();
        self.cfg.max_steps.map_or(planned, |m| m.min(planned))
    }

    /// True when every planned step is done.
    pub fn finished(&self) -> bool {
        self.step >= self.total_steps()
    }

    /// One optimizer step over its micro-batches.
    pub fn train_step(&mut self, samples: &[Sample]) -> StepMetrics {
        let start = std::time::Instant::now();
        let micro = &self.steps[self.step];
        let label_tokens: usize = micro.iter().flatten().map(|&i| samples[i].label_count()).sum();
        let denom = label_tokens.max(1) as f64;
        let mut accum = GradientsAccumulator::<Qwen2<B>>::new();
        let (mut loss_sum, mut tokens) = (0.0, 0);
        for rows in micro {
            let (input, labels) = micro_batch::<B>(samples, rows, &self.device);
            tokens += rows.iter().map(|&r| samples[r].ids.len()).sum::<usize>();
            let Some((at, targets)) = labels else { continue }; // nothing to learn in these rows
            let hidden = self.model.forward_hidden(&input, None); // [B, T, E]
            let logits = self.model.logits_at(hidden, at); // [N, V]
            let loss = label_nll_sum(logits, targets).div_scalar(denom);
            loss_sum += loss.clone().into_scalar().elem::<f64>();
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            accum.accumulate(&self.model, grads);
        }
        let mut grads = accum.grads();
        let grad_norm = clip_global_norm(&self.model, &mut grads, self.cfg.max_grad_norm);
        let lr = cosine_with_warmup(self.step, self.total_steps(), self.cfg.warmup_steps, self.cfg.lr);
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.step += 1;
        StepMetrics {
            step: self.step,
            total_steps: self.total_steps(),
            loss: loss_sum,
            lr,
            grad_norm,
            tokens,
            seconds: start.elapsed().as_secs_f64(),
        }
    }

    /// Writes `dir` atomically: `model/` (HF dir, f32, with the tokenizer files of `tokenizer_dir`),
    /// `optimizer.bin` (AdamW moments keyed by parameter order), `trainer_state.json`.
    pub fn save_checkpoint(&self, dir: &Path, config: &Qwen2Config, tokenizer_dir: &Path, eos: &[u32]) -> Result<()> {
        let state = serde_json::json!({"step": self.step, "config": self.cfg});
        write_checkpoint_dir(dir, &state, |tmp| {
            let model_dir = tmp.join("model");
            mlagent_engine::io::save(&self.model.valid(), config, &model_dir, StorageDType::F32, eos)?;
            copy_tokenizer_files(tokenizer_dir, &model_dir)?;
            save_optimizer(&self.optim, &self.model, &tmp.join("optimizer"))
        })
    }

    /// Continues the run saved in `dir` on the same samples, with `cfg`: the checkpoint's
    /// settings ([`checkpoint_config`]), of which only the run-control fields `max_steps` and
    /// `save_every` may differ (every other field decides what the steps compute).
    pub fn resume(dir: &Path, samples: &[Sample], cfg: SftConfig, device: B::Device) -> Result<Self> {
        let bad = |m: String| TrainError::Checkpoint { path: dir.into(), message: m };
        let (saved, step) = checkpoint_config(dir)?;
        let same = SftConfig { max_steps: saved.max_steps, save_every: saved.save_every, ..cfg.clone() };
        if same != saved {
            return Err(bad(format!("resuming with settings {cfg:?} that differ from the checkpoint's {saved:?}")));
        }
        let (model, _) = mlagent_engine::io::load::<B>(&dir.join("model"), FloatDType::F32, &device)?;
        let mut run = Self::new(model, samples, cfg, device.clone())?;
        let optim = adamw::<B>(&run.cfg);
        run.optim = load_optimizer(optim, &run.model, &dir.join("optimizer"), &device)?;
        run.step = step;
        Ok(run)
    }
}

/// The settings and the optimizer step saved in the checkpoint directory `dir`.
pub fn checkpoint_config(dir: &Path) -> Result<(SftConfig, usize)> {
    let bad = |m: String| TrainError::Checkpoint { path: dir.into(), message: m };
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    let state: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let cfg: SftConfig = serde_json::from_value(state["config"].clone()).map_err(|e| bad(e.to_string()))?;
    let step = state["step"].as_u64().ok_or_else(|| bad("trainer_state.json has no step".into()))? as usize;
    Ok((cfg, step))
}

/// Writes a checkpoint directory atomically: `fill` writes into `DIR.tmp`, then
/// `trainer_state.json` (`state`) is added and the folder renamed over `dir`.
pub(crate) fn write_checkpoint_dir(dir: &Path, state: &serde_json::Value, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    fill(&tmp)?;
    std::fs::write(tmp.join("trainer_state.json"), serde_json::to_string_pretty(state).expect("json"))
        .map_err(|e| TrainError::io(&tmp, e))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))
}

/// Copies tokenizer.json, tokenizer_config.json and generation_config.json (if present).
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        let src: PathBuf = from.join(f);
        if src.is_file() {
            std::fs::copy(&src, to.join(f)).map_err(|e| TrainError::io(&src, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type B = Autodiff<Flex>;

    fn config() -> Qwen2Config {
        let v = serde_json::json!({"vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "tie_word_embeddings": true});
        Qwen2Config::from_value(v, Path::new("test")).unwrap()
    }

    fn samples() -> Vec<Sample> {
        (0..6u32)
            .map(|k| {
                let ids: Vec<u32> = (0..8 + k).map(|i| (i * 7 + k * 3) % 40).collect();
                let labels = (0..ids.len()).map(|i| i >= 4).collect();
                Sample { ids, labels }
            })
            .collect()
    }

    fn cfg(max_steps: Option<usize>) -> SftConfig {
        SftConfig {
            epochs: 4,
            lr: 3e-3,
            batch_size: 2,
            grad_accum: 2,
            cutoff_len: 64,
            warmup_steps: 1,
            seed: 5,
            weight_decay: 0.0,
            beta2: 0.95,
            max_grad_norm: 1.0,
            save_every: 0,
            max_steps,
            max_prompt_tokens: None,
        }
    }

    fn weights(m: &Qwen2<B>) -> Vec<Vec<f32>> {
        mlagent_engine::io::state_dict(&m.valid()).into_values().map(|(_, v)| v).collect()
    }

    #[test]
    fn plan_covers_every_sample_each_epoch() {
        let s = samples();
        let p = plan(&s, &cfg(None));
        let mut seen: Vec<usize> = p.iter().flatten().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..6).flat_map(|i| std::iter::repeat_n(i, 4)).collect::<Vec<_>>());
        assert_eq!(p, plan(&s, &cfg(None)));
    }

    #[test]
    fn loss_goes_down() {
        let dev = Default::default();
        let s = samples();
        let model = mlagent_engine::io::init_random::<B>(&config(), 1, 0.05, FloatDType::F32, &dev);
        let mut run = SftRun::new(model, &s, SftConfig { epochs: 30, lr: 1e-2, ..cfg(None) }, dev).unwrap();
        let first = run.train_step(&s).loss;
        let mut last = first;
        while !run.finished() {
            last = run.train_step(&s).loss;
        }
        assert!(last < first * 0.5, "loss {first} → {last}");
    }

    #[test]
    fn resume_is_bit_exact() {
        let dev = burn::backend::flex::FlexDevice;
        let s = samples();
        let model = mlagent_engine::io::init_random::<B>(&config(), 2, 0.05, FloatDType::F32, &dev);
        let mut straight = SftRun::new(model.clone(), &s, cfg(Some(6)), dev).unwrap();
        while !straight.finished() {
            straight.train_step(&s);
        }
        let mut first = SftRun::new(model, &s, cfg(Some(6)), dev).unwrap();
        for _ in 0..3 {
            first.train_step(&s);
        }
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = tmp.path().join("checkpoint-3");
        first.save_checkpoint(&ckpt, &config(), tmp.path(), &[]).unwrap();
        drop(first);
        // Settings that change what the steps compute are refused; run control may change.
        let err = SftRun::<B>::resume(&ckpt, &s, SftConfig { lr: 1.0, ..cfg(Some(6)) }, dev).err().expect("lr differs");
        assert!(err.to_string().contains("differ from the checkpoint's"), "{err}");
        let mut resumed = SftRun::<B>::resume(&ckpt, &s, SftConfig { save_every: 2, ..cfg(Some(6)) }, dev).unwrap();
        assert_eq!(resumed.step, 3);
        while !resumed.finished() {
            resumed.train_step(&s);
        }
        assert_eq!(weights(&resumed.model), weights(&straight.model));
    }
}
