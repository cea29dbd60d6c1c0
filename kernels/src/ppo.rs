//! PPO clipped surrogate plus KL penalty, computed from logits: the formulas and the public op.
//!
//! Every formula is one small pure function over `[N]` tensors (N tokens, flattened `[batch, len]`)
//! so it reads like the papers: the clipped surrogate of PPO (Schulman et al. 2017, arXiv
//! 1707.06347, eq. 7), the dual clip for negative advantages (Ye et al. 2020, arXiv 1912.09729,
//! as verl's `core_algos.compute_policy_loss`), and the k1/k2/k3 KL estimators from Schulman's
//! note "Approximating KL divergence" (2020; k3 is verl's `low_var_kl`). [`ppo_loss_reference`]
//! chains them with burn's autodiff and is the specification; [`ppo_loss`] runs the fused op of
//! [`crate::KernelBackend`] (one pass over the logits forward, one write of dlogits backward) and
//! must match it.
//!
//! Letters: N tokens, V vocabulary.

use crate::KernelBackend;
use crate::ops::{ft, fp};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Int, Tensor};

/// Bound on `logp − old_logp` before the exponential (verl), so a stale token cannot overflow.
pub const LOG_RATIO_CLAMP: f32 = 20.0;
/// Bound on the k3 estimate (verl's `low_var_kl` clamps to ±10).
pub const K3_CLAMP: f32 = 10.0;

/// Which estimator of KL(π‖π_ref) is added to the loss, per token (Schulman 2020).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlEstimator {
    /// `k1 = logp − ref`: unbiased, high variance.
    K1,
    /// `k2 = ½ (logp − ref)²`: biased, low variance.
    K2,
    /// `k3 = exp(ref − logp) − (ref − logp) − 1`, clamped to ±10: unbiased, low variance, ≥ 0.
    K3,
}

/// KL penalty: estimator and coefficient β.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlPenalty {
    /// The per-token estimator.
    pub estimator: KlEstimator,
    /// β, the weight of the KL term in the loss.
    pub coef: f32,
}

/// How per-token losses become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Σ mask·loss / Σ mask over all tokens.
    TokenMean,
    /// Mean over sequences of each sequence's token mean; the N tokens are `N / seq_len`
    /// sequences of `seq_len` tokens. A sequence with no unmasked token contributes 0.
    SeqMeanTokenMean {
        /// Tokens per sequence.
        seq_len: usize,
    },
}

/// The per-token part of the PPO loss: clipping and KL (no aggregation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PpoTokenParams {
    /// ε_low: the ratio is clipped below at `1 − clip_low`.
    pub clip_low: f32,
    /// ε_high: the ratio is clipped above at `1 + clip_high`.
    pub clip_high: f32,
    /// Dual-clip constant `c > 1` bounding the loss of negative-advantage tokens by `−A·c`.
    pub dual_clip: Option<f32>,
    /// KL penalty against the reference policy, if any.
    pub kl: Option<KlPenalty>,
}

/// PPO loss configuration; [`Default`] is ε = 0.2/0.2, no dual clip, k3 with β = 0.001, token-mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PpoConfig {
    /// Clipping and KL terms.
    pub token: PpoTokenParams,
    /// Reduction over tokens.
    pub aggregation: Aggregation,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            token: PpoTokenParams {
                clip_low: 0.2,
                clip_high: 0.2,
                dual_clip: None,
                kl: Some(KlPenalty { estimator: KlEstimator::K3, coef: 0.001 }),
            },
            aggregation: Aggregation::TokenMean,
        }
    }
}

/// Per-token inputs besides the logits, all `[N]`.
#[derive(Debug, Clone)]
pub struct PpoBatch<B: Backend> {
    /// Target token ids (the sampled actions); must lie in `0..V`, masked rows included.
    pub targets: Tensor<B, 1, Int>,
    /// Log-probs of the targets under the policy that sampled them.
    pub old_logp: Tensor<B, 1>,
    /// Log-probs under the reference policy (read only when a KL penalty is configured).
    pub ref_logp: Tensor<B, 1>,
    /// Advantages, any sign.
    pub advantages: Tensor<B, 1>,
    /// 1 for tokens that count, 0 for prompt and padding.
    pub mask: Tensor<B, 1>,
}

