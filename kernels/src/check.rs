//! Fresh random inputs and plain-loop references for checking the fused ops (tests and
//! `mlagent kernels check`). Inputs are chosen to exercise every branch: targets anywhere in the
//! vocabulary, masks with zeros, advantages of both signs, and old log-probs far enough from the
//! current ones that ratios land on both sides of the clip range.

use crate::KernelBackend;
use crate::attention::AttentionMask;
use crate::ppo::{Aggregation, KlEstimator, PpoBatch, PpoConfig};
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Int, Tensor, TensorData};

/// Deterministic uniform numbers in [−1, 1) (a 64-bit LCG; tests must not depend on a crate's RNG).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Logits `[N, V]` in [−3, 3).
pub fn random_logits(n: usize, v: usize, seed: u64) -> TensorData {
    TensorData::new(uniform(n * v, seed).iter().map(|x| x * 3.0).collect::<Vec<f32>>(), [n, v])
}

/// Row log-sum-exps of `[N, V]` logits in f64.
pub fn lse_rows(logits: &[f32], v: usize) -> Vec<f64> {
    logits
        .chunks(v)
        .map(|r| {
            let m = r.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
            m + r.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
        })
        .collect()
}

/// A PPO batch for `logits`: old log-probs within ±0.6 of the current ones (ratios 0.55–1.8, both
/// clips hit), reference log-probs within ±0.5, advantages in [−1, 1), every fifth token masked.
pub fn random_ppo_batch<B: Backend>(logits: &TensorData, seed: u64, device: &B::Device) -> PpoBatch<B> {
    let [n, v] = [logits.shape[0], logits.shape[1]];
    let x: Vec<f32> = logits.clone().convert::<f32>().to_vec().expect("f32 logits");
    let lse = lse_rows(&x, v);
    let targets: Vec<i64> = uniform(n, seed).iter().map(|u| (((u + 1.0) / 2.0 * v as f32) as i64).min(v as i64 - 1)).collect();
    let lp: Vec<f32> = (0..n).map(|r| (x[r * v + targets[r] as usize] as f64 - lse[r]) as f32).collect();
    let shift = |s: u64, a: f32| -> Vec<f32> { uniform(n, s).iter().zip(&lp).map(|(u, l)| l + a * u).collect() };
    let f = |d: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(d, [n]), device);
    PpoBatch {
        targets: Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [n]), device),
        old_logp: f(shift(seed + 1, 0.6)),
        ref_logp: f(shift(seed + 2, 0.5)),
        advantages: f(uniform(n, seed + 3)),
        mask: f((0..n).map(|i| if i % 5 == 4 { 0.0 } else { 1.0 }).collect()),
    }
}

/// The PPO loss by a plain f64 loop over tokens, straight from the formulas (no tensor ops).
pub fn ppo_loss_loop<B: Backend>(logits: &TensorData, batch: &PpoBatch<B>, cfg: &PpoConfig) -> f64 {
    let v = logits.shape[1];
    let x: Vec<f32> = logits.clone().convert::<f32>().to_vec().expect("f32 logits");
    let lse = lse_rows(&x, v);
    let host = |t: &Tensor<B, 1>| -> Vec<f64> { t.clone().into_data().convert::<f64>().to_vec().unwrap() };
    let targets: Vec<i64> = batch.targets.clone().into_data().convert::<i64>().to_vec().unwrap();
    let (old, rf, adv, mask) = (host(&batch.old_logp), host(&batch.ref_logp), host(&batch.advantages), host(&batch.mask));
    let p = &cfg.token;
    let losses: Vec<f64> = (0..targets.len())
        .map(|i| {
            let lp = x[i * v + targets[i] as usize] as f64 - lse[i];
            let r = (lp - old[i]).clamp(-20.0, 20.0).exp();
            let clipped = r.clamp(1.0 - p.clip_low as f64, 1.0 + p.clip_high as f64);
            let mut l = (-adv[i] * r).max(-adv[i] * clipped);
            if let (Some(c), true) = (p.dual_clip, adv[i] < 0.0) {
                l = l.min(-adv[i] * c as f64);
            }
            if let Some(kl) = p.kl {
                let k = match kl.estimator {
                    KlEstimator::K1 => lp - rf[i],
                    KlEstimator::K2 => 0.5 * (lp - rf[i]).powi(2),
                    KlEstimator::K3 => {
                        let d = (rf[i] - lp).clamp(-20.0, 20.0);
                        (d.exp() - d - 1.0).clamp(-10.0, 10.0)
                    }
                };
                l += kl.coef as f64 * k;
            }
            l
        })
        .collect();
    let masked_mean = |r: std::ops::Range<usize>| {
        let d: f64 = mask[r.clone()].iter().sum();
        r.map(|i| losses[i] * mask[i]).sum::<f64>() / d.max(1.0)
    };
    match cfg.aggregation {
        Aggregation::TokenMean => masked_mean(0..losses.len()),
        Aggregation::SeqMeanTokenMean { seq_len } => {
            let s = losses.len() / seq_len;
            (0..s).map(|j| masked_mean(j * seq_len..(j + 1) * seq_len)).sum::<f64>() / s as f64
        }
    }
}

