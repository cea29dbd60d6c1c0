//! Fresh random inputs and plain-loop references for checking the fused ops (tests and
//! `mlagent kernels check`). Inputs are chosen to exercise every branch: targets anywhere in the
//! vocabulary, masks with zeros, advantages of both signs, and old log-probs far enough from the
//! current ones that ratios land on both sides of the clip range.

use crate::KernelBackend;
use crate::attention_ops::{FlashParams, flash_bwd_reference, flash_fwd_reference};
use crate::attention::AttentionMask;
use crate::ppo::{Aggregation, KlEstimator, PpoBatch, PpoConfig};
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
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

/// A tensor of [`uniform`] numbers on the default device.
pub fn uniform_tensor<B: Backend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(uniform(shape.iter().product(), seed), shape), &Default::default())
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

/// `n` target ids spread over a vocabulary of `v`.
fn random_targets(n: usize, v: usize, seed: u64) -> Vec<i64> {
    uniform(n, seed).iter().map(|u| (((u + 1.0) / 2.0 * v as f32) as i64).min(v as i64 - 1)).collect()
}

/// A PPO batch for `logits`: old log-probs within ±0.6 of the current ones (ratios 0.55–1.8, both
/// clips hit), reference log-probs within ±0.5, advantages in [−1, 1), every fifth token masked.
pub fn random_ppo_batch<B: Backend>(logits: &TensorData, seed: u64, device: &B::Device) -> PpoBatch<B> {
    let [n, v] = [logits.shape[0], logits.shape[1]];
    let x: Vec<f32> = logits.clone().convert::<f32>().to_vec().expect("f32 logits");
    let lse = lse_rows(&x, v);
    let targets = random_targets(n, v, seed);
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
    /// Keys of the `t`-th 64-key tile are multiplied by `1 + key_growth·t`, so that scores rise
    /// tile after tile and the online softmax raises its running maximum again and again (random
    /// inputs alone rarely do; 0 leaves the keys as drawn).
    pub key_growth: f64,
}

impl AttentionCase {
    /// Random q `[B, H, Tq, D]`, k and v `[B, K, Tk, D]`, and a `[B, H, Tq, D]` tensor for the
    /// upstream side (the loss weights W, or dO), all from `seed`.
    fn inputs(&self) -> [TensorData; 4] {
        let qs = [self.batch, self.heads, self.q_len, self.head_dim];
        let ks = [self.batch, self.kv_heads, self.k_len, self.head_dim];
        let data = |shape: [usize; 4], s: u64| TensorData::new(uniform(shape.iter().product(), self.seed + s), shape);
        let mut k = uniform(ks.iter().product(), self.seed + 2);
        for (i, x) in k.iter_mut().enumerate() {
            let key = i / self.head_dim % self.k_len;
            *x *= (1.0 + self.key_growth * (key / 64) as f64) as f32;
        }
        [data(qs, 1), TensorData::new(k, ks), data(ks, 3), data(qs, 4)]
    }
}