/// Training diagnostics, each a masked token mean (verl's metric names).
#[derive(Debug, Clone)]
pub struct PpoMetrics {
    /// `actor/pg_clipfrac`: share of tokens whose clipped term was the active one.
    pub clip_frac: f64,
    /// `actor/ppo_kl`: mean of `old − logp`, the approximate KL to the sampling policy.
    pub approx_kl: f64,
    /// `actor/ratio_mean`: mean of the importance ratio.
    pub ratio_mean: f64,
}

impl PpoMetrics {
    /// The metrics with their namespaced keys.
    pub fn pairs(&self) -> [(&'static str, f64); 3] {
        [("actor/pg_clipfrac", self.clip_frac), ("actor/ppo_kl", self.approx_kl), ("actor/ratio_mean", self.ratio_mean)]
    }
}

/// Importance ratio `r = exp(clamp(logp − old, ±20))` (PPO eq. 6, with verl's overflow guard).
pub fn ratio<B: Backend>(logp: Tensor<B, 1>, old_logp: Tensor<B, 1>) -> Tensor<B, 1> {
    (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
}

/// Clipped surrogate loss `max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high))` (PPO eq. 7, negated to a loss),
/// and whether the clipped term is the active one (strictly larger: the clip fraction counts these).
pub fn clipped_surrogate<B: Backend>(
    ratio: Tensor<B, 1>,
    adv: Tensor<B, 1>,
    clip_low: f32,
    clip_high: f32,
) -> (Tensor<B, 1>, Tensor<B, 1, burn::tensor::Bool>) {
    let unclipped = adv.clone().neg() * ratio.clone();
    let clipped = adv.neg() * ratio.clamp(1.0 - clip_low, 1.0 + clip_high);
    let is_clipped = clipped.clone().greater(unclipped.clone());
    (unclipped.mask_where(is_clipped.clone(), clipped), is_clipped)
}

/// Dual clip (Ye et al. 2020, eq. 5; verl): for `A < 0` the loss is at most `−A·c`, so a token whose
/// ratio exploded cannot dominate the batch. `c > 1`.
pub fn dual_clip<B: Backend>(pg_loss: Tensor<B, 1>, adv: Tensor<B, 1>, c: f32) -> Tensor<B, 1> {
    let bound = adv.clone().neg().mul_scalar(c);
    let capped = pg_loss.clone().mask_where(bound.clone().lower(pg_loss.clone()), bound);
    pg_loss.mask_where(adv.lower_elem(0.0), capped)
}

/// Per-token KL estimate of KL(π‖π_ref) from the sampled token's log-probs (Schulman 2020).
pub fn kl_estimate<B: Backend>(logp: Tensor<B, 1>, ref_logp: Tensor<B, 1>, estimator: KlEstimator) -> Tensor<B, 1> {
    match estimator {
        KlEstimator::K1 => logp - ref_logp,
        KlEstimator::K2 => (logp - ref_logp).powi_scalar(2).mul_scalar(0.5),
        KlEstimator::K3 => {
            let x = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
            (x.clone().exp() - x - 1.0).clamp(-K3_CLAMP, K3_CLAMP)
        }
    }
}

/// Per-token loss `pg + β·kl` from the target log-probs (autodiff flows through `logp`).
pub fn token_loss<B: Backend>(
    logp: Tensor<B, 1>,
    old_logp: Tensor<B, 1>,
    ref_logp: Tensor<B, 1>,
    adv: Tensor<B, 1>,
    p: &PpoTokenParams,
) -> Tensor<B, 1> {
    let r = ratio(logp.clone(), old_logp);
    let (mut loss, _) = clipped_surrogate(r, adv.clone(), p.clip_low, p.clip_high);
    if let Some(c) = p.dual_clip {
        loss = dual_clip(loss, adv, c);
    }
    if let Some(kl) = p.kl {
        loss = loss + kl_estimate(logp, ref_logp, kl.estimator).mul_scalar(kl.coef);
    }
    loss
}

/// `d token_loss / d logp`, in closed form: what the fused backward scales `onehot − softmax` by.
///
/// Each branch is the derivative of the branch [`token_loss`] takes: clamps pass the gradient only
/// inside their bounds, the active side of a max/min takes all of it.
pub fn token_loss_grad<B: Backend>(
    logp: Tensor<B, 1>,
    old_logp: Tensor<B, 1>,
    ref_logp: Tensor<B, 1>,
    adv: Tensor<B, 1>,
    p: &PpoTokenParams,
) -> Tensor<B, 1> {
    let lr = logp.clone() - old_logp;
    let r = lr.clone().clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp();
    let lr_inside = lr.clone().greater_equal_elem(-LOG_RATIO_CLAMP).bool_and(lr.lower_equal_elem(LOG_RATIO_CLAMP));
    let dr = r.zeros_like().mask_where(lr_inside, r.clone());
    let (pg, is_clipped) = clipped_surrogate(r.clone(), adv.clone(), p.clip_low, p.clip_high);
    let r_inside = r.clone().greater_equal_elem(1.0 - p.clip_low).bool_and(r.lower_equal_elem(1.0 + p.clip_high));
    let d_unclipped = adv.clone().neg() * dr;
    let d_clipped = d_unclipped.zeros_like().mask_where(r_inside, d_unclipped.clone());
    let mut grad = d_unclipped.mask_where(is_clipped, d_clipped);
    if let Some(c) = p.dual_clip {
        let bound = adv.clone().neg().mul_scalar(c);
        let capped = bound.lower(pg).bool_and(adv.lower_elem(0.0));
        grad = grad.clone().mask_fill(capped, 0.0);
    }
    if let Some(kl) = p.kl {
        let d = match kl.estimator {
            KlEstimator::K1 => logp.ones_like(),
            KlEstimator::K2 => logp - ref_logp,
            KlEstimator::K3 => {
                let x = ref_logp - logp;
                let xc = x.clone().clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
                let k3 = xc.clone().exp() - xc.clone() - 1.0;
                let live = x
                    .clone()
                    .greater_equal_elem(-LOG_RATIO_CLAMP)
                    .bool_and(x.lower_equal_elem(LOG_RATIO_CLAMP))
                    .bool_and(k3.lower_equal_elem(K3_CLAMP));
                let d = xc.exp().neg() + 1.0;
                d.zeros_like().mask_where(live, d)
            }
        };
        grad = grad + d.mul_scalar(kl.coef);
    }
    grad
}

/// The one reduction: masked token mean, or mean over sequences of masked token means.
///
/// # Panics
/// If `SeqMeanTokenMean { seq_len }` does not divide N.
pub fn aggregate<B: Backend>(values: Tensor<B, 1>, mask: Tensor<B, 1>, agg: Aggregation) -> Tensor<B, 1> {
    match agg {
        Aggregation::TokenMean => (values * mask.clone()).sum() / mask.sum().clamp_min(1.0),
        Aggregation::SeqMeanTokenMean { seq_len } => {
            let [n] = values.dims();
            assert!(seq_len > 0 && n % seq_len == 0, "aggregate: {n} tokens are not sequences of {seq_len}");
            let m = mask.reshape([n / seq_len, seq_len]);
            let per_seq = (values.reshape([n / seq_len, seq_len]) * m.clone()).sum_dim(1) / m.sum_dim(1).clamp_min(1.0);
            per_seq.mean().reshape([1])
        }
    }
}

/// Metrics from the target log-probs (detached; one host read).
pub fn metrics<B: Backend>(logp: Tensor<B, 1>, batch: &PpoBatch<B>, p: &PpoTokenParams) -> PpoMetrics {
    let logp = logp.detach();
    let dt = ref_dtype(logp.dtype());
    let logp = logp.cast(dt);
    let old = batch.old_logp.clone().detach().cast(dt);
    let adv = batch.advantages.clone().detach().cast(dt);
    let mask = batch.mask.clone().detach().cast(dt);
    let r = ratio(logp.clone(), old.clone());
    let (_, is_clipped) = clipped_surrogate(r.clone(), adv, p.clip_low, p.clip_high);
    let mean = |x: Tensor<B, 1>| aggregate(x, mask.clone(), Aggregation::TokenMean);
    let all = Tensor::cat(vec![mean(is_clipped.float()), mean(old - logp), mean(r)], 0);
    let v: Vec<f64> = all.into_data().convert::<f64>().to_vec().expect("f64 metrics");
    PpoMetrics { clip_frac: v[0], approx_kl: v[1], ratio_mean: v[2] }
}

/// The dtype the references compute in: f64 for f64 inputs (the checks' ground truth), else f32.
fn ref_dtype(d: DType) -> FloatDType {
    if d == DType::F64 { FloatDType::F64 } else { FloatDType::F32 }
}

/// Log-probs of the targets by plain ops: `log_softmax(logits)[n, t[n]]`, in f32 (f64 for f64 logits).
pub fn logprobs_reference<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let dt = ref_dtype(logits.dtype());
    log_softmax(logits.cast(dt), 1).gather(1, targets.reshape([n, 1])).reshape([n])
}

/// PPO loss by plain burn ops and burn's autodiff: the specification.
///
/// # Shapes
/// `logits`: `[N, V]`; every field of `batch`: `[N]`. Returns the loss `[1]` (f32) and metrics.
pub fn ppo_loss_reference<B: Backend>(logits: Tensor<B, 2>, batch: &PpoBatch<B>, cfg: &PpoConfig) -> (Tensor<B, 1>, PpoMetrics) {
    let dt = ref_dtype(logits.dtype());
    let f = |t: &Tensor<B, 1>| t.clone().cast(dt);
    let logp = logprobs_reference(logits, batch.targets.clone());
    let loss = token_loss(logp.clone(), f(&batch.old_logp), f(&batch.ref_logp), f(&batch.advantages), &cfg.token);
    let metrics = metrics(logp, batch, &cfg.token);
    (aggregate(loss, f(&batch.mask), cfg.aggregation), metrics)
}

/// PPO loss through the fused op: one pass over `logits` forward, one write of `dlogits` backward.
///
/// # Shapes
/// As [`ppo_loss_reference`].
///
/// # Panics
/// If the `[N]` inputs do not match the logits' N (a caller bug).
pub fn ppo_loss<B: KernelBackend>(logits: Tensor<B, 2>, batch: &PpoBatch<B>, cfg: &PpoConfig) -> (Tensor<B, 1>, PpoMetrics) {
    let [n, _] = logits.dims();
    for (name, d) in [
        ("targets", batch.targets.dims()),
        ("old_logp", batch.old_logp.dims()),
        ("ref_logp", batch.ref_logp.dims()),
        ("advantages", batch.advantages.dims()),
        ("mask", batch.mask.dims()),
    ] {
        assert_eq!(d, [n], "ppo_loss: {name} has shape {d:?}, logits have {n} rows");
    }
    let f = |t: &Tensor<B, 1>| fp(t.clone().cast(FloatDType::F32));
    let [loss, _coef, logp, _lse] = B::ppo_token_fwd(
        fp(logits),
        batch.targets.clone().into_primitive(),
        f(&batch.old_logp),
        f(&batch.ref_logp),
        f(&batch.advantages),
        cfg.token,
    );
    let metrics = metrics(ft(logp), batch, &cfg.token);
    (aggregate(ft(loss), batch.mask.clone().cast(FloatDType::F32), cfg.aggregation), metrics)
}

/// Log-probs of the targets through the fused op, without gradient (old and reference log-probs).
///
/// # Shapes
/// `logits`: `[N, V]`, `targets`: `[N]`; returns `[N]` in f32.
pub fn logprobs<B: KernelBackend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    assert_eq!(targets.dims(), [n], "logprobs: targets vs {n} logit rows");
    let (logp, _lse) = B::logprobs_fwd(fp(logits.detach()), targets.into_primitive());
    ft::<B, 1>(logp).detach()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{max_abs_diff, uniform};
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::TensorData;

