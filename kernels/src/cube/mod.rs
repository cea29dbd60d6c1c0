//! [`crate::KernelBackend`] for `CubeBackend<R, F, I, BT>`: one generic impl for every CubeCL
//! runtime (CUDA, WGPU). Kernels read the tensors' run-time dtype, not the backend's static `F`,
//! so a tensor `.cast()` to f16 or bf16 runs the same kernels.
//!
//! Outputs are allocated with `empty_device_contiguous_dtype`, never burn's `empty_device_dtype`:
//! the kernels index them linearly, and `empty_device_dtype` asks CubeCL for its "optimized"
//! layout, which on CUDA pads each row of the last dimension to an alignment (a `[16, 1000]` f32
//! tensor gets rows of 1024). Writing linearly into such a tensor left rows stale: that was the
//! cause of the wrong CUDA gradients (and log-sum-exps) measured on an H200 on 2026-11-26/27,
//! while WGPU, whose allocations are contiguous, was right.

pub mod attention_cmma;
pub mod attention_cmma_bwd;
pub mod attention_mma;
pub mod attention_mma_bwd;
pub mod attention_mma_dkv;
pub mod cmma_tiles;
pub mod attention_kernels;
pub mod logits_kernels;
pub mod mma_frags;
pub mod tile_copy;

use crate::KernelBackend;
use crate::attention_ops::FlashParams;
use crate::ppo::{KlEstimator, PpoTokenParams};
use burn::tensor::{DType, Shape};
use burn_cubecl::{
    BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement, kernel::into_contiguous,
    ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor,
};
use cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise, prelude::AddressType};

/// Largest address type the tensors need (32-bit unless a buffer exceeds 2³² elements, as
/// 32k tokens × 152k vocabulary does).
fn addr<R: CubeRuntime>(ts: &[&CubeTensor<R>]) -> AddressType {
    ts.iter().map(|t| t.required_address_type()).max().unwrap_or_default()
}

/// One cube per row; the grid wraps into y past wgpu's 65535-per-dimension limit.
fn row_grid(n: usize) -> CubeCount {
    let cx = n.min(65535) as u32;
    CubeCount::Static(cx, n.div_ceil(cx as usize) as u32, 1)
}

/// Lanes per vector for reading `[N, V]` logits rows: the widest the device loads in one go that
/// divides `V` (1 when none does).
fn logits_vector<R: CubeRuntime>(t: &CubeTensor<R>, v: usize) -> usize {
    t.client.io_optimized_vector_sizes(t.dtype.size()).find(|w| v.is_multiple_of(*w)).unwrap_or(1)
}

/// Units per row cube: a power of two between 32 and 256, within the device's limit.
fn row_block<R: CubeRuntime>(t: &CubeTensor<R>, v: usize) -> u32 {
    let max_units = t.client.properties().hardware.max_units_per_cube;
    (v.next_power_of_two() as u32).clamp(32, 256).min(max_units)
}

/// Rows staged per shared-memory tile: two f32 tiles of `rows × D` stay within 16 KiB (lavapipe
/// has 32 KiB of shared memory), between 8 and `cap` rows.
fn tile_rows(head_dim: usize, cap: usize) -> usize {
    (2048 / head_dim.max(1)).next_power_of_two().clamp(8, cap)
}

use attention_kernels::UNITS as ATTN_UNITS;

/// Loop passes one shader invocation may make on a software Vulkan adapter: the 65535 of Mesa's
/// llvmpipe loop limiter (see [`attention_kernels`]) less a margin.
const SOFTWARE_LOOP_BUDGET: usize = 64_000;

/// Whether `t` lives on a WGPU CPU adapter (Mesa lavapipe): `WgpuDevice::Cpu`, or the default
/// device on a machine whose only adapters are CPU ones.
fn software_adapter<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    use cubecl::wgpu::WgpuDevice;
    let Some(device) = (&t.device as &dyn std::any::Any).downcast_ref::<WgpuDevice>() else { return false };
    #[allow(deprecated)]
    match device {
        WgpuDevice::Cpu => true,
        WgpuDevice::DefaultDevice | WgpuDevice::BestAvailable => !crate::gpu_adapter_present(),
        _ => false,
    }
}

/// Whether a kernel whose units each run `iterations` loop iterations computes correctly on
/// `t`'s device; warns once per process when it does not (the caller then uses plain burn ops).
fn within_loop_limit<R: CubeRuntime>(t: &CubeTensor<R>, iterations: usize, what: &str) -> bool {
    if iterations <= SOFTWARE_LOOP_BUDGET || !software_adapter(t) {
        return true;
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "{what}: {iterations} loop iterations per shader invocation exceed the software Vulkan adapter's \
             limit (65535 in Mesa lavapipe); using plain burn ops (exact, more memory) for this and larger shapes"
        )
    });
    false
}

/// Which attention forward kernel runs where both could.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardKernel {
    /// [`attention_mma`] (register tiles, 32 rows per plane by default, `cp.async` K/V copies) where
    /// the runtime has the 16×8×16 manual MMA (CUDA, f16/bf16), else as [`ForwardKernel::Cmma`].
    /// On an H200 (2026-11-28, bf16, 4096 tokens causal) the `mma` forward ran at 144–177 TFLOP/s
    /// and the `cmma` one at 10.8 (BENCHMARKS.md).
    Auto,
    /// The tensor-core kernel ([`attention_cmma`]) where the runtime has `cmma`, else the portable one.
    Cmma,
    /// The portable kernel everywhere (for comparisons).
    Portable,
    /// [`attention_cmma`] with its two tile products as scalar code, on any runtime and dtype, for
    /// head dims that are multiples of 16: runs the tensor-core kernel's logic where there are no
    /// tensor cores (tests on lavapipe). Slow.
    CmmaEmulated,
    /// [`attention_mma`] (register tiles, `mma.sync` and `ldmatrix`) where the runtime has the
    /// 16×8×16 manual MMA, else as [`ForwardKernel::Auto`].
    Mma,
    /// [`attention_mma`] with element reads instead of `ldmatrix` (separates a fault of one from
    /// the other on a GPU).
    MmaDirect,
    /// [`attention_mma`] with its products and quad reductions through shared memory, on any
    /// runtime and dtype (tests on lavapipe). Slow.
    MmaEmulated,
}

/// A setting held in `cell` (0: not yet set): its value, read from the environment by `read`
/// (non-zero) on first use, unless a setter stored one before.
pub(crate) fn setting(cell: &std::sync::atomic::AtomicU8, read: impl FnOnce() -> u8) -> u8 {
    use std::sync::atomic::Ordering;
    match cell.load(Ordering::Relaxed) {
        0 => {
            let _ = cell.compare_exchange(0, read(), Ordering::Relaxed, Ordering::Relaxed);
            cell.load(Ordering::Relaxed)
        }
        c => c,
    }
}