/// Largest absolute elementwise difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "max_abs_diff: lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// ‖a − b‖ / ‖b‖ in f64 (‖·‖ the Euclidean norm; 0 when both are 0).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_err: lengths differ");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if den == 0.0 { num } else { num / den }
}

/// Loss and dlogits relative errors of [`crate::ppo_loss`] on backend `B` (logits cast to `dtype`)
/// against the f64 CPU spec [`crate::ppo::ppo_loss_reference`], on fresh inputs from `seed`.
pub fn ppo_rel_errors<B: KernelBackend + AutodiffBackend>(
    n: usize,
    v: usize,
    cfg: &PpoConfig,
    dtype: FloatDType,
    seed: u64,
    dev: &B::Device,
) -> (f64, f64) {
    type R = Autodiff<NdArray<f64>>;
    let data = random_logits(n, v, seed);
    let x = Tensor::<B, 2>::from_data(data.clone(), dev).cast(dtype).require_grad();
    let batch = random_ppo_batch::<B>(&data, seed + 1, dev);
    let (loss, _) = crate::ppo_loss(x.clone(), &batch, cfg);
    let g = x.grad(&loss.backward()).expect("logits gradient");
    let xr = Tensor::<R, 2>::from_data(data.clone().convert::<f64>(), &Default::default()).require_grad();
    let rbatch = random_ppo_batch::<R>(&data, seed + 1, &Default::default());
    let (rloss, _) = crate::ppo::ppo_loss_reference(xr.clone(), &rbatch, cfg);
    let rg = xr.grad(&rloss.backward()).expect("logits gradient");
    (rel_err(&host(loss.inner()), &host(rloss.inner())), rel_err(&host(g), &host(rg)))
}

/// One attention problem: shapes, masking and the seed of its random inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionCase {
    /// B.
    pub batch: usize,
    /// H query heads.
    pub heads: usize,
    /// K key/value heads (divides H).
    pub kv_heads: usize,
    /// Tq.
    pub q_len: usize,
    /// Tk (≥ q_offset + Tq).
    pub k_len: usize,
    /// D.
    pub head_dim: usize,
    /// Causal masking.
    pub causal: bool,
    /// Index of the first query among the keys.
    pub q_offset: usize,
    /// Left-pad lengths per batch row.
    pub pad_lens: Option<Vec<usize>>,
    /// Seed of q, k, v and the upstream gradient.
    pub seed: u64,
}

/// Relative errors `[out, dq, dk, dv]` of [`crate::flash_attention`] on backend `B` (inputs cast
/// to `dtype`) against the f64 CPU reference of [`crate::attention_ops`], for the loss
/// `Σ out∘W` with a random W.
pub fn attention_rel_errors<B: KernelBackend + AutodiffBackend>(c: &AttentionCase, dtype: FloatDType, dev: &B::Device) -> [f64; 4] {
    type R = Autodiff<NdArray<f64>>;
    let qs = [c.batch, c.heads, c.q_len, c.head_dim];
    let ks = [c.batch, c.kv_heads, c.k_len, c.head_dim];
    let data = |shape: [usize; 4], s: u64| TensorData::new(uniform(shape.iter().product(), c.seed + s), shape);
    let (qd, kd, vd, wd) = (data(qs, 1), data(ks, 2), data(ks, 3), data(qs, 4));
    fn run<Bk: KernelBackend + AutodiffBackend>(
        c: &AttentionCase,
        d: [&TensorData; 4],
        dtype: FloatDType,
        dev: &Bk::Device,
    ) -> [Vec<f64>; 4] {
        let t = |x: &TensorData| Tensor::<Bk, 4>::from_data(x.clone(), dev).cast(dtype).require_grad();
        let (q, k, v) = (t(d[0]), t(d[1]), t(d[2]));
        let w = Tensor::<Bk, 4>::from_data(d[3].clone(), dev).cast(dtype);
        let mask = AttentionMask::<Bk>::new(c.causal, c.q_offset, c.pad_lens.clone(), c.q_len, c.k_len, dev);
        let out = crate::flash_attention(q.clone(), k.clone(), v.clone(), &mask);
        let grads = (out.clone() * w).sum().backward();
        let g = |x: &Tensor<Bk, 4>| host(x.grad(&grads).expect("attention gradient"));
        [host(out.inner()), g(&q), g(&k), g(&v)]
    }
    let got = run::<B>(c, [&qd, &kd, &vd, &wd], dtype, dev);
    let f64d = |x: &TensorData| x.clone().convert::<f64>();
    let want = run::<R>(c, [&f64d(&qd), &f64d(&kd), &f64d(&vd), &f64d(&wd)], FloatDType::F64, &Default::default());
    [0, 1, 2, 3].map(|i| rel_err(&got[i], &want[i]))
}

/// A tensor's values on the host, as f64.
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().expect("numeric tensor")
}