    type B = NdArray<f32>;
    type A = Autodiff<NdArray<f32>>;

    fn t1<Bk: Backend>(v: &[f32]) -> Tensor<Bk, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    fn v1<Bk: Backend>(t: Tensor<Bk, 1>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    fn params(dual: Option<f32>, kl: Option<KlPenalty>) -> PpoTokenParams {
        PpoTokenParams { clip_low: 0.2, clip_high: 0.2, dual_clip: dual, kl }
    }

    /// Each clip side with both advantage signs, worked by hand (ε = 0.2): loss and d loss / d logp.
    #[test]
    fn clip_sides_by_hand() {
        // (ratio, advantage) -> (loss, grad)
        let cases = [
            (1.5, 1.0, -1.2, 0.0),  // A > 0, above 1+ε: clipped, no gradient
            (0.5, 1.0, -0.5, -0.5), // A > 0, below 1-ε: unclipped (pessimistic) side
            (1.1, 1.0, -1.1, -1.1), // inside the trust region
            (1.5, -1.0, 1.5, 1.5),  // A < 0, above 1+ε: unclipped side
            (0.5, -1.0, 0.8, 0.0),  // A < 0, below 1-ε: clipped
        ];
        let lp: Vec<f32> = cases.iter().map(|c| (c.0 as f32).ln()).collect();
        let zeros = vec![0.0; cases.len()];
        let adv: Vec<f32> = cases.iter().map(|c| c.1).collect();
        let p = params(None, None);
        let loss = v1(token_loss::<B>(t1(&lp), t1(&zeros), t1(&zeros), t1(&adv), &p));
        let grad = v1(token_loss_grad::<B>(t1(&lp), t1(&zeros), t1(&zeros), t1(&adv), &p));
        for (i, c) in cases.iter().enumerate() {
            assert!((loss[i] - c.2).abs() < 1e-6 && (grad[i] - c.3).abs() < 1e-6, "case {i}: {} {}", loss[i], grad[i]);
        }
    }

    /// Dual clip with c = 3: a negative-advantage token with ratio 4 is capped at −A·c = 3.
    #[test]
    fn dual_clip_by_hand() {
        let lp: Vec<f32> = [4.0f32, 2.0, 4.0].iter().map(|r| r.ln()).collect();
        let zeros = [0.0; 3];
        let adv = [-1.0, -1.0, 1.0];
        let p = params(Some(3.0), None);
        let loss = v1(token_loss::<B>(t1(&lp), t1(&zeros), t1(&zeros), t1(&adv), &p));
        let grad = v1(token_loss_grad::<B>(t1(&lp), t1(&zeros), t1(&zeros), t1(&adv), &p));
        // capped; below the cap (plain PPO: loss = ratio); positive advantage untouched (clipped at 1.2).
        for (got, want) in loss.iter().zip([3.0, 2.0, -1.2]).chain(grad.iter().zip([0.0, 2.0, 0.0])) {
            assert!((got - want).abs() < 1e-6, "{loss:?} {grad:?}");
        }
    }

    /// k1, k2, k3 at logp = −1, ref = −2, plus k3's ±10 clamp (β = 1, advantages 0).
    #[test]
    fn kl_estimators_by_hand() {
        let e1 = (-1.0f32).exp();
        for (est, lp, rf, want, dwant) in [
            (KlEstimator::K1, -1.0, -2.0, 1.0, 1.0),
            (KlEstimator::K2, -1.0, -2.0, 0.5, 1.0),
            (KlEstimator::K3, -1.0, -2.0, e1, 1.0 - e1),
            (KlEstimator::K3, -20.0, -5.0, K3_CLAMP, 0.0),
        ] {
            let p = params(None, Some(KlPenalty { estimator: est, coef: 1.0 }));
            let (l, o, r, a) = (t1::<B>(&[lp]), t1::<B>(&[lp]), t1::<B>(&[rf]), t1::<B>(&[0.0]));
            let loss = v1(token_loss(l.clone(), o.clone(), r.clone(), a.clone(), &p))[0];
            let grad = v1(token_loss_grad(l, o, r, a, &p))[0];
            assert!((loss - want).abs() < 1e-5 && (grad - dwant).abs() < 1e-5, "{est:?}: {loss} {grad}");
        }
    }

    /// Masked tokens do not count, in both aggregation modes.
    #[test]
    fn aggregation_by_hand() {
        let x = t1::<B>(&[1.0, 2.0, 3.0, 4.0]);
        let m = t1::<B>(&[1.0, 0.0, 1.0, 1.0]);
        assert_eq!(v1(aggregate(x.clone(), m.clone(), Aggregation::TokenMean)), [8.0 / 3.0]);
        // sequences [1, 2] -> 1 and [3, 4] -> 3.5
        assert_eq!(v1(aggregate(x, m, Aggregation::SeqMeanTokenMean { seq_len: 2 })), [2.25]);
    }

    /// The closed-form derivative equals burn's autodiff of the loss, for every variant.
    #[test]
    fn closed_form_grad_matches_autodiff() {
        let n = 64;
        let lp: Vec<f32> = uniform(n, 1).iter().map(|x| x * 0.7 - 1.0).collect();
        let old = uniform(n, 2).iter().map(|x| x * 0.3 - 1.0).collect::<Vec<_>>();
        let rf = uniform(n, 3).iter().map(|x| x * 0.5 - 1.0).collect::<Vec<_>>();
        let adv = uniform(n, 4);
        for p in all_params() {
            let lpa = t1::<A>(&lp).require_grad();
            let loss = token_loss(lpa.clone(), t1(&old), t1(&rf), t1(&adv), &p);
            let g = lpa.grad(&loss.sum().backward()).unwrap();
            let want = v1(token_loss_grad::<B>(t1(&lp), t1(&old), t1(&rf), t1(&adv), &p));
            assert!(max_abs_diff(&v1(g), &want) < 1e-5, "{p:?}");
        }
    }

    fn all_params() -> Vec<PpoTokenParams> {
        let mut v = vec![params(None, None), params(Some(3.0), None)];
        for estimator in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
            v.push(params(Some(2.0), Some(KlPenalty { estimator, coef: 0.1 })));
        }
        v
    }

