//! Run-time backend choice: one binary holds the CPU, WGPU and CUDA backends, and `--device`
//! picks one. Code generic over `B: Backend` is written once as a [`BackendTask`] and run on the
//! chosen backend by [`DeviceKind::run`].
//!
//! CPU uses burn-flex (measured faster than burn-ndarray on our models, see BENCHMARKS.md and the
//! README), WGPU runs on any Vulkan/Metal/DX12 adapter and falls back to a software adapter (Mesa
//! lavapipe) when there is no GPU, and CUDA is loaded at run time (NVRTC compiles the kernels).

use burn::backend::{Flex, NdArray, Wgpu};
use burn::tensor::FloatDType;
use burn::tensor::backend::Backend;
use mlagent_kernels::KernelBackend;
use std::str::FromStr;

/// A backend and device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn-flex on the CPU (f32).
    Cpu,
    /// burn-ndarray on the CPU (f32), kept for comparison.
    CpuNdarray,
    /// WGPU: the default adapter, or the CPU (software) adapter when no GPU adapter exists.
    Wgpu,
    /// CUDA device `n`.
    Cuda(usize),
}

impl FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" | "flex" => Ok(Self::Cpu),
            "ndarray" | "cpu-ndarray" => Ok(Self::CpuNdarray),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => cuda_libraries().map(|()| Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => cuda_libraries().map(|()| Self::Cuda(n)),
                _ => Err(format!("unknown device {other:?}: use cpu, ndarray, wgpu, cuda or cuda:N")),
            },
        }
    }
}

/// Whether `--device cuda` can start here: CubeCL loads the CUDA driver library and NVRTC at
/// run time and panics on its first call when either is missing, so they are looked for (by the
/// names cudarc loads them by) when the device is parsed.
fn cuda_libraries() -> Result<(), String> {
    // SAFETY: each call opens and closes the candidate libraries by name, as cudarc's loader does.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda.so) is not found: install the NVIDIA driver, or use wgpu or cpu".into());
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("NVRTC (libnvrtc.so) is not found: put the folder that holds it on LD_LIBRARY_PATH (not a stubs folder)".into());
    }
    Ok(())
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu (burn-flex)"),
            Self::CpuNdarray => write!(f, "cpu (burn-ndarray)"),
            Self::Wgpu => write!(f, "wgpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Work written once for any backend.
pub trait BackendTask {
    /// What the task returns.
    type Output;
    /// Runs on backend `B`; `dtype` is the compute dtype to use for weights and activations.
    /// `B` has the fused kernels of `mlagent-kernels` (used by the model's attention).
    fn run<B: Backend + KernelBackend>(self, device: B::Device, dtype: FloatDType) -> Self::Output;
}

/// Training work written once for any autodiff backend.
pub trait AutodiffTask {
    /// What the task returns.
    type Output;
    /// Runs on autodiff backend `B` (f32 compute); `B` and its inner backend have the fused kernels.
    fn run<B: burn::tensor::backend::AutodiffBackend + KernelBackend>(self, device: B::Device) -> Self::Output
    where
        B::InnerBackend: KernelBackend;
}

/// The WGPU device to use: a real GPU adapter if one exists, else the software CPU adapter
/// (wgpu ignores software adapters by default).
pub fn wgpu_device() -> burn::backend::wgpu::WgpuDevice {
    use burn::backend::wgpu::WgpuDevice;
    if std::env::var("MLAGENT_WGPU_ADAPTER").is_ok_and(|v| v == "cpu") {
        return WgpuDevice::Cpu;
    }
    if mlagent_kernels::gpu_adapter_present() { WgpuDevice::DefaultDevice } else { WgpuDevice::Cpu }
}

/// The CUDA backend: burn's CubeCL backend on the CUDA runtime, without burn's fusion layer.
///
/// `burn::backend::Cuda` wraps this in `Fusion` when burn's `fusion` feature is on (it is, for
/// WGPU). On an NVIDIA H200, burn-cubecl-fusion 0.21's fused-matmul autotune panicked inside the
/// forward pass of the 0.5B preset (`engine/codegen/ir.rs:500`, index out of bounds) and left the
/// device unusable, so CUDA runs unfused; our own fused kernels are unaffected.
pub type CudaBackend = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

/// Whether wgpu finds any adapter at all (a GPU, or a software one such as lavapipe).
pub fn wgpu_available() -> bool {
    mlagent_kernels::wgpu_adapter_present()
}

impl DeviceKind {
    /// Compute dtype: f32 everywhere, or bf16 on CUDA when asked for.
    pub fn dtype(self, bf16: bool) -> FloatDType {
        if bf16 && matches!(self, Self::Cuda(_)) { FloatDType::BF16 } else { FloatDType::F32 }
    }

    /// Runs `task` on this backend.
    pub fn run<T: BackendTask>(self, task: T, bf16: bool) -> T::Output {
        let dtype = self.dtype(bf16);
        match self {
            Self::Cpu => task.run::<Flex>(Default::default(), dtype),
            Self::CpuNdarray => task.run::<NdArray<f32>>(Default::default(), dtype),
            Self::Wgpu => task.run::<Wgpu>(wgpu_device(), dtype),
            Self::Cuda(n) => task.run::<CudaBackend>(burn::backend::cuda::CudaDevice::new(n), dtype),
        }
    }

    /// Runs a training task on this device's autodiff backend (both CPU choices train on burn-flex).
    pub fn run_autodiff<T: AutodiffTask>(self, task: T) -> T::Output {
        use burn::backend::Autodiff;
        match self {
            Self::Cpu | Self::CpuNdarray => task.run::<Autodiff<Flex>>(Default::default()),
            Self::Wgpu => task.run::<Autodiff<Wgpu>>(wgpu_device()),
            Self::Cuda(n) => task.run::<Autodiff<CudaBackend>>(burn::backend::cuda::CudaDevice::new(n)),
        }
    }

    /// [`DeviceKind::run_autodiff`], optionally with burn 0.21's gradient checkpointing
    /// (`BalancedCheckpointing`): outputs of ops burn marks memory-bound (element-wise ops: norms,
    /// activations, RoPE, residual adds) are not kept for the backward pass but recomputed from
    /// checkpointed inputs; compute-bound ones (matmuls, the fused attention and loss ops) are kept.
    /// Gradients are unchanged. burn has no per-layer (recompute-everything) checkpointing.
    pub fn run_autodiff_checkpointed<T: AutodiffTask>(self, task: T, checkpointing: bool) -> T::Output {
        use burn::backend::Autodiff;
        use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing as Ckpt;
        if !checkpointing {
            return self.run_autodiff(task);
        }
        match self {
            Self::Cpu | Self::CpuNdarray => task.run::<Autodiff<Flex, Ckpt>>(Default::default()),
            Self::Wgpu => task.run::<Autodiff<Wgpu, Ckpt>>(wgpu_device()),
            Self::Cuda(n) => task.run::<Autodiff<CudaBackend, Ckpt>>(burn::backend::cuda::CudaDevice::new(n)),
        }
    }
}

