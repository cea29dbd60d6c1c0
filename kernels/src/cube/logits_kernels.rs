//! CubeCL kernels over `[N, V]` logits: row log-sum-exp with the target log-prob (and the PPO
//! per-token terms), and the backward `dlogits = g·(onehot − softmax)`.
//!
//! The forward runs one cube per row; each unit walks the row in vectors with stride `CUBE_DIM_X`
//! keeping an online (max, Σexp) pair (Milakov & Gimelshein 2018), merged by a shared-memory tree. No plane
//! operations: lavapipe has 8-wide planes and cubecl does not advertise plane ops there. Math is
//! f32 whatever the logits' dtype (`#[define(F, I)]` picks F and I at run time).
//!
//! These kernels move the op's bytes (N·V logits read, N·V dlogits written) and must not be bound
//! by instructions: they are launched unchecked (each guards its own indices; a target outside
//! `0..V` is taken as `V − 1` by the forward and the backward alike, as the checked reads used to
//! clamp it, so nothing is read out of range) and use CUDA's fast `exp` and `ln` (`__expf`, `__logf`:
//! a few ulp, against the f32 accuracy the op promises). CubeCL's checked reads cost a clamp and a
//! select per lane of every 16-byte load.

use cubecl::prelude::*;

/// Row log-sum-exp of row `row` of contiguous `[N, V]` logits in f32, reduced over the cube; every
/// unit gets the result. The row is read as `vecs` vectors of `vector_size()` lanes (16-byte loads
/// where the vocabulary allows), one online (max, Σexp) update per vector: the lanes' max, then one
/// exp per lane and one rescale.
#[cube]
fn row_lse<F: Float, N: Size>(
    logits: &Tensor<Vector<F, N>>,
    row: usize,
    vecs: usize,
    #[comptime] block: u32,
) -> f32 {
    let tid = UNIT_POS_X as usize;
    let step = CUBE_DIM_X as usize;
    let width = logits.vector_size();
    let base = row * vecs;
    // Lowest finite value rather than -inf: WGSL has no inf literal and (-inf) - (-inf) is NaN.
    let mut m = f32::min_value();
    let mut s = f32::new(0.0);
    let mut c = tid;
    while c < vecs {
        let x = Vector::<f32, N>::cast_from(logits[base + c]);
        let mut xm = x[0];
        #[unroll]
        for i in 1..width {
            xm = xm.max(x[i]);
        }
        let mn = m.max(xm);
        let e = Vector::exp(x - Vector::<f32, N>::new(mn));
        let mut es = e[0];
        #[unroll]
        for i in 1..width {
            es += e[i];
        }
        s = s * (m - mn).exp() + es;
        m = mn;
        c += step;
    }
    let mut sh_m = SharedMemory::<f32>::new(block as usize);
    let mut sh_s = SharedMemory::<f32>::new(block as usize);
    sh_m[tid] = m;
    sh_s[tid] = s;
    sync_cube();
    let mut half = step / 2;
    while half > 0 {
        if tid < half {
            let m1 = sh_m[tid];
            let m2 = sh_m[tid + half];
            let mm = m1.max(m2);
            sh_s[tid] = sh_s[tid] * (m1 - mm).exp() + sh_s[tid + half] * (m2 - mm).exp();
            sh_m[tid] = mm;
        }
        sync_cube();
        half /= 2;
    }
    sh_m[0] + sh_s[0].ln()
}

/// The logit of `row`'s target `t` in f32, `t` clamped to `v − 1` (see the module doc).
#[cube]
fn target_logit<F: Float>(logits_s: &Tensor<F>, row: usize, t: usize, v: usize) -> f32 {
    f32::cast_from(logits_s[row * logits_s.stride(0) + t.min(v - 1)])
}

/// `logp[n] = logits[n, t[n]] − lse[n]` and `lse[n]`, both f32.
#[cube(launch_unchecked, address_type = "dynamic", fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf)]
#[allow(clippy::too_many_arguments)]
pub fn logprobs_fwd_kernel<F: Float, I: Numeric, N: Size>(
    logits: &Tensor<Vector<F, N>>, // [N, V] contiguous, V = vecs · N
    logits_s: &Tensor<F>,          // the same buffer, element by element (the target's logit)
    targets: &Tensor<I>,           // [N]
    logp: &mut Tensor<f32>,        // [N]
    lse: &mut Tensor<f32>,         // [N]
    rows: usize,
    vecs: usize,
    #[comptime] block: u32, // == CUBE_DIM_X, a power of two
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    // Cube-uniform exit: the whole cube is past the last row.
    if row >= rows {
        terminate!();
    }
    let l = row_lse::<F, N>(logits, row, vecs, block);
    if UNIT_POS_X == 0 {
        let t = u32::cast_from(targets[row * targets.stride(0)]) as usize;
        logp[row] = target_logit::<F>(logits_s, row, t, vecs * logits.vector_size()) - l;
        lse[row] = l;
    }
}

