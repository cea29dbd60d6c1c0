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

/// The largest single buffer the device's memory pools can allocate, in bytes, or `None` for
/// devices that are not CubeCL ones (CPU backends). On WGPU it is the adapter's storage-buffer
/// binding limit (Mesa lavapipe: 128 MiB), and CubeCL's WGPU server panics on a larger request
/// instead of returning an error, so callers that know their sizes ask here first.
pub fn max_buffer_bytes(device: &dyn Any) -> Option<u64> {
    match device.downcast_ref::<WgpuDevice>() {
        Some(d) => Some(WgpuRuntime::client(d).properties().memory.max_page_size),
        None => device.downcast_ref::<CudaDevice>().map(|d| CudaRuntime::client(d).properties().memory.max_page_size),
    }
}

/// `Err` with a one-line message when a `bytes`-sized buffer for `what` exceeds
/// [`max_buffer_bytes`] on `device`.
pub fn check_buffer_fits(device: &dyn Any, bytes: u64, what: &str) -> Result<(), String> {
    match max_buffer_bytes(device) {
        Some(max) if bytes > max => Err(format!(
            "{what} needs a {:.1} MiB buffer, over this device's largest single buffer ({:.1} MiB)",
            bytes as f64 / (1u64 << 20) as f64,
            max as f64 / (1u64 << 20) as f64
        )),
        _ => Ok(()),
    }
}