static FORWARD_KERNEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The forward kernel choice: [`set_forward_kernel`]'s, else `MLAGENT_ATTENTION` read once
/// (`portable`, `cmma`, `cmma-emulated`, `mma`, `mma-direct`, `mma-emulated`; anything else or
/// unset: auto).
pub fn forward_kernel() -> ForwardKernel {
    let code = setting(&FORWARD_KERNEL, || match std::env::var("MLAGENT_ATTENTION").as_deref() {
        Ok("portable") => 2,
        Ok("cmma-emulated") => 3,
        Ok("mma") => 4,
        Ok("mma-direct") => 5,
        Ok("mma-emulated") => 6,
        Ok("cmma") => 7,
        _ => 1,
    });
    match code {
        2 => ForwardKernel::Portable,
        3 => ForwardKernel::CmmaEmulated,
        4 => ForwardKernel::Mma,
        5 => ForwardKernel::MmaDirect,
        6 => ForwardKernel::MmaEmulated,
        7 => ForwardKernel::Cmma,
        _ => ForwardKernel::Auto,
    }
}

static MMA_ASYNC: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether the register-tile kernels ([`attention_mma`] forward, [`attention_mma_bwd`] dQ and dK/dV)
/// fill their double-buffered tiles with `cp.async` ([`tile_copy::AsyncCopy`]) where the runtime
/// has it: [`set_mma_async_copy`]'s, else not `MLAGENT_MMA_ASYNC=0` (read once). Off, the same
/// loops load through registers ([`tile_copy::SyncCopy`]).
pub fn mma_async_copy() -> bool {
    setting(&MMA_ASYNC, || if std::env::var("MLAGENT_MMA_ASYNC").as_deref() != Ok("0") { 2 } else { 1 }) == 2
}

/// Sets [`mma_async_copy`] for this process.
pub fn set_mma_async_copy(on: bool) {
    MMA_ASYNC.store(if on { 2 } else { 1 }, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the register-tile kernels' tiles of `vector_bytes`-byte vectors go by `cp.async` on this
/// runtime: 16-byte vectors (its copy size; `vector_tiles` checked every stride), [`mma_async_copy`],
/// the runtime's `copy_async` feature (CUDA), and CCCL's `cuda/barrier` header where cubecl-cuda's
/// NVRTC compile looks for it (`include/` or, from CUDA 13, `include/cccl/` of `CUDA_PATH` or the
/// default install): without it the kernels would not compile, so they load through registers
/// instead, with a one-time warning.
/// Grid for `n` units, one per element (or vector) of an elementwise kernel: the client's default
/// cube size and enough cubes to cover `n`.
fn elemwise_grid<R: CubeRuntime>(client: &cubecl::client::ComputeClient<R>, n: usize) -> (CubeCount, CubeDim) {
    let cube_dim = CubeDim::new(client, n);
    (calculate_cube_count_elemwise(client, n, cube_dim), cube_dim)
}

fn async_tiles<R: CubeRuntime>(client: &cubecl::client::ComputeClient<R>, vector_bytes: usize) -> bool {
    if vector_bytes != 16 || !mma_async_copy() || !client.properties().features.copy_async {
        return false;
    }
    static HEADERS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HEADERS.get_or_init(|| {
        let include = cubecl::cuda::install::cuda_path().map(|p| p.join("include"));
        let found = include.as_ref().is_some_and(|i| i.join("cuda/barrier").exists() || i.join("cccl/cuda/barrier").exists());
        if !found {
            tracing::warn!(
                "CCCL's cuda/barrier header is not under {} (include/ or include/cccl/): the attention kernels load their \
                 tiles through registers instead of cp.async (slower; set CUDA_PATH to a CUDA toolkit with CCCL)",
                include.map_or_else(|| "any CUDA install (set CUDA_PATH)".to_string(), |i| i.display().to_string())
            );
        }
        found
    })
}

static LAST_FORWARD_ASYNC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the last attention forward filled its K/V tiles with `cp.async` (see [`mma_async_copy`]).
pub fn last_forward_async_copy() -> bool {
    LAST_FORWARD_ASYNC.load(std::sync::atomic::Ordering::Relaxed)
}

static MMA_BWD_LAYOUT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// How the register-tile backward ([`attention_mma_bwd`], [`attention_mma_dkv`]) splits its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BwdLayout {
    /// The dQ kernel and the dK/dV kernel with 16 key rows per warp: seven tile products per (key,
    /// query) tile. The default, as timed.
    Split,
    /// One kernel: dK/dV with dQ by atomic adds, five products per tile instead of seven
    /// (`MLAGENT_MMA_BWD=fused`). Timed slower (BENCHMARKS.md).
    Fused,
    /// The dQ kernel and [`attention_mma_dkv`]'s dK/dV kernel with FlashAttention-2's warp layout
    /// (`P` and `dS` through shared memory; `MLAGENT_MMA_BWD=wide`). Checked by emulation and
    /// NVRTC, not yet timed on a card.
    Wide,
    /// FlashAttention-2's whole backward: the wide dK/dV kernel also adds `dS K` to dQ by atomic
    /// adds, and the dQ kernel does not run (`MLAGENT_MMA_BWD=wide-fused`). Checked by emulation
    /// and NVRTC, not yet timed on a card.
    WideFused,
}

impl BwdLayout {
    const ALL: [BwdLayout; 4] = [BwdLayout::Split, BwdLayout::Fused, BwdLayout::Wide, BwdLayout::WideFused];

    /// The name `MLAGENT_MMA_BWD` takes, as the bench's JSON gives it.
    pub fn name(self) -> &'static str {
        match self {
            BwdLayout::Split => "split",
            BwdLayout::Fused => "fused",
            BwdLayout::Wide => "wide",
            BwdLayout::WideFused => "wide-fused",
        }
    }

    /// Whether dK/dV come from [`attention_mma_dkv`]'s kernel.
    pub fn wide(self) -> bool {
        matches!(self, BwdLayout::Wide | BwdLayout::WideFused)
    }

    /// Whether the dK/dV kernel also adds dQ (atomic adds into f32 sums) and the dQ kernel does not run.
    pub fn fused_dq(self) -> bool {
        matches!(self, BwdLayout::Fused | BwdLayout::WideFused)
    }

    /// The layout's code in the settings' atomics (0 means none).
    fn code(self) -> u8 {
        self as u8 + 1
    }

    /// The layout of a non-zero [`BwdLayout::code`].
    fn from_code(code: u8) -> Option<BwdLayout> {
        Self::ALL.into_iter().find(|l| l.code() == code)
    }
}

/// The register-tile backward's layout: [`set_mma_bwd_layout`]'s, else `MLAGENT_MMA_BWD=fused|wide|wide-fused`
/// (read once; anything else: [`BwdLayout::Split`]).
pub fn mma_bwd_layout() -> BwdLayout {
    let code = setting(&MMA_BWD_LAYOUT, || {
        let var = std::env::var("MLAGENT_MMA_BWD").unwrap_or_default();
        BwdLayout::ALL.into_iter().find(|l| l.name() == var).unwrap_or(BwdLayout::Split).code()
    });
    BwdLayout::from_code(code).unwrap_or(BwdLayout::Split)
}

/// Sets [`mma_bwd_layout`] for this process.
pub fn set_mma_bwd_layout(layout: BwdLayout) {
    MMA_BWD_LAYOUT.store(layout.code(), std::sync::atomic::Ordering::Relaxed);
}

