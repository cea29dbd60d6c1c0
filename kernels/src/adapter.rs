//! Which WGPU adapters this machine has. wgpu ignores software adapters by default, and Mesa's
//! lavapipe (the CPU Vulkan driver CI runs on) needs care in the kernels, so both the engine's
//! device choice and the kernels' loop-limit check ask here.

use std::sync::OnceLock;

/// Whether any WGPU adapter other than a CPU (software) one exists; enumerated once per process.
pub fn gpu_adapter_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        let instance = wgpu::Instance::default();
        let adapters = cubecl::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        adapters.iter().any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
    })
}
