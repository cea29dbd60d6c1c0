//! What a CubeCL device's memory pools hold, for the benchmarks' memory column. burn's devices are
//! plain values; the CubeCL client behind a WGPU or CUDA device is found by the device's type.

use cubecl::Runtime;
use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubecl::wgpu::{WgpuDevice, WgpuRuntime};
use std::any::Any;

/// `(in use, reserved)` bytes of the device's memory pools (reserved: pages held, in use or free),
/// or `None` when the device is not a CubeCL one (CPU backends) or the runtime cannot say.
pub fn pool_bytes(device: &dyn Any) -> Option<(u64, u64)> {
    let usage = if let Some(d) = device.downcast_ref::<WgpuDevice>() {
        WgpuRuntime::client(d).memory_usage()
    } else if let Some(d) = device.downcast_ref::<CudaDevice>() {
        CudaRuntime::client(d).memory_usage()
    } else {
        return None;
    };
    usage.ok().map(|u| (u.bytes_in_use, u.bytes_reserved))
}

/// Asks the device's memory pools to give back the pages nothing uses (no-op off CubeCL devices;
/// CubeCL does not promise to free everything).
pub fn release_unused(device: &dyn Any) {
    if let Some(d) = device.downcast_ref::<WgpuDevice>() {
        WgpuRuntime::client(d).memory_cleanup();
    } else if let Some(d) = device.downcast_ref::<CudaDevice>() {
        CudaRuntime::client(d).memory_cleanup();
    }
}