static MMA_BWD_PLANES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Warps per cube of the register-tile backward's dK/dV side on a GPU (16 key rows each): 2, 4 or
/// 8 from `MLAGENT_MMA_BWD_PLANES` (read once), else 4 for the split kernels (as timed; the dQ
/// kernel takes the same) and 8 for the fused and wide ones (128 keys per cube, FlashAttention-2's
/// block; the wide layout's dQ kernel keeps 4). With 8 the fused kernel's dQ atomic adds come to
/// 16 KB per 5.2 MFLOP of products, FA2's own ratio; with 4, twice that.
pub fn mma_bwd_planes(layout: BwdLayout) -> usize {
    // 1: not set.
    let set = setting(&MMA_BWD_PLANES, || match std::env::var("MLAGENT_MMA_BWD_PLANES").as_deref() {
        Ok("2") => 2,
        Ok("4") => 4,
        Ok("8") => 8,
        _ => 1,
    });
    match set {
        1 if layout != BwdLayout::Split => 8,
        1 => attention_mma::PLANES,
        p => p as usize,
    }
}

static MMA_DQ_MTILES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// 16-row M tiles per plane of the register-tile dQ kernel ([`attention_mma_bwd`]): 1 (16 query
/// rows per plane, Q's and dO's fragments held in registers; the default, as timed) or 2 (32 rows,
/// the forward's layout: 80 instead of 96 fragment loads per 192 tensor-core operations, checked by
/// emulation and NVRTC, not yet timed on a card). [`set_mma_dq_mtiles`]'s, else
/// `MLAGENT_MMA_DQ_ROWS=16|32` read once.
pub fn mma_dq_mtiles() -> usize {
    mtiles_setting(&MMA_DQ_MTILES, "MLAGENT_MMA_DQ_ROWS", 1)
}

/// Sets [`mma_dq_mtiles`] for this process (1 or 2).
pub fn set_mma_dq_mtiles(mtiles: usize) {
    store_mtiles(&MMA_DQ_MTILES, mtiles, "dQ M tiles per plane");
}

/// M tiles per plane held in `cell`: from the rows per plane in `var` (`16` → 1, `32` → 2;
/// anything else or unset: `default`), read once, unless [`store_mtiles`] stored one before.
fn mtiles_setting(cell: &std::sync::atomic::AtomicU8, var: &str, default: u8) -> usize {
    setting(cell, || match std::env::var(var).as_deref() {
        Ok("16") => 1,
        Ok("32") => 2,
        _ => default,
    }) as usize
}

/// Stores `mtiles` (1 or 2) in `cell` for this process; `what` names the setting in the panic.
fn store_mtiles(cell: &std::sync::atomic::AtomicU8, mtiles: usize, what: &str) {
    assert!(mtiles == 1 || mtiles == 2, "{what}: 1 or 2, not {mtiles}");
    cell.store(mtiles as u8, std::sync::atomic::Ordering::Relaxed);
}

static LAST_BACKWARD_DQ_MTILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// M tiles per plane of the last register-tile dQ kernel that ran on a CubeCL device (0: none yet,
/// or the fused backward).
pub fn last_backward_dq_mtiles() -> usize {
    LAST_BACKWARD_DQ_MTILES.load(std::sync::atomic::Ordering::Relaxed)
}