    /// The fused path (CPU default bodies under `Autodiff`) against the spec, value and dlogits,
    /// and the loss against a plain f64 loop.
    #[test]
    fn fused_path_matches_reference_and_loop() {
        let (n, v) = (24, 37);
        let logits_data = crate::check::random_logits(n, v, 8);
        let batch = crate::check::random_ppo_batch::<A>(&logits_data, 7, &Default::default());
        for token in all_params() {
            for aggregation in [Aggregation::TokenMean, Aggregation::SeqMeanTokenMean { seq_len: 6 }] {
                let cfg = PpoConfig { token, aggregation };
                let x = Tensor::<A, 2>::from_data(logits_data.clone(), &Default::default()).require_grad();
                let (loss, m) = ppo_loss(x.clone(), &batch, &cfg);
                let g = x.grad(&loss.backward()).unwrap();
                let x = Tensor::<A, 2>::from_data(logits_data.clone(), &Default::default()).require_grad();
                let (rloss, rm) = ppo_loss_reference(x.clone(), &batch, &cfg);
                let rg = x.grad(&rloss.backward()).unwrap();
                let (l, rl) = (v1(loss.inner())[0], v1(rloss.inner())[0]);
                let want = crate::check::ppo_loss_loop(&logits_data, &batch, &cfg);
                assert!((l - rl).abs() < 1e-6 && (l as f64 - want).abs() < 1e-5, "{cfg:?}: {l} {rl} {want}");
                let gd = max_abs_diff(&g.into_data().to_vec().unwrap(), &rg.into_data().to_vec().unwrap());
                assert!(gd < 1e-6, "{cfg:?}: dlogits differ by {gd}");
                assert!(m.clip_frac > 0.0 && m.clip_frac < 1.0, "inputs should hit the clip: {m:?}");
                assert!((m.approx_kl - rm.approx_kl).abs() < 1e-6);
            }
        }
    }

