//! Which WGPU adapters this machine has. wgpu ignores software adapters by default, and Mesa's
//! lavapipe (the CPU Vulkan driver CI runs on) needs care in the kernels, so the engine's device
//! choice, the tests' skip checks and the kernels' loop-limit check all ask here.

use std::sync::OnceLock;

/// The device types of every WGPU adapter, enumerated once per process.
fn adapter_types() -> &'static [wgpu::DeviceType] {
    static TYPES: OnceLock<Vec<wgpu::DeviceType>> = OnceLock::new();
    TYPES.get_or_init(|| {
        // The primary backends only (Vulkan, Metal, DX12), which are what cubecl runs on: asking
        // for OpenGL too makes Mesa's EGL print errors on headless machines.
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor { backends: wgpu::Backends::PRIMARY, ..wgpu::InstanceDescriptor::new_without_display_handle() });
        let adapters = cubecl::future::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
        adapters.iter().map(|a| a.get_info().device_type).collect()
    })
}

/// Whether any WGPU adapter other than a CPU (software) one exists.
pub fn gpu_adapter_present() -> bool {
    adapter_types().iter().any(|t| *t != wgpu::DeviceType::Cpu)
}

/// Whether wgpu finds any adapter at all (a GPU, or a software one such as lavapipe).
pub fn wgpu_adapter_present() -> bool {
    !adapter_types().is_empty()
}