static LAST_BACKWARD_LAYOUT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The layout of the last register-tile attention backward that ran on a CubeCL device (`None`:
/// none yet, or the last backward took other kernels).
pub fn last_backward_layout() -> Option<BwdLayout> {
    BwdLayout::from_code(LAST_BACKWARD_LAYOUT.load(std::sync::atomic::Ordering::Relaxed))
}

static MMA_MTILES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// 16-row M tiles per plane of the register-tile forward ([`attention_mma`]): 2 (32 query rows per
/// plane, FlashAttention-2's layout: fewer shared-memory reads per tensor-core operation, twice the
/// accumulators; the default, 177 against 144 TFLOP/s on an H200 at 4096 tokens causal) or 1 (16
/// rows, Q's fragments in registers). [`set_mma_mtiles`]'s, else `MLAGENT_MMA_ROWS=16|32` read once.
pub fn mma_mtiles() -> usize {
    mtiles_setting(&MMA_MTILES, "MLAGENT_MMA_ROWS", 2)
}

/// Sets [`mma_mtiles`] for this process (1 or 2).
pub fn set_mma_mtiles(mtiles: usize) {
    store_mtiles(&MMA_MTILES, mtiles, "M tiles per plane");
}

/// Chooses the forward kernel for this process; see [`forward_kernel`].
pub fn set_forward_kernel(k: ForwardKernel) {
    let code = match k {
        ForwardKernel::Auto => 1,
        ForwardKernel::Portable => 2,
        ForwardKernel::CmmaEmulated => 3,
        ForwardKernel::Mma => 4,
        ForwardKernel::MmaDirect => 5,
        ForwardKernel::MmaEmulated => 6,
        ForwardKernel::Cmma => 7,
    };
    FORWARD_KERNEL.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the tensor-core kernels can serve these inputs: f16/bf16, a head dim that is a multiple
/// of 16 (at most 256), a runtime with 16×16×16 `cmma` for that dtype into f32 and 32-wide planes.
fn cmma_supported<R: CubeRuntime>(q: &CubeTensor<R>, d: usize) -> bool {
    use cubecl::features::MmaConfig;
    use cubecl::ir::{ElemType, FloatKind, StorageType};
    let elem: StorageType = match q.dtype {
        DType::F16 => ElemType::Float(FloatKind::F16).into(),
        DType::BF16 => ElemType::Float(FloatKind::BF16).into(),
        _ => return false,
    };
    if !d.is_multiple_of(16) || d > 256 {
        return false;
    }
    let props = q.client.properties();
    let hw = &props.hardware;
    let f32_ty: StorageType = ElemType::Float(FloatKind::F32).into();
    let mma = MmaConfig { a_type: elem, b_type: elem, cd_type: f32_ty, m: 16, n: 16, k: 16 };
    props.features.matmul.cmma.contains(&mma)
        && hw.plane_size_min == attention_cmma::PLANE as u32
        && hw.plane_size_max == attention_cmma::PLANE as u32
}

/// Whether the tensor-core forward ([`attention_cmma`]) serves these inputs: [`cmma_supported`] and
/// enough shared memory for [`attention_cmma::PLANES`] planes.
fn cmma_attention_ok<R: CubeRuntime>(q: &CubeTensor<R>, d: usize) -> bool {
    cmma_supported(q, d)
        && attention_cmma::shared_bytes(d, q.dtype.size(), attention_cmma::PLANES) <= q.client.properties().hardware.max_shared_memory_size
}

/// Which backward kernels run, with their launch settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backward {
    Portable,
    /// [`attention_cmma_bwd`]: planes, tile (keys or queries per step), emulate.
    Cmma(usize, usize, bool),
    /// [`attention_mma_bwd`] (and [`attention_mma_dkv`]): the layout, planes per cube of the dQ
    /// kernel (and the split kernels' dK/dV) and of the dK/dV kernel, ldmatrix, emulate, the dQ
    /// kernel's M tiles per plane.
    Mma { layout: BwdLayout, planes: usize, dkv_planes: usize, ldmatrix: bool, emulate: bool, dq_mtiles: usize },
}

/// How the backward runs under [`forward_kernel`] (the backward follows the forward's choice): the
/// register-tile ones where the runtime has the manual MMA (auto, `mma`, `mma-direct`); else the
/// tensor-core kernels on `cmma` runtimes with 4 planes and 64-row tiles; emulated, the largest that fit the
/// device's shared memory; else the portable ones.
fn backward_plan<R: CubeRuntime>(q: &CubeTensor<R>, d: usize) -> Backward {
    let max = q.client.properties().hardware.max_shared_memory_size;
    let elem = q.dtype.size();
    let fits = |p: usize, t: usize| {
        attention_cmma_bwd::dq_shared_bytes(d, elem, p, t) <= max && attention_cmma_bwd::dkv_shared_bytes(d, elem, p, t) <= max
    };
    let cmma = || {
        if cmma_supported(q, d) && fits(attention_cmma::PLANES, 64) { Backward::Cmma(attention_cmma::PLANES, 64, false) } else { Backward::Portable }
    };
    let dq_mtiles = mma_dq_mtiles();
    let requested = mma_bwd_layout();
    // The wide dK/dV kernel's planes where it is requested and fits (emulated: the most that fit).
    let wide_planes = |emulate: bool| {
        let want = if emulate { 8 } else { mma_bwd_planes(requested) };
        attention_mma_dkv::planes(d, elem, max, want, emulate).filter(|_| requested.wide())
    };
    // The requested layout, or the split kernels where the wide kernel does not fit.
    let resolve = |emulate: bool| if requested.wide() && wide_planes(emulate).is_none() { BwdLayout::Split } else { requested };
    let layout = resolve(false);
    let mma_fits = |p: usize| {
        let dq = if layout.fused_dq() { 0 } else { attention_mma_bwd::dq_shared_bytes(d, elem, p, dq_mtiles, false) };
        let dkv = if layout.wide() { 0 } else { attention_mma_bwd::dkv_shared_bytes(d, elem, p, false, layout == BwdLayout::Fused) };
        dq.max(dkv) <= max
    };
    // The requested planes where they fit, else the split kernels' 4 (the wide layout's dQ kernel: 4).
    let planes = if layout.wide() { attention_mma::PLANES } else { Some(mma_bwd_planes(layout)).filter(|&p| mma_fits(p)).unwrap_or(attention_mma::PLANES) };
    let dkv_planes = wide_planes(false).unwrap_or(planes);
    let grid = mma_grid_ok(q);
    let mma = grid && mma_attention_ok(q, d) && mma_fits(planes);
    let on_gpu = |ldmatrix: bool| Backward::Mma { layout, planes, dkv_planes, ldmatrix, emulate: false, dq_mtiles };
    match forward_kernel() {
        ForwardKernel::Portable => Backward::Portable,
        ForwardKernel::Auto if mma => on_gpu(true),
        ForwardKernel::Auto | ForwardKernel::Cmma => cmma(),
        ForwardKernel::CmmaEmulated if d.is_multiple_of(16) && d <= 256 => [(4, 64), (2, 64), (1, 64), (1, 32), (1, 16)]
            .into_iter()
            .find(|&(p, t)| fits(p, t))
            .map_or(Backward::Portable, |(p, t)| Backward::Cmma(p, t, true)),
        ForwardKernel::CmmaEmulated => Backward::Portable,
        ForwardKernel::Mma | ForwardKernel::MmaDirect if mma => on_gpu(forward_kernel() == ForwardKernel::Mma),
        ForwardKernel::Mma | ForwardKernel::MmaDirect => cmma(),
        ForwardKernel::MmaEmulated if grid => {
            // Emulated, the wide layout where its kernel fits (lavapipe's 32 KiB: f16 only).
            let layout = resolve(true);
            attention_mma_bwd::emulation_planes(d, elem, max, layout.fused_dq(), dq_mtiles).map_or(Backward::Portable, |p| Backward::Mma {
                layout,
                planes: p,
                dkv_planes: wide_planes(true).unwrap_or(p),
                ldmatrix: false,
                emulate: true,
                dq_mtiles,
            })
        }
        ForwardKernel::MmaEmulated => Backward::Portable,
    }
}

/// Whether the register-tile kernels' grids fit the device's cube counts: `B·H` cubes along x (see
/// `attention_kernels::batch_head`), at most `⌈Tq/16⌉` tiles along y (wgpu allows 65535 per
/// dimension; the other kernels put the batch on z and the heads on y).
fn mma_grid_ok<R: CubeRuntime>(q: &CubeTensor<R>) -> bool {
    let [b, h, tq, _] = q.meta.shape().dims::<4>();
    let (x, y, _) = q.client.properties().hardware.max_cube_count;
    b * h <= x as usize && tq.div_ceil(16) <= y as usize
}

/// Whether the register-tile forward ([`attention_mma`]) serves these inputs: f16/bf16, a head dim
/// that is a multiple of 16 (at most [`attention_mma::MAX_HEAD_DIM`]), a runtime with the manual
/// 16×8×16 MMA for that dtype into f32, 32-wide planes, and shared memory for
/// [`attention_mma::PLANES`] planes.
fn mma_attention_ok<R: CubeRuntime>(q: &CubeTensor<R>, d: usize) -> bool {
    use cubecl::features::MmaConfig;
    use cubecl::ir::{ElemType, FloatKind, StorageType};
    let elem: StorageType = match q.dtype {
        DType::F16 => ElemType::Float(FloatKind::F16).into(),
        DType::BF16 => ElemType::Float(FloatKind::BF16).into(),
        _ => return false,
    };
    if !d.is_multiple_of(16) || d > attention_mma::MAX_HEAD_DIM {
        return false;
    }
    let props = q.client.properties();
    let hw = &props.hardware;
    let f32_ty: StorageType = ElemType::Float(FloatKind::F32).into();
    let mma = MmaConfig { a_type: elem, b_type: elem, cd_type: f32_ty, m: 16, n: 8, k: 16 };
    props.features.matmul.mma.contains(&mma)
        && hw.plane_size_min == mma_frags::PLANE as u32
        && hw.plane_size_max == mma_frags::PLANE as u32
        && attention_mma::shared_bytes(d, q.dtype.size(), attention_mma::PLANES, mma_mtiles(), false) <= hw.max_shared_memory_size
}

/// The forward kernel the last attention forward in this process ran (0: none yet); see
/// [`last_forward_kernel`].
static LAST_FORWARD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The kernel the last attention forward on a CubeCL device ran: `portable`, `cmma`,
/// `cmma-emulated`, `mma`, `mma-direct`, `mma-emulated` (each of the last three with `-m32` for 32
/// rows per plane), or `plain-ops` (past a software adapter's loop limit); `None` before any. For
/// reports (`mlagent kernels check/bench`), since a requested kernel falls back to another where
/// the device cannot run it.
pub fn last_forward_kernel() -> Option<&'static str> {
    const NAMES: [&str; 10] =
        ["portable", "cmma", "cmma-emulated", "mma", "mma-direct", "mma-emulated", "plain-ops", "mma-m32", "mma-direct-m32", "mma-emulated-m32"];
    NAMES.get((LAST_FORWARD.load(std::sync::atomic::Ordering::Relaxed) as usize).checked_sub(1)?).copied()
}

