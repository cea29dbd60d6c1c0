//! The CubeCL kernels on WGPU (Mesa lavapipe in CI) against the references. Shader compilation on
//! lavapipe costs seconds, so there are few tests, each covering many cases with one compilation.
//! They skip (with a message) only when no wgpu adapter exists at all.

use crate::check::{max_abs_diff, random_logits, random_ppo_batch, rel_err};
use crate::ppo::{Aggregation, KlEstimator, KlPenalty, PpoConfig, PpoTokenParams, logprobs, ppo_loss, ppo_loss_reference};
use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::backend::{Autodiff, NdArray, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};

pub(crate) fn device() -> Option<WgpuDevice> {
    let instance = wgpu::Instance::default();
    let adapters = cubecl::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    if adapters.is_empty() {
        eprintln!("skipping: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        return None;
    }
    let has_gpu = adapters.iter().any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu);
    Some(if has_gpu { WgpuDevice::DefaultDevice } else { WgpuDevice::Cpu })
}

pub(crate) fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().unwrap()
}

/// Loss and dlogits of the fused op on backend `B` (logits cast to `dtype`) against the NdArray
/// spec; returns (loss relative error, dlogits relative error).
fn ppo_errors<B: crate::KernelBackend + burn::tensor::backend::AutodiffBackend>(
    data: &TensorData,
    cfg: &PpoConfig,
    dtype: FloatDType,
    dev: &B::Device,
) -> (f64, f64) {
    type R = Autodiff<NdArray<f64>>;
    let x = Tensor::<B, 2>::from_data(data.clone(), dev).cast(dtype).require_grad();
    let batch = random_ppo_batch::<B>(data, 11, dev);
    let (loss, _) = ppo_loss(x.clone(), &batch, cfg);
    let g = x.grad(&loss.backward()).unwrap();
    let xr = Tensor::<R, 2>::from_data(data.clone().convert::<f64>(), &Default::default()).require_grad();
    let rbatch = random_ppo_batch::<R>(data, 11, &Default::default());
    let (rloss, _) = ppo_loss_reference(xr.clone(), &rbatch, cfg);
    let rg = xr.grad(&rloss.backward()).unwrap();
    (rel_err(&host(loss.inner()), &host(rloss.inner())), rel_err(&host(g), &host(rg)))
}

#[test]
fn ppo_and_logprobs_kernels_match_reference() {
    let Some(dev) = device() else { return };
    // Odd V (vector width 1) larger than the 256-unit row block, and V % 4 == 0 (width 4).
    for (n, v) in [(30, 1001), (12, 64)] {
        let data = random_logits(n, v, 5);
        for token in [
            PpoTokenParams { clip_low: 0.2, clip_high: 0.28, dual_clip: Some(3.0), kl: Some(KlPenalty { estimator: KlEstimator::K3, coef: 0.1 }) },
            PpoTokenParams { clip_low: 0.2, clip_high: 0.2, dual_clip: None, kl: Some(KlPenalty { estimator: KlEstimator::K2, coef: 0.5 }) },
        ] {
            let cfg = PpoConfig { token, aggregation: Aggregation::SeqMeanTokenMean { seq_len: 6 } };
            let (l, g) = ppo_errors::<Autodiff<Wgpu>>(&data, &cfg, FloatDType::F32, &dev);
            assert!(l < 1e-4 && g < 1e-4, "fusion f32 n={n} v={v}: loss {l:e}, grad {g:e}");
            eprintln!("ppo n={n} v={v} f32: loss {l:e} grad {g:e}");
            let (l, g) = ppo_errors::<Autodiff<CubeBackend<WgpuRuntime, f32, i32, u32>>>(&data, &cfg, FloatDType::F32, &dev);
            assert!(l < 1e-4 && g < 1e-4, "cube f32 n={n} v={v}: loss {l:e}, grad {g:e}");
            let (l, g) = ppo_errors::<Autodiff<Wgpu>>(&data, &cfg, FloatDType::F16, &dev);
            assert!(l < 1e-2 && g < 1e-2, "fusion f16 n={n} v={v}: loss {l:e}, grad {g:e}");
            eprintln!("ppo n={n} v={v} f16: loss {l:e} grad {g:e}");
        }
        // No-grad log-probs with a transposed (strided) view of the logits.
        let xt = Tensor::<Wgpu, 2>::from_data(data.clone(), &dev).transpose().transpose();
        let t = Tensor::<Wgpu, 1, Int>::from_data(random_ppo_batch::<NdArray>(&data, 2, &Default::default()).targets.into_data(), &dev);
        let got = logprobs(xt.clone(), t.clone()).into_data().to_vec::<f32>().unwrap();
        let want = crate::ppo::logprobs_reference(xt, t).into_data().to_vec::<f32>().unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }
}