    /// Masked rows get exactly zero gradient, and the no-grad `logprobs` matches log_softmax.
    #[test]
    fn masked_rows_have_zero_grad_and_logprobs_match() {
        let (n, v) = (6, 5);
        let data = crate::check::random_logits(n, v, 4);
        let batch = crate::check::random_ppo_batch::<A>(&data, 3, &Default::default());
        let x = Tensor::<A, 2>::from_data(data.clone(), &Default::default()).require_grad();
        let (loss, _) = ppo_loss(x.clone(), &batch, &PpoConfig::default());
        let g: Vec<f32> = x.grad(&loss.backward()).unwrap().into_data().to_vec().unwrap();
        let mask = v1(batch.mask.clone().inner());
        assert!(mask.contains(&0.0));
        for (r, &m) in mask.iter().enumerate() {
            let row_zero = g[r * v..(r + 1) * v].iter().all(|&x| x == 0.0);
            assert_eq!(row_zero, m == 0.0, "row {r}");
        }
        let x = Tensor::<B, 2>::from_data(data, &Default::default());
        let t = batch.targets.clone().inner();
        let d = max_abs_diff(&v1(logprobs(x.clone(), t.clone())), &v1(logprobs_reference(x, t)));
        assert!(d < 1e-6);
    }
}