fn record_forward(plan: Option<Forward>) {
    LAST_FORWARD_ASYNC.store(false, std::sync::atomic::Ordering::Relaxed);
    let code = match plan {
        Some(Forward::Portable) => 1,
        Some(Forward::Cmma(_, false)) => 2,
        Some(Forward::Cmma(_, true)) => 3,
        Some(Forward::Mma(_, 1, true, _)) => 4,
        Some(Forward::Mma(_, 1, false, false)) => 5,
        Some(Forward::Mma(_, 1, false, true)) => 6,
        Some(Forward::Mma(_, _, true, _)) => 8,
        Some(Forward::Mma(_, _, false, false)) => 9,
        Some(Forward::Mma(_, _, false, true)) => 10,
        None => 7,
    };
    LAST_FORWARD.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// Which forward kernel runs, with its launch settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forward {
    Portable,
    /// [`attention_cmma`]: planes, emulate.
    Cmma(usize, bool),
    /// [`attention_mma`]: planes, M tiles per plane, ldmatrix, emulate.
    Mma(usize, usize, bool, bool),
}

/// How the forward runs for these inputs under [`forward_kernel`]. Emulation takes the most planes
/// (≤ 4) whose tiles fit the device's shared memory.
fn forward_plan<R: CubeRuntime>(q: &CubeTensor<R>, d: usize, scale: f32) -> Forward {
    let max = q.client.properties().hardware.max_shared_memory_size;
    let cmma = || if cmma_attention_ok(q, d) { Forward::Cmma(attention_cmma::PLANES, false) } else { Forward::Portable };
    // The register-tile forward takes row maxima before scaling: positive scales only.
    let mma_scale = scale > 0.0 && mma_grid_ok(q);
    match forward_kernel() {
        ForwardKernel::Portable => Forward::Portable,
        ForwardKernel::Auto if mma_scale && mma_attention_ok(q, d) => Forward::Mma(attention_mma::PLANES, mma_mtiles(), true, false),
        ForwardKernel::Auto | ForwardKernel::Cmma => cmma(),
        ForwardKernel::CmmaEmulated => attention_cmma::emulation_planes(d, q.dtype.size(), max).map_or(Forward::Portable, |p| Forward::Cmma(p, true)),
        ForwardKernel::Mma | ForwardKernel::MmaDirect if mma_scale && mma_attention_ok(q, d) => {
            Forward::Mma(attention_mma::PLANES, mma_mtiles(), forward_kernel() == ForwardKernel::Mma, false)
        }
        ForwardKernel::Mma | ForwardKernel::MmaDirect => cmma(),
        ForwardKernel::MmaEmulated if mma_scale => {
            let mtiles = mma_mtiles();
            attention_mma::emulation_planes(d, q.dtype.size(), mtiles, max).map_or(Forward::Portable, |p| Forward::Mma(p, mtiles, false, true))
        }
        ForwardKernel::MmaEmulated => Forward::Portable,
    }
}

/// `[B, H, T, D]` tensors for the register-tile kernels, which stage them a vector at a time: each
/// with its last dimension contiguous (copied where it is not), and the elements per vector: the
/// widest the device loads in one go that divides 8 (an `ldmatrix` row), the head dim and every
/// other stride.
fn vector_tiles<R: CubeRuntime, const N: usize>(ts: [CubeTensor<R>; N], d: usize) -> ([CubeTensor<R>; N], usize) {
    let ts = ts.map(|t| if t.meta.strides()[3] == 1 { t } else { into_contiguous(t) });
    let ok = |w: usize| 8 % w == 0 && d.is_multiple_of(w) && ts.iter().all(|t| t.meta.strides()[..3].iter().all(|s| s.is_multiple_of(w)));
    let vs = ts[0].client.io_optimized_vector_sizes(ts[0].dtype.size()).find(|&w| ok(w)).unwrap_or(1);
    (ts, vs)
}

/// An uninitialised contiguous output on `like`'s device (see the module doc for why contiguous).
fn empty<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, dtype)
}