/// Relative errors `[out, dq, dk, dv]` of [`crate::flash_attention`] on backend `B` (inputs cast
/// to `dtype`) against the f64 CPU reference of [`crate::attention_ops`], for the loss
/// `Σ out∘W` with a random W.
pub fn attention_rel_errors<B: KernelBackend + AutodiffBackend>(c: &AttentionCase, dtype: FloatDType, dev: &B::Device) -> [f64; 4] {
    type R = Autodiff<NdArray<f64>>;
    let [qd, kd, vd, wd] = c.inputs();
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

/// One stage of [`stages`]: its name, relative error, and the first elements that differ by more
/// than 1e-2 of the reference's largest magnitude (index, ours, reference).
#[derive(Debug, Clone)]
pub struct Stage {
    /// What was compared.
    pub name: String,
    /// ‖ours − ref‖ / ‖ref‖.
    pub rel_err: f64,
    /// How many elements differ.
    pub mismatched: usize,
    /// Up to six `(index, ours, reference)`.
    pub first: Vec<(usize, f64, f64)>,
}

fn stage(name: &str, got: &[f64], want: &[f64]) -> Stage {
    let tol = 1e-2 * want.iter().fold(0.0f64, |a, b| a.max(b.abs())).max(1e-30);
    let bad: Vec<(usize, f64, f64)> =
        got.iter().zip(want).enumerate().filter(|(_, (g, w))| (*g - *w).is_nan() || (*g - *w).abs() > tol).map(|(i, (g, w))| (i, *g, *w)).collect();
    Stage { name: name.into(), rel_err: rel_err(got, want), mismatched: bad.len(), first: bad.into_iter().take(6).collect() }
}

/// The fused ops stage by stage on backend `B`, without autodiff, against float64 CPU results:
/// the kernels' outputs given fixed inputs (so a wrong gradient in [`ppo_rel_errors`] or
/// [`attention_rel_errors`] can be pinned on one kernel, or on the autodiff wiring around them),
/// and the plain-ops references run on `B` itself (so a fault of the backend's own ops shows).
/// `report` sees each stage as it finishes.
pub fn stages<B: KernelBackend>(
    c: &AttentionCase,
    n: usize,
    v: usize,
    dtype: FloatDType,
    dev: &B::Device,
    report: &mut dyn FnMut(&Stage),
) -> Vec<Stage> {
    use crate::ops::{fp, ft, logprobs_bwd_reference, logprobs_fwd_reference};
    type R = NdArray<f64>;
    let r = &burn::backend::ndarray::NdArrayDevice::Cpu;
    let mut out = Vec::new();
    let mut push = |name: &str, got: Vec<f64>, want: &[f64]| {
        let s = stage(name, &got, want);
        report(&s);
        out.push(s);
    };
    // Logits rows: forward (logp, lse), then dlogits for a random upstream gradient. The reference
    // sees the inputs as the device holds them (rounded to `dtype`).
    let x = Tensor::<B, 2>::from_data(random_logits(n, v, c.seed + 7), dev).cast(dtype);
    let xr = Tensor::<R, 2>::from_data(x.clone().into_data().convert::<f64>(), r);
    let targets = random_targets(n, v, c.seed + 8);
    let t = Tensor::<B, 1, Int>::from_data(TensorData::new(targets.clone(), [n]), dev);
    let tr = Tensor::<R, 1, Int>::from_data(TensorData::new(targets, [n]), r);
    let g = TensorData::new(uniform(n, c.seed + 9), [n]);
    let (gt, gr) = (Tensor::<B, 1>::from_data(g.clone(), dev), Tensor::<R, 1>::from_data(g.convert::<f64>(), r));
    let (lp, lse) = B::logprobs_fwd(fp(x.clone()), t.clone().into_primitive());
    let (lpr, lser) = logprobs_fwd_reference::<R>(fp(xr.clone()), tr.clone().into_primitive());
    push("logprobs_fwd logp", host(ft::<B, 1>(lp)), &host(ft::<R, 1>(lpr)));
    push("logprobs_fwd lse", host(ft::<B, 1>(lse.clone())), &host(ft::<R, 1>(lser.clone())));
    let want_dl = host(ft::<R, 2>(logprobs_bwd_reference::<R>(fp(xr), tr.into_primitive(), lser, fp(gr))));
    let dl = B::logprobs_bwd(fp(x.clone()), t.clone().into_primitive(), lse.clone(), fp(gt.clone()));
    push("logprobs_bwd kernel", host(ft::<B, 2>(dl)), &want_dl);

    // Attention: forward, then the backward from the device's own forward for a random dO.
    let [qd, kd, vd, dod] = c.inputs();
    let on_b = |d: &TensorData| fp::<B, 4>(Tensor::<B, 4>::from_data(d.clone(), dev).cast(dtype));
    let on_r = |d: &TensorData| fp::<R, 4>(Tensor::<R, 4>::from_data(ft::<B, 4>(on_b(d)).into_data().convert::<f64>(), r));
    let p = FlashParams { causal: c.causal, q_offset: c.q_offset, scale: 1.0 / (c.head_dim as f32).sqrt() };
    let pads = TensorData::new(c.pad_lens.clone().unwrap_or_else(|| vec![0; c.batch]).into_iter().map(|x| x as i64).collect::<Vec<_>>(), [c.batch]);
    let pad_b = || Tensor::<B, 1, Int>::from_data(pads.clone(), dev).into_primitive();
    let pad_r = || Tensor::<R, 1, Int>::from_data(pads.clone(), r).into_primitive();
    let (o, l) = B::flash_attention_fwd(on_b(&qd), on_b(&kd), on_b(&vd), pad_b(), p);
    let (or, lr) = flash_fwd_reference::<R>(on_r(&qd), on_r(&kd), on_r(&vd), pad_r(), p);
    push("flash_fwd out", host(ft::<B, 4>(o.clone())), &host(ft::<R, 4>(or.clone())));
    // Padding queries have lse = f32::MAX in both; compare the finite ones.
    let finite = |x: Vec<f64>| x.into_iter().map(|y| if y > 1e30 { 0.0 } else { y }).collect::<Vec<_>>();
    push("flash_fwd lse", finite(host(ft::<B, 3>(l.clone()))), &finite(host(ft::<R, 3>(lr.clone()))));
    let (dqr, dkr, dvr) = flash_bwd_reference::<R>(on_r(&qd), on_r(&kd), on_r(&vd), or, lr, on_r(&dod), pad_r(), p);
    let want = [host(ft::<R, 4>(dqr)), host(ft::<R, 4>(dkr)), host(ft::<R, 4>(dvr))];
    let mut push_bwd = |label: &str, (dq, dk, dv): (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>)| {
        for ((name, got), w) in [("dq", dq), ("dk", dk), ("dv", dv)].into_iter().zip(&want) {
            push(&format!("flash_bwd {name} {label}"), host(ft::<B, 4>(got)), w);
        }
    };
    push_bwd("(backend's choice)", B::flash_attention_bwd(on_b(&qd), on_b(&kd), on_b(&vd), o.clone(), l.clone(), on_b(&dod), pad_b(), p));
    push_bwd("plain ops on device", flash_bwd_reference::<B>(on_b(&qd), on_b(&kd), on_b(&vd), o, l, on_b(&dod), pad_b(), p));
    let dl = logprobs_bwd_reference::<B>(fp(x), t.into_primitive(), lse, fp(gt));
    push("logprobs_bwd plain ops on device", host(ft::<B, 2>(dl)), &want_dl);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the CPU (the reference implementations in f32) every stage agrees with the f64 reference,
    /// and each stage is reported once, in order, as it finishes.
    #[test]
    fn stages_agree_on_cpu_and_report_each() {
        let case = AttentionCase {
            batch: 2,
            heads: 4,
            kv_heads: 2,
            q_len: 9,
            k_len: 9,
            head_dim: 8,
            causal: true,
            q_offset: 0,
            pad_lens: Some(vec![0, 2]),
            key_growth: 0.0,
            seed: 3,
        };
        let mut seen = Vec::new();
        let all = stages::<NdArray<f32>>(&case, 5, 37, FloatDType::F32, &Default::default(), &mut |s| seen.push(s.name.clone()));
        assert_eq!(seen, all.iter().map(|s| s.name.clone()).collect::<Vec<_>>());
        assert_eq!(all.len(), 12);
        for s in &all {
            assert!(s.rel_err < 1e-5 && s.mismatched == 0, "{}: {:e}, {:?}", s.name, s.rel_err, s.first);
        }
    }

    /// A stage lists the elements that differ by more than 1% of the reference's largest magnitude.
    #[test]
    fn stage_lists_mismatches() {
        let s = stage("x", &[1.0, 2.0, 3.5, 0.0], &[1.0, 2.001, 3.0, 0.0]);
        assert_eq!(s.mismatched, 1);
        assert_eq!(s.first, vec![(2, 3.5, 3.0)]);
        assert!((s.rel_err - (0.5f64.powi(2) + 0.001f64.powi(2)).sqrt() / (1.0f64 + 2.001 * 2.001 + 9.0).sqrt()).abs() < 1e-12);
    }
}