/// The PPO per-token terms of `crate::ppo::token_loss` and their derivative
/// `crate::ppo::token_loss_grad`, branch for branch, for one token.
#[cube]
#[allow(clippy::too_many_arguments)]
fn ppo_terms(
    lp: f32,
    old: f32,
    rf: f32,
    adv: f32,
    clip_low: f32,
    clip_high: f32,
    dual_c: f32,
    kl_coef: f32,
    loss_out: &mut Tensor<f32>,
    coef_out: &mut Tensor<f32>,
    row: usize,
    #[comptime] dual: bool,
    #[comptime] kl_kind: u32,
) {
    let lim = f32::new(20.0);
    // ratio = exp(clamp(lp - old, ±20)); it passes gradient only inside the clamp.
    let lr = lp - old;
    let r = lr.clamp(-lim, lim).exp();
    let mut dr = f32::new(0.0);
    if lr >= -lim && lr <= lim {
        dr = r;
    }
    // Clipped surrogate: max(-A r, -A clip(r)); the clipped side is active when strictly larger.
    let unclipped = -adv * r;
    let clipped = -adv * r.clamp(f32::new(1.0) - clip_low, f32::new(1.0) + clip_high);
    let mut loss = unclipped;
    let mut grad = -adv * dr;
    if clipped > unclipped {
        loss = clipped;
        if r < f32::new(1.0) - clip_low || r > f32::new(1.0) + clip_high {
            grad = f32::new(0.0);
        }
    }
    // Dual clip: negative advantages are capped at -A c.
    if dual {
        let bound = -adv * dual_c;
        if adv < f32::new(0.0) && bound < loss {
            loss = bound;
            grad = f32::new(0.0);
        }
    }
    if kl_kind == 1 {
        loss += kl_coef * (lp - rf);
        grad += kl_coef;
    }
    if kl_kind == 2 {
        let d = lp - rf;
        loss += kl_coef * f32::new(0.5) * d * d;
        grad += kl_coef * d;
    }
    if kl_kind == 3 {
        let x = rf - lp;
        let xc = x.clamp(-lim, lim);
        let e = xc.exp();
        let k3 = e - xc - f32::new(1.0);
        let ten = f32::new(10.0);
        loss += kl_coef * k3.clamp(-ten, ten);
        if x >= -lim && x <= lim && k3 <= ten {
            grad += kl_coef * (f32::new(1.0) - e);
        }
    }
    loss_out[row] = loss;
    coef_out[row] = grad;
}

/// PPO forward: per row the log-sum-exp, the target log-prob, the token loss and its derivative
/// with respect to the log-prob. `kl_kind`: 0 none, 1 k1, 2 k2, 3 k3.
#[cube(launch_unchecked, address_type = "dynamic", fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf)]
#[allow(clippy::too_many_arguments)]
pub fn ppo_fwd_kernel<F: Float, I: Numeric, N: Size>(
    logits: &Tensor<Vector<F, N>>, // [N, V] contiguous, V = vecs · N
    logits_s: &Tensor<F>,          // the same buffer, element by element
    targets: &Tensor<I>,
    old_logp: &Tensor<f32>,
    ref_logp: &Tensor<f32>,
    advantages: &Tensor<f32>,
    loss: &mut Tensor<f32>,
    coef: &mut Tensor<f32>,
    logp: &mut Tensor<f32>,
    lse: &mut Tensor<f32>,
    clip_low: f32,
    clip_high: f32,
    dual_c: f32,
    kl_coef: f32,
    rows: usize,
    vecs: usize,
    #[comptime] dual: bool,
    #[comptime] kl_kind: u32,
    #[comptime] block: u32,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let l = row_lse::<F, N>(logits, row, vecs, block);
    if UNIT_POS_X == 0 {
        let t = u32::cast_from(targets[row * targets.stride(0)]) as usize;
        let lp = target_logit::<F>(logits_s, row, t, vecs * logits.vector_size()) - l;
        ppo_terms(
            lp,
            old_logp[row * old_logp.stride(0)],
            ref_logp[row * ref_logp.stride(0)],
            advantages[row * advantages.stride(0)],
            clip_low,
            clip_high,
            dual_c,
            kl_coef,
            loss,
            coef,
            row,
            dual,
            kl_kind,
        );
        logp[row] = lp;
        lse[row] = l;
    }
}

/// Backward, elementwise and vectorised: `out = −g[row]·exp(x − lse[row])`.
#[cube(launch_unchecked, address_type = "dynamic", fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf)]
pub fn softmax_grad_kernel<F: Float, N: Size>(
    logits: &Tensor<Vector<F, N>>, // [N, V] contiguous, V % N == 0
    lse: &Tensor<f32>,             // [N]
    grad: &Tensor<f32>,            // [N]
    out: &mut Tensor<Vector<F, N>>, // [N, V] contiguous
    vecs_per_row: usize,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let row = pos / vecs_per_row;
    // The sign goes on the scalar: CubeCL's CUDA target has no unary minus on vectors
    // (`-float_4` fails NVRTC), so a negated vector would not compile there.
    let g = Vector::<f32, N>::new(-grad[row]);
    let l = Vector::<f32, N>::new(lse[row]);
    let x = Vector::<f32, N>::cast_from(logits[pos]);
    out[pos] = Vector::<F, N>::cast_from(g * Vector::exp(x - l));
}

/// Backward, one unit per row: `out[row, t] = g·(1 − softmax_t)`, computed in f32 rather than
/// added to the low-precision value the first kernel wrote (a target outside `0..V` as `V − 1`).
#[cube(launch_unchecked, address_type = "dynamic", fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf)]
pub fn target_grad_kernel<F: Float, I: Numeric>(
    logits: &Tensor<F>,  // [N, V] contiguous
    targets: &Tensor<I>, // [N]
    lse: &Tensor<f32>,
    grad: &Tensor<f32>,
    out: &mut Tensor<F>, // [N, V] contiguous
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = ABSOLUTE_POS;
    if row >= grad.len() {
        terminate!();
    }
    let v = out.shape(1);
    let t = (u32::cast_from(targets[row]) as usize).min(v - 1);
    let i = row * v + t;
    let p = (f32::cast_from(logits[i]) - lse[row]).exp();
    out[i] = F::cast_from(grad[row] * (f32::new(1.0) - p));
}