fn empty_f32<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    empty(like, shape, DType::F32)
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> KernelBackend for CubeBackend<R, F, I, BT> {
    fn fused_attention() -> bool {
        true
    }

    fn logprobs_fwd(logits: CubeTensor<R>, targets: CubeTensor<R>) -> (CubeTensor<R>, CubeTensor<R>) {
        logits.assert_is_on_same_device(&targets);
        // Rows are read as vectors: contiguous rows (a no-op for the LM head's output).
        let logits = into_contiguous(logits);
        let [n, v] = logits.meta.shape().dims::<2>();
        let logp = empty_f32(&logits, Shape::new([n]));
        let lse = empty_f32(&logits, Shape::new([n]));
        if n == 0 {
            return (logp, lse);
        }
        assert!(v > 0, "logprobs: logits [{n}, 0] have no vocabulary");
        let block = row_block(&logits, v);
        let vs = logits_vector(&logits, v);
        let client = logits.client.clone();
        let address_type = addr(&[&logits, &targets]);
        let dtypes = [logits.dtype.into(), targets.dtype.into()];
        // SAFETY: the kernel guards its indices (rows below N, vectors below V / vs, the target
        // clamped into the row, V > 0 asserted above); the outputs are [N] as allocated.
        unsafe { logits_kernels::logprobs_fwd_kernel::launch_unchecked::<R>(
            &client,
            row_grid(n),
            CubeDim::new_1d(block),
            address_type,
            vs,
            logits.clone().into_tensor_arg(),
            logits.into_tensor_arg(),
            targets.into_tensor_arg(),
            logp.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            n,
            v / vs,
            block,
            dtypes,
        ) };
        (logp, lse)
    }

    fn logprobs_bwd(logits: CubeTensor<R>, targets: CubeTensor<R>, lse: CubeTensor<R>, grad: CubeTensor<R>) -> CubeTensor<R> {
        // Both kernels index linearly.
        let logits = into_contiguous(logits);
        let targets = into_contiguous(targets);
        let lse = into_contiguous(lse);
        let grad = into_contiguous(grad);
        let [n, v] = logits.meta.shape().dims::<2>();
        let client = logits.client.clone();
        let dtype = logits.dtype;
        let out = empty(&logits, Shape::new([n, v]), dtype);
        if n == 0 || v == 0 {
            return out;
        }
        let vs = logits_vector(&logits, v);
        let units = n * v / vs;
        let (cube_count, cube_dim) = elemwise_grid(&client, units);
        let address_type = addr(&[&logits, &out]);
        // SAFETY: every index is checked against `out.len()`, and `logits` has the same layout as `out`.
        unsafe {
            logits_kernels::softmax_grad_kernel::launch_unchecked::<R>(
                &client,
                cube_count,
                cube_dim,
                address_type,
                vs,
                logits.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                grad.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                v / vs,
                dtype.into(),
            );
        }
        let (cube_count, cube_dim) = elemwise_grid(&client, n);
        let dtypes = [dtype.into(), targets.dtype.into()];
        // SAFETY: one unit per row below N (the kernel checks), the target clamped into the row of
        // the contiguous [N, V] output allocated above (V > 0 here).
        unsafe { logits_kernels::target_grad_kernel::launch_unchecked::<R>(
            &client,
            cube_count,
            cube_dim,
            address_type,
            logits.into_tensor_arg(),
            targets.into_tensor_arg(),
            lse.into_tensor_arg(),
            grad.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            dtypes,
        ) };
        out
    }

    fn ppo_token_fwd(
        logits: CubeTensor<R>,
        targets: CubeTensor<R>,
        old_logp: CubeTensor<R>,
        ref_logp: CubeTensor<R>,
        advantages: CubeTensor<R>,
        params: PpoTokenParams,
    ) -> [CubeTensor<R>; 4] {
        logits.assert_is_on_same_device(&targets);
        let logits = into_contiguous(logits);
        let [n, v] = logits.meta.shape().dims::<2>();
        let outs = [(); 4].map(|_| empty_f32(&logits, Shape::new([n])));
        if n == 0 {
            return outs;
        }
        assert!(v > 0, "ppo_loss: logits [{n}, 0] have no vocabulary");
        let block = row_block(&logits, v);
        let vs = logits_vector(&logits, v);
        let client = logits.client.clone();
        let address_type = addr(&[&logits, &targets]);
        let dtypes = [logits.dtype.into(), targets.dtype.into()];
        let (kl_kind, kl_coef) = match params.kl {
            None => (0, 0.0),
            Some(k) => (
                match k.estimator {
                    KlEstimator::K1 => 1,
                    KlEstimator::K2 => 2,
                    KlEstimator::K3 => 3,
                },
                k.coef,
            ),
        };
        let [loss, coef, logp, lse] = outs;
        // SAFETY: as `logprobs_fwd`'s (V > 0 asserted above); the [N] inputs are read at rows
        // below N through their strides.
        unsafe { logits_kernels::ppo_fwd_kernel::launch_unchecked::<R>(
            &client,
            row_grid(n),
            CubeDim::new_1d(block),
            address_type,
            vs,
            logits.clone().into_tensor_arg(),
            logits.into_tensor_arg(),
            targets.into_tensor_arg(),
            old_logp.into_tensor_arg(),
            ref_logp.into_tensor_arg(),
            advantages.into_tensor_arg(),
            loss.clone().into_tensor_arg(),
            coef.clone().into_tensor_arg(),
            logp.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            params.clip_low,
            params.clip_high,
            params.dual_clip.unwrap_or(1.0),
            kl_coef,
            n,
            v / vs,
            params.dual_clip.is_some(),
            kl_kind,
            block,
            dtypes,
        ) };
        [loss, coef, logp, lse]
    }

    fn flash_attention_fwd(
        q: CubeTensor<R>,
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        pad: CubeTensor<R>,
        p: FlashParams,
    ) -> (CubeTensor<R>, CubeTensor<R>) {
        let [b, h, tq, d] = q.meta.shape().dims::<4>();
        let out = empty(&q, Shape::new([b, h, tq, d]), q.dtype);
        let lse = empty_f32(&q, Shape::new([b, h, tq]));
        if b * h * tq == 0 {
            return (out, lse);
        }
        let tk = k.meta.shape().dims::<4>()[2];
        let plan = forward_plan(&q, d, p.scale);
        let passes = match plan {
            Forward::Cmma(planes, true) => attention_cmma::emulated_loop_iterations(tk, d, planes),
            Forward::Mma(planes, mtiles, _, _) => attention_mma::loop_iterations(tk, d, planes, mtiles),
            // The tensor-core kernel runs only on GPUs (no loop limit); the count is for the portable one.
            _ => attention_kernels::fwd_loop_iterations(tk, d, tile_rows(d, 64)),
        };
        if !within_loop_limit(&q, passes, "attention forward") {
            record_forward(None);
            return crate::attention_ops::flash_fwd_reference::<Self>(q, k, v, pad, p);
        }
        record_forward(Some(plan));
        let client = q.client.clone();
        let address_type = addr(&[&q, &k, &v, &out]);
        let dtypes = [q.dtype.into(), pad.dtype.into()];
        if let Forward::Mma(planes, mtiles, ldmatrix, emulate) = plan {
            let ([q, k, v], vs) = vector_tiles([q, k, v], d);
            // SAFETY: unchecked (no clamped reads and guarded writes added by CubeCL: they cost more
            // instructions per tile than the products) because the kernel checks every index itself:
            // Q/K/V rows are read only below Tq/Tk (`stage_rows_vec`; `AsyncCopy` clamps rows to Tk − 1), `pad` at the cube's batch,
            // out/lse written only for rows below Tq, at offsets inside the contiguous outputs
            // allocated above; shared tiles are addressed at rows below their row count and columns
            // below the padded row stride. (The lavapipe tests cannot show an out-of-range index:
            // wgpu bounds-checks every access. These guards are the argument.)
            let async_copy = !emulate && async_tiles(&client, vs * q.dtype.size());
            LAST_FORWARD_ASYNC.store(async_copy, std::sync::atomic::Ordering::Relaxed);
            macro_rules! launch {
                ($copy:ty) => {
                    unsafe { attention_mma::flash_fwd_mma_kernel::launch_unchecked::<$copy, R>(
                        &client,
                        // (batch·head, query tile): see `attention_kernels::batch_head`.
                        CubeCount::Static((b * h) as u32, tq.div_ceil(planes * mtiles * attention_mma::ROWS_PER_PLANE) as u32, 1),
                        CubeDim::new_2d(mma_frags::PLANE as u32, planes as u32),
                        address_type,
                        vs,
                        q.into_tensor_arg(),
                        k.into_tensor_arg(),
                        v.into_tensor_arg(),
                        pad.into_tensor_arg(),
                        out.clone().into_tensor_arg(),
                        lse.clone().into_tensor_arg(),
                        p.scale,
                        p.q_offset,
                        p.causal,
                        d,
                        planes,
                        mtiles,
                        ldmatrix,
                        emulate,
                        dtypes,
                    ) }
                };
            }
            if async_copy {
                launch!(tile_copy::AsyncCopy);
            } else {
                launch!(tile_copy::SyncCopy);
            }
            return (out, lse);
        }
        if let Forward::Cmma(planes, emulate) = plan {
            attention_cmma::flash_fwd_cmma_kernel::launch::<R>(
                &client,
                CubeCount::Static(tq.div_ceil(planes * attention_cmma::ROWS_PER_PLANE) as u32, h as u32, b as u32),
                CubeDim::new_2d(attention_cmma::PLANE as u32, planes as u32),
                address_type,
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                pad.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                p.scale,
                p.q_offset,
                p.causal,
                d,
                planes,
                emulate,
                dtypes,
            );
            return (out, lse);
        }
        attention_kernels::flash_fwd_kernel::launch::<R>(
            &client,
            CubeCount::Static(tq.div_ceil(ATTN_UNITS) as u32, h as u32, b as u32),
            CubeDim::new_1d(ATTN_UNITS as u32),
            address_type,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            pad.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            p.scale,
            p.q_offset,
            p.causal,
            d,
            attention_kernels::unroll_rows(d),
            tile_rows(d, 64),
            dtypes,
        );
        (out, lse)
    }

    fn flash_attention_bwd(
        q: CubeTensor<R>,
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        out: CubeTensor<R>,
        lse: CubeTensor<R>,
        dout: CubeTensor<R>,
        pad: CubeTensor<R>,
        p: FlashParams,
    ) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
        let [b, h, tq, d] = q.meta.shape().dims::<4>();
        let [_, kh, tk, _] = k.meta.shape().dims::<4>();
        let plan = backward_plan(&q, d);
        use crate::attention_ops::{BackwardChoice, backward_choice};
        let kernels = match backward_choice() {
            BackwardChoice::Kernels => true,
            BackwardChoice::Reference => false,
            // The register-tile kernels, not emulated (see `backward_choice`).
            BackwardChoice::Auto => matches!(plan, Backward::Mma { emulate: false, .. }),
        };
        if !kernels {
            return crate::attention_ops::flash_bwd_reference::<Self>(q, k, v, out, lse, dout, pad, p);
        }
        let iterations = match plan {
            Backward::Cmma(planes, tile, true) => attention_cmma_bwd::emulated_bwd_loop_iterations(tq, tk, d, planes, tile, h / kh),
            // The fused wide layout runs no dQ kernel: its dQ share adds no loop to the dK/dV kernel's.
            Backward::Mma { layout: BwdLayout::WideFused, dkv_planes, .. } => attention_mma_dkv::loop_iterations(tq, d, dkv_planes),
            Backward::Mma { layout: BwdLayout::Wide, planes, dkv_planes, dq_mtiles, .. } => {
                attention_mma_bwd::loop_iterations(tq, tk, d, planes, dq_mtiles).max(attention_mma_dkv::loop_iterations(tq, d, dkv_planes))
            }
            Backward::Mma { planes, dq_mtiles, .. } => attention_mma_bwd::loop_iterations(tq, tk, d, planes, dq_mtiles),
            // The tensor-core kernels run only on GPUs (no loop limit); the count is for the portable ones.
            _ => attention_kernels::dq_loop_iterations(tk, d, tile_rows(d, 64))
                .max(attention_kernels::dkv_loop_iterations(tq, d, tile_rows(d, ATTN_UNITS), h / kh)),
        };
        if !within_loop_limit(&q, iterations, "attention backward") {
            return crate::attention_ops::flash_bwd_reference::<Self>(q, k, v, out, lse, dout, pad, p);
        }
        let client = q.client.clone();
        let dk = empty(&q, Shape::new([b, kh, tk, d]), k.dtype);
        let dv = empty(&q, Shape::new([b, kh, tk, d]), k.dtype);
        if b * h * tq * tk == 0 {
            return (empty(&q, Shape::new([b, h, tq, d]), q.dtype), dk, dv);
        }
        let (out, dout, lse) = (into_contiguous(out), into_contiguous(dout), into_contiguous(lse));
        let address_type = addr(&[&q, &k, &v, &out, &dout, &dk]);
        let rows = b * h * tq;
        let delta = empty_f32(&q, Shape::new([b, h, tq]));
        let (cube_count, cube_dim) = elemwise_grid(&client, rows);
        // O and dO as vectors (both contiguous: the same vector size fits both).
        let ([out_v, dout_v], dvs) = vector_tiles([out, dout.clone()], d);
        attention_kernels::flash_delta_kernel::launch::<R>(
            &client,
            cube_count,
            cube_dim,
            address_type,
            dvs,
            out_v.into_tensor_arg(),
            dout_v.into_tensor_arg(),
            delta.clone().into_tensor_arg(),
            d,
            attention_kernels::unroll_rows(d),
            dout.dtype.into(),
        );
        let dtypes = [q.dtype.into(), pad.dtype.into()];
        // The dQ kernel's M tiles: 0 where the dK/dV kernel adds dQ.
        let (ran_layout, ran_dq) = match plan {
            Backward::Mma { layout, dq_mtiles, .. } => (layout.code(), if layout.fused_dq() { 0 } else { dq_mtiles }),
            _ => (0, 0),
        };
        LAST_BACKWARD_LAYOUT.store(ran_layout, std::sync::atomic::Ordering::Relaxed);
        LAST_BACKWARD_DQ_MTILES.store(ran_dq, std::sync::atomic::Ordering::Relaxed);
        if let Backward::Mma { layout, planes, dkv_planes, ldmatrix, emulate, dq_mtiles } = plan {
            let fused = layout.fused_dq();
            // The split kernels write dQ; the fused one adds into f32 sums (below), so no dQ-sized
            // buffer is held for it meanwhile.
            let dq = (!fused).then(|| empty(&q, Shape::new([b, h, tq, d]), q.dtype));
            let ([q, k, v, dout], vs) = vector_tiles([q, k, v, dout], d);
            let rows = planes * attention_mma::ROWS_PER_PLANE;
            let cube_dim = CubeDim::new_2d(mma_frags::PLANE as u32, planes as u32);
            // K/V (dQ kernel) and Q/dO (dK/dV kernel) tiles by `cp.async` as in the forward.
            let async_copy = !emulate && async_tiles(&client, vs * q.dtype.size());
            // SAFETY: as the forward's: the kernels read rows only below T (`AsyncCopy` clamps rows
            // to T − 1), lse/delta only for rows below Tq, and write dq/dk/dv (contiguous,
            // allocated above) only for rows below T.
            // Fused: dQ's f32 sums (zeroed; the kernel adds dS K), scaled and cast at the end. Else
            // a one-element stand-in the kernel does not touch (left uninitialised: no fill launch).
            let dq_acc = if fused {
                burn_cubecl::ops::numeric::zeros_client(client.clone(), q.device.clone(), Shape::new([b, h, tq, d]), DType::F32)
            } else {
                empty_f32(&q, Shape::new([1, 1, 1, 1]))
            };
            // One query head per dK/dV cube: with grouped-query attention, each head's dK and dV
            // shares in f32, added up per KV head below; without, dK and dV themselves.
            let (dk_heads, dv_heads) = if h == kh {
                (dk.clone(), dv.clone())
            } else {
                (empty_f32(&q, Shape::new([b, h, tk, d])), empty_f32(&q, Shape::new([b, h, tk, d])))
            };
            let address_type = address_type.max(addr(&[&dk_heads]));
            macro_rules! launch {
                ($copy:ty) => {
                    if let Some(dq) = &dq { unsafe { attention_mma_bwd::flash_dq_mma_kernel::launch_unchecked::<$copy, R>(
                        &client,
                        CubeCount::Static((b * h) as u32, tq.div_ceil(rows * dq_mtiles) as u32, 1),
                        cube_dim,
                        address_type,
                        vs,
                        q.clone().into_tensor_arg(),
                        k.clone().into_tensor_arg(),
                        v.clone().into_tensor_arg(),
                        dout.clone().into_tensor_arg(),
                        lse.clone().into_tensor_arg(),
                        delta.clone().into_tensor_arg(),
                        pad.clone().into_tensor_arg(),
                        dq.clone().into_tensor_arg(),
                        p.scale,
                        p.q_offset,
                        p.causal,
                        d,
                        planes,
                        dq_mtiles,
                        ldmatrix,
                        emulate,
                        dtypes,
                    ) } };
                    if layout.wide() { unsafe { attention_mma_dkv::flash_dkv_wide_kernel::launch_unchecked::<$copy, R>(
                        &client,
                        CubeCount::Static((b * h) as u32, tk.div_ceil(dkv_planes * attention_mma::ROWS_PER_PLANE) as u32, 1),
                        CubeDim::new_2d(mma_frags::PLANE as u32, dkv_planes as u32),
                        address_type,
                        vs,
                        q.clone().into_tensor_arg(),
                        k.clone().into_tensor_arg(),
                        v.clone().into_tensor_arg(),
                        dout.clone().into_tensor_arg(),
                        lse.clone().into_tensor_arg(),
                        delta.clone().into_tensor_arg(),
                        pad.clone().into_tensor_arg(),
                        dk_heads.clone().into_tensor_arg(),
                        dv_heads.clone().into_tensor_arg(),
                        dq_acc.clone().into_tensor_arg(),
                        p.scale,
                        p.q_offset,
                        p.causal,
                        d,
                        dkv_planes,
                        ldmatrix,
                        emulate,
                        fused,
                        [dtypes[0], dtypes[1], dk_heads.dtype.into()],
                    ) } } else { unsafe { attention_mma_bwd::flash_dkv_mma_kernel::launch_unchecked::<$copy, R>(
                        &client,
                        CubeCount::Static((b * h) as u32, tk.div_ceil(rows) as u32, 1),
                        cube_dim,
                        address_type,
                        vs,
                        q.clone().into_tensor_arg(),
                        k.clone().into_tensor_arg(),
                        v.clone().into_tensor_arg(),
                        dout.clone().into_tensor_arg(),
                        lse.clone().into_tensor_arg(),
                        delta.clone().into_tensor_arg(),
                        pad.clone().into_tensor_arg(),
                        dk_heads.clone().into_tensor_arg(),
                        dv_heads.clone().into_tensor_arg(),
                        dq_acc.clone().into_tensor_arg(),
                        p.scale,
                        p.q_offset,
                        p.causal,
                        d,
                        planes,
                        ldmatrix,
                        emulate,
                        fused,
                        [dtypes[0], dtypes[1], dk_heads.dtype.into()],
                    ) } }
                };
            }
            if async_copy {
                launch!(tile_copy::AsyncCopy);
            } else {
                launch!(tile_copy::SyncCopy);
            }
            if h != kh {
                // All four contiguous with D a multiple of 16: the shares' widest vector fits the outputs too.
                let address_type = addr(&[&dk_heads, &dk]);
                let ([dk_heads, dv_heads], gvs) = vector_tiles([dk_heads, dv_heads], d);
                let n = b * kh * tk * d / gvs;
                let (cube_count, cube_dim) = elemwise_grid(&client, n);
                attention_kernels::group_sum_kernel::launch::<R>(
                    &client,
                    cube_count,
                    cube_dim,
                    address_type,
                    gvs,
                    dk_heads.into_tensor_arg(),
                    dv_heads.into_tensor_arg(),
                    dk.clone().into_tensor_arg(),
                    dv.clone().into_tensor_arg(),
                    h / kh,
                    dk.dtype.into(),
                );
            }
            let dq = dq.unwrap_or_else(|| {
                let dq = empty(&q, Shape::new([b, h, tq, d]), q.dtype);
                let address_type = addr(&[&dq_acc]);
                let ([acc, out], svs) = vector_tiles([dq_acc, dq.clone()], d);
                let n = b * h * tq * d / svs;
                let (cube_count, cube_dim) = elemwise_grid(&client, n);
                attention_kernels::scale_cast_kernel::launch::<R>(
                    &client,
                    cube_count,
                    cube_dim,
                    address_type,
                    svs,
                    acc.into_tensor_arg(),
                    out.into_tensor_arg(),
                    p.scale,
                    q.dtype.into(),
                );
                dq
            });
            return (dq, dk, dv);
        }
        let dq = empty(&q, Shape::new([b, h, tq, d]), q.dtype);
        if let Backward::Cmma(planes, tile, emulate) = plan {
            let rows = planes * attention_cmma::ROWS_PER_PLANE;
            let cube_dim = CubeDim::new_2d(attention_cmma::PLANE as u32, planes as u32);
            attention_cmma_bwd::flash_dq_cmma_kernel::launch::<R>(
                &client,
                CubeCount::Static(tq.div_ceil(rows) as u32, h as u32, b as u32),
                cube_dim,
                address_type,
                q.clone().into_tensor_arg(),
                k.clone().into_tensor_arg(),
                v.clone().into_tensor_arg(),
                dout.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                delta.clone().into_tensor_arg(),
                pad.clone().into_tensor_arg(),
                dq.clone().into_tensor_arg(),
                p.scale,
                p.q_offset,
                p.causal,
                d,
                planes,
                tile,
                emulate,
                dtypes,
            );
            attention_cmma_bwd::flash_dkv_cmma_kernel::launch::<R>(
                &client,
                CubeCount::Static(tk.div_ceil(rows) as u32, kh as u32, b as u32),
                cube_dim,
                address_type,
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                dout.into_tensor_arg(),
                lse.into_tensor_arg(),
                delta.into_tensor_arg(),
                pad.into_tensor_arg(),
                dk.clone().into_tensor_arg(),
                dv.clone().into_tensor_arg(),
                p.scale,
                p.q_offset,
                p.causal,
                d,
                planes,
                tile,
                emulate,
                dtypes,
            );
            return (dq, dk, dv);
        }
        attention_kernels::flash_dq_kernel::launch::<R>(
            &client,
            CubeCount::Static(tq.div_ceil(ATTN_UNITS) as u32, h as u32, b as u32),
            CubeDim::new_1d(ATTN_UNITS as u32),
            address_type,
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            dout.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            delta.clone().into_tensor_arg(),
            pad.clone().into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            p.scale,
            p.q_offset,
            p.causal,
            d,
            attention_kernels::unroll_rows(d),
            tile_rows(d, 64),
            dtypes,
        );
        // block_q <= ATTN_UNITS: the first block_q units load the tile's lse and delta.
        attention_kernels::flash_dkv_kernel::launch::<R>(
            &client,
            CubeCount::Static(tk.div_ceil(ATTN_UNITS) as u32, kh as u32, b as u32),
            CubeDim::new_1d(ATTN_UNITS as u32),
            address_type,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            dout.into_tensor_arg(),
            lse.into_tensor_arg(),
            delta.into_tensor_arg(),
            pad.into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            p.scale,
            p.q_offset,
            p.causal,
            d,
            attention_kernels::unroll_rows(d),
            tile_rows(d, ATTN_UNITS),
            dtypes,
        );
        (dq, dk, dv)
    }
}

#[cfg(test)]
mod tests {
    use super::BwdLayout;

    #[test]
    fn backward_layout_codes_round_trip() {
        for l in BwdLayout::ALL {
            assert_ne!(l.code(), 0, "0 marks an unset setting");
            assert_eq!(BwdLayout::from_code(l.code()), Some(l));
        }
        assert_eq!(BwdLayout::from_code(0), None);
        assert_eq!(BwdLayout::ALL.map(BwdLayout::name), ["split", "fused", "wide", "wide-fused"]);
        // Which kernels each layout runs: (dK/dV from the wide kernel, dQ added by the dK/dV kernel).
        assert_eq!(BwdLayout::ALL.map(|l| (l.wide(), l.fused_dq())), [(false, false), (false, true), (true, false), (true, true)]);
    }
}
