//! What a CubeCL device's memory pools hold, for the benchmarks' memory column. burn's devices are
//! plain values; the CubeCL client behind a WGPU or CUDA device is found by the device's type.

use cubecl::Runtime;
use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubecl::wgpu::{WgpuDevice, WgpuRuntime};
use std::any::Any;

/// `(in use, reserved)` bytes of the device's memory pools (reserved: pages held, in use or free),
/// or `None` when the device is not a CubeCL one (CPU backends) or the runtime cannot say. With
/// `release_unused`, the pools are first asked to give back the pages nothing uses (CubeCL does not
/// promise to free everything).
pub fn pool_bytes(device: &dyn Any, release_unused: bool) -> Option<(u64, u64)> {
    fn usage<R: Runtime>(device: &R::Device, release_unused: bool) -> Option<(u64, u64)> {
        let client = R::client(device);
        if release_unused {
            client.memory_cleanup();
        }
        client.memory_usage().ok().map(|u| (u.bytes_in_use, u.bytes_reserved))
    }
    if let Some(d) = device.downcast_ref::<WgpuDevice>() {
        usage::<WgpuRuntime>(d, release_unused)
    } else if let Some(d) = device.downcast_ref::<CudaDevice>() {
        usage::<CudaRuntime>(d, release_unused)
    } else {
        None
    }
}
