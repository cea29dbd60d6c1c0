//! The CubeCL kernels on WGPU (Mesa lavapipe in CI) against the f64 CPU references. Shader
//! compilation on lavapipe costs seconds, so there are few tests, each covering many cases with a
//! handful of compilations. They skip (with a message) only when no wgpu adapter exists at all.

use crate::check::{AttentionCase, attention_rel_errors, max_abs_diff, ppo_rel_errors, random_logits, random_ppo_batch};
use crate::ppo::{Aggregation, KlEstimator, KlPenalty, PpoConfig, PpoTokenParams, logprobs};
use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::backend::{Autodiff, NdArray, Wgpu};
use burn::tensor::{FloatDType, Int, Tensor, TensorData};

/// The wgpu device for kernel tests: a GPU adapter where one exists, else lavapipe (`Cpu`); `None`,
/// with a message, when there is no adapter at all.
pub(crate) fn device() -> Option<WgpuDevice> {
    if !crate::wgpu_adapter_present() {
        eprintln!("skipping: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        return None;
    }
    Some(if crate::gpu_adapter_present() { WgpuDevice::DefaultDevice } else { WgpuDevice::Cpu })
}

#[test]
fn ppo_and_logprobs_kernels_match_reference() {
    let Some(dev) = device() else { return };
    // Odd V (vector width 1) larger than the 256-unit row block, and V % 4 == 0 (width 4).
    for (n, v) in [(30, 1001), (12, 64)] {
        for token in [
            PpoTokenParams {
                clip_low: 0.2,
                clip_high: 0.28,
                dual_clip: Some(3.0),
                kl: Some(KlPenalty { estimator: KlEstimator::K3, coef: 0.1 }),
            },
            PpoTokenParams { clip_low: 0.2, clip_high: 0.2, dual_clip: None, kl: Some(KlPenalty { estimator: KlEstimator::K2, coef: 0.5 }) },
        ] {
            let cfg = PpoConfig { token, aggregation: Aggregation::SeqMeanTokenMean { seq_len: 6 } };
            let (l, g) = ppo_rel_errors::<Autodiff<Wgpu>>(n, v, &cfg, FloatDType::F32, 5, &dev);
            eprintln!("ppo fusion n={n} v={v} f32: loss {l:e} grad {g:e}");
            assert!(l < 1e-4 && g < 1e-4, "fusion f32 n={n} v={v}: loss {l:e}, grad {g:e}");
            type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
            let (l, g) = ppo_rel_errors::<Autodiff<Cube>>(n, v, &cfg, FloatDType::F32, 5, &dev);
            eprintln!("ppo cube n={n} v={v} f32: loss {l:e} grad {g:e}");
            assert!(l < 1e-4 && g < 1e-4, "cube f32 n={n} v={v}: loss {l:e}, grad {g:e}");
            let (l, g) = ppo_rel_errors::<Autodiff<Wgpu>>(n, v, &cfg, FloatDType::F16, 5, &dev);
            eprintln!("ppo fusion n={n} v={v} f16: loss {l:e} grad {g:e}");
            assert!(l < 1e-2 && g < 1e-2, "fusion f16 n={n} v={v}: loss {l:e}, grad {g:e}");
        }
        // No-grad log-probs through a transposed-twice (strided) view.
        let data = random_logits(n, v, 5);
        let xt = Tensor::<Wgpu, 2>::from_data(data.clone(), &dev).transpose().transpose();
        let t = Tensor::<Wgpu, 1, Int>::from_data(random_ppo_batch::<NdArray>(&data, 2, &Default::default()).targets.into_data(), &dev);
        let got = logprobs(xt.clone(), t.clone()).into_data().to_vec::<f32>().unwrap();
        let want = crate::ppo::logprobs_reference(xt.clone(), t).into_data().to_vec::<f32>().unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
        // Targets outside 0..V (the kernels run unchecked) read nothing out of range: they are
        // taken as V − 1, forward and backward alike.
        let bad = Tensor::<Wgpu, 1, Int>::from_data(TensorData::new(vec![v as i32 + 7; n], [n]), &dev);
        let last = Tensor::<Wgpu, 1, Int>::from_data(TensorData::new(vec![v as i32 - 1; n], [n]), &dev);
        let got = logprobs(xt.clone(), bad).into_data().to_vec::<f32>().unwrap();
        let want = logprobs(xt, last).into_data().to_vec::<f32>().unwrap();
        assert_eq!(got, want, "n={n} v={v}: out-of-range targets");
    }
}

/// Lengths off the tile grid, GQA ratios 1/3/7, causal and not, a KV-cache offset, and left padding
/// that leaves whole query rows without a visible key; forward and the three gradients.
#[test]
fn flash_attention_kernels_match_reference() {
    let Some(dev) = device() else { return };
    crate::attention_ops::set_backward_kernel(true);
    let case = |heads, kv_heads, q_len, k_len, head_dim, causal, q_offset, pad_lens: Option<Vec<usize>>| AttentionCase {
        batch: pad_lens.as_ref().map_or(1, Vec::len),
        heads,
        kv_heads,
        q_len,
        k_len,
        head_dim,
        causal,
        q_offset,
        pad_lens,
        seed: 9,
        key_growth: 0.0,
    };
    let cases = [
        (case(6, 2, 37, 37, 16, true, 0, Some(vec![0, 5])), FloatDType::F32, 1e-4),
        (case(7, 1, 5, 40, 8, true, 35, None), FloatDType::F32, 1e-4),
        (case(2, 2, 20, 33, 32, false, 0, Some(vec![3, 0])), FloatDType::F32, 1e-4),
        (case(6, 2, 37, 37, 16, true, 0, Some(vec![0, 5])), FloatDType::F16, 1e-2),
        // The tiny preset's shape. Its grouped dK/dV once went wrong here on lavapipe (dK rel err 14):
        // Mesa's loop limiter (see `cube::attention_kernels`); the backward now takes plain ops here.
        (case(4, 2, 200, 200, 64, true, 0, None), FloatDType::F32, 1e-4),
        // Long enough that rolled head-dim loops would pass the loop limit (unrolled at head dim 32).
        (case(1, 1, 700, 700, 32, false, 0, None), FloatDType::F32, 1e-4),
    ];
    for (c, dtype, tol) in cases {
        let e = attention_rel_errors::<Autodiff<Wgpu>>(&c, dtype, &dev);
        eprintln!("attention {c:?} {dtype:?}: out/dq/dk/dv rel err {e:?}");
        assert!(e.iter().all(|x| *x < tol), "{c:?} {dtype:?}: {e:?}");
    }
    // Without burn's fusion layer (how CUDA runs): one grouped, padded, causal case.
    type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
    let c = case(6, 2, 37, 37, 16, true, 0, Some(vec![0, 5]));
    let e = attention_rel_errors::<Autodiff<Cube>>(&c, FloatDType::F32, &dev);
    eprintln!("attention unfused {c:?}: out/dq/dk/dv rel err {e:?}");
    assert!(e.iter().all(|x| *x < 1e-4), "unfused {c:?}: {e:?}");
    // Past lavapipe's loop limit at head dim 64 (rolled loops): the backward kernels at 336 tokens and
    // also the forward at 600 would compute garbage there (dq relative error 51 at 336); the launcher
    // sees it coming and uses plain burn ops instead.
    for q_len in [336, 600] {
        let c = case(1, 1, q_len, q_len, 64, false, 0, None);
        let e = attention_rel_errors::<Autodiff<Wgpu>>(&c, FloatDType::F32, &dev);
        eprintln!("attention past the loop limit {c:?}: out/dq/dk/dv rel err {e:?}");
        assert!(e.iter().all(|x| *x < 1e-4), "past the loop limit {c:?}: {e:?}");
    }
    // The tensor-core kernels' logic with their tile products emulated (lavapipe has no cmma): the
    // forward's staging, masking, two-units-per-row softmax and lazy rescaling, and the dQ and
    // dK/dV kernels (GQA summed in the kernel). Keys growing tile after tile make rows raise their
    // maxima past the threshold again and again.
    use crate::cube::{ForwardKernel, attention_cmma, set_forward_kernel};
    use cubecl::Runtime;
    let max_shared = WgpuRuntime::client(&dev).properties().hardware.max_shared_memory_size;
    set_forward_kernel(ForwardKernel::CmmaEmulated);
    let rising = |c: AttentionCase| AttentionCase { key_growth: 12.0, ..c };
    let emulated = [
        (case(6, 2, 37, 37, 16, true, 0, Some(vec![0, 5])), FloatDType::F32, 1e-4),
        (case(7, 1, 5, 40, 16, true, 35, None), FloatDType::F32, 1e-4),
        (rising(case(3, 1, 200, 200, 16, true, 0, Some(vec![0, 70]))), FloatDType::F32, 1e-4),
        (rising(case(3, 3, 150, 150, 32, false, 0, Some(vec![9]))), FloatDType::F16, 1e-2),
    ];
    for (c, dtype, tol) in emulated {
        let elem = if dtype == FloatDType::F32 { 4 } else { 2 };
        let planes = attention_cmma::emulation_planes(c.head_dim, elem, max_shared);
        assert!(planes.is_some(), "{c:?} {dtype:?}: no plane count fits {max_shared} bytes of shared memory");
        let e = attention_rel_errors::<Autodiff<Wgpu>>(&c, dtype, &dev);
        eprintln!("attention, emulated cmma kernels (forward: {planes:?} planes) {c:?} {dtype:?}: out/dq/dk/dv rel err {e:?}");
        assert!(e.iter().all(|x| *x < tol), "emulated cmma {c:?} {dtype:?}: {e:?}");
    }
    // The register-tile kernels (manual MMA) with their products and quad reductions emulated: the
    // fragment layouts, P (dS, Pᵀ, dSᵀ) taken from accumulators as A fragments, the masking, the
    // forward's online softmax on registers and quad row sums, the dQ and dK/dV kernels (GQA summed
    // in the kernel).
    use crate::cube::attention_mma;
    set_forward_kernel(ForwardKernel::MmaEmulated);
    // All at head dim 16 (one shader per dtype): lavapipe compiles the emulated kernels slowly from
    // a cold shader cache (f32 forward and backward at head dim 16: 105 s; at head dim 32: over 6
    // minutes; the f16 backward at 32 and the f16 forward at 64: over 5 minutes). Head dims 32 (f32,
    // both passes) and 64 (f16, forward) passed when run by hand; see BENCHMARKS.md. Lavapipe's 32
    // KiB of shared memory holds the double-buffered backward kernels with 1 plane in f32 but 4 in
    // f16, so the f16 case runs the kernel backward too (99 s): the only multi-plane backward here.
    // Then two M tiles per plane (32 rows, the default on CUDA) in the forward and the dQ kernel
    // (`MLAGENT_MMA_DQ_ROWS=32`: each 64-key tile in two 32-key halves): rows past Tq in a 128-row
    // cube (5 queries), padding, rising keys (one more forward and one more dQ shader).
    // Then the fused backward (dQ by atomic adds from the dK/dV kernel): f32 with 2 planes (GQA 3
    // and 7, padding, a KV-cache offset; one shader) and f16 with 4, two of which only repeat
    // another's dQ product at head dim 16 (`dq_split`).
    // Last, the wide dK/dV kernel (FA2's warp layout, Pᵀ and dSᵀ through shared memory) in its fused
    // form (`MLAGENT_MMA_BWD=wide-fused`: it also adds dS K to dQ by atomic adds, A fragments from the
    // stored dSᵀ by transposed loads) on the f16 case above: f16 only (its f32 tiles pass lavapipe's
    // 32 KiB), 2 planes; at head dim 16 both planes of the key group compute all 16 columns and one
    // writes (`col_split`); three 64-query steps, the last partial. It adds each 16-query chunk's
    // dK/dV products in the same order as the split kernel, so emulated its dK and dV errors are
    // bit-identical to the split kernel's (dQ's sums run in another order). The unfused wide kernel
    // is the same code without the dQ block. (Causal cases with GQA 3 and padding passed too,
    // BENCHMARKS.md; each wide shader takes lavapipe minutes.)
    let emulated = [
        (case(6, 2, 37, 37, 16, true, 0, Some(vec![0, 5])), FloatDType::F32, 1e-4, 1, false),
        (case(7, 1, 5, 40, 16, true, 35, None), FloatDType::F32, 1e-4, 1, false),
        (rising(case(3, 1, 200, 200, 16, true, 0, Some(vec![0, 70]))), FloatDType::F32, 1e-4, 1, false),
        (rising(case(3, 3, 150, 150, 16, false, 0, Some(vec![9]))), FloatDType::F16, 1e-2, 1, false),
        (case(7, 1, 5, 40, 16, true, 35, None), FloatDType::F32, 1e-4, 2, false),
        (rising(case(3, 1, 200, 200, 16, true, 0, Some(vec![0, 70]))), FloatDType::F32, 1e-4, 2, false),
        (case(6, 2, 37, 37, 16, true, 0, Some(vec![0, 5])), FloatDType::F32, 1e-4, 1, true),
        (case(7, 1, 5, 40, 16, true, 35, None), FloatDType::F32, 1e-4, 1, true),
        (rising(case(3, 3, 150, 150, 16, false, 0, Some(vec![9]))), FloatDType::F16, 1e-2, 1, true),
    ];
    use crate::cube::BwdLayout;
    let emulated = emulated.map(|(c, dtype, tol, mtiles, fused)| (c, dtype, tol, mtiles, if fused { BwdLayout::Fused } else { BwdLayout::Split }));
    let wide = [(rising(case(3, 3, 150, 150, 16, false, 0, Some(vec![9]))), FloatDType::F16, 1e-2, 1, BwdLayout::WideFused)];
    let mut split_f16 = None;
    for (c, dtype, tol, mtiles, layout) in emulated.into_iter().chain(wide) {
        let fused = layout.fused_dq();
        crate::attention_ops::set_backward_kernel(true);
        crate::cube::set_mma_mtiles(mtiles);
        crate::cube::set_mma_dq_mtiles(mtiles);
        crate::cube::set_mma_bwd_layout(layout);
        let started = std::time::Instant::now();
        let elem = if dtype == FloatDType::F32 { 4 } else { 2 };
        let planes = attention_mma::emulation_planes(c.head_dim, elem, mtiles, max_shared);
        let bwd_planes = crate::cube::attention_mma_bwd::emulation_planes(c.head_dim, elem, max_shared, fused, mtiles);
        assert!(planes.is_some() && bwd_planes.is_some(), "{c:?} {dtype:?}: no plane count fits {max_shared} bytes of shared memory");
        let e = attention_rel_errors::<Autodiff<Wgpu>>(&c, dtype, &dev);
        assert_eq!(crate::cube::last_backward_layout(), Some(layout), "{c:?}: the backward that ran");
        assert_eq!(crate::cube::last_backward_dq_mtiles(), if fused { 0 } else { mtiles }, "{c:?}: the dQ kernel that ran");
        let bwd = format!("emulated mma kernels, {} layout", layout.name());
        let ran = crate::cube::last_forward_kernel();
        eprintln!("attention, emulated {ran:?} forward ({planes:?} planes), backward {bwd} ({bwd_planes:?}) {c:?} {dtype:?}: out/dq/dk/dv rel err {e:?} ({:.0?})", started.elapsed());
        assert_eq!(ran, Some(if mtiles == 1 { "mma-emulated" } else { "mma-emulated-m32" }), "{c:?}: the forward that ran");
        assert!(e.iter().all(|x| *x < tol), "emulated mma {c:?} {dtype:?} mtiles {mtiles}: {e:?}");
        match layout {
            BwdLayout::Split if dtype == FloatDType::F16 => split_f16 = Some((c.clone(), e)),
            BwdLayout::Wide | BwdLayout::WideFused => {
                let (sc, se) = split_f16.as_ref().expect("the split f16 case runs first");
                assert_eq!(sc, &c, "the wide case repeats the split f16 case");
                // out, dq, dk, dv: the same forward and dK/dV; dq from the dQ kernel unless fused.
                let same: &[usize] = if fused { &[0, 2, 3] } else { &[0, 1, 2, 3] };
                let pick = |x: &[f64; 4]| same.iter().map(|&i| x[i]).collect::<Vec<_>>();
                assert_eq!(pick(&e), pick(se), "{c:?}: the wide kernel's errors differ from the split kernels'");
            }
            _ => {}
        }
    }
    crate::cube::set_mma_mtiles(2);
    crate::cube::set_mma_dq_mtiles(1);
    crate::cube::set_mma_bwd_layout(BwdLayout::Split);
    crate::attention_ops::set_backward_kernel(true);
    set_forward_kernel(ForwardKernel::Auto);
    // The default backward (closed-form reference from burn ops).
    crate::attention_ops::set_backward_kernel(false);
    let c = case(2, 1, 50, 50, 16, true, 0, None);
    let e = attention_rel_errors::<Autodiff<Wgpu>>(&c, FloatDType::F32, &dev);
    eprintln!("attention, default backward {c:?}: out/dq/dk/dv rel err {e:?}");
    assert!(e.iter().all(|x| *x < 1e-4), "default backward {c:?}: {e:?}");
}
