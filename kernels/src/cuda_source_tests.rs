//! The CUDA kernels as the CUDA runtime compiles them, checked on a machine without a GPU.
//!
//! cubecl-cuda turns a kernel into C++ with CubeCL's CUDA code generator, then hands the source to
//! NVRTC on its first launch (`cubecl-cuda`'s `compute/context.rs`). Both steps run without a GPU:
//! - [`tensor_core_kernels_generate_cuda_source`] expands the tensor-core attention kernels at the
//!   shape the GPU runs (bf16, head dim 128) and the PPO / log-prob logits kernels with the
//!   runtime's options and checks the source: the expected WMMA / `mma.sync` / `ldmatrix` calls,
//!   shared arrays at aligned offsets, fast `exp`.
//! - [`tensor_core_kernels_compile_with_nvrtc`] compiles every one of those sources with NVRTC for
//!   sm_80 and sm_90a (the runtime's arch flag, include path and `-lineinfo`, plus ptxas' report),
//!   checks what ptxas says about registers and local memory and, with `nvdisasm`, counts the
//!   instructions of the hottest loop. NVRTC is a host library: `.ci/run` fetches NVIDIA's wheels
//!   from PyPI and points `MLAGENT_NVRTC` at them. Without it the test says so and skips, unless
//!   `MLAGENT_REQUIRE_NVRTC` is set.
//!
//! (The wgpu client only hosts the kernels' expansion; nothing is launched.) For kernel work:
//! `MLAGENT_DUMP_CUDA=<dir>` writes every generated source there (`<name>.sm<arch>.cu`, and the
//! machine code as `<name>-<arch>.sass` where `nvdisasm` is at hand) and
//! `MLAGENT_PRINT_CUDA=1` prints them; `cargo test --workspace --lib cuda_source_tests --
//! --nocapture` prints ptxas' and the machine code's numbers for all of them.

use crate::cube::tile_copy::{AsyncCopy, SyncCopy};
use crate::cube::{attention_cmma, attention_cmma_bwd, attention_mma, attention_mma_bwd, attention_mma_dkv};
// The wgpu device that hosts the kernels' expansion (lavapipe in CI).
use crate::wgpu_tests::device;
use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};
use cubecl::Compiler;
use cubecl::Runtime;
use cubecl::ir::{ElemType, FloatKind, IntKind};
use cubecl::prelude::{AddressType, CubeDim, CubeKernel, ExecutionMode, KernelDefinition, KernelSettings, StorageType, TensorCompilationArg};
use cubecl_cpp::shared::{CompilationOptions, CppSupportedFeatures};
use std::path::{Path, PathBuf};

const HEAD_DIM: usize = 128;
/// Instructions the logits forwards' row loop may take per 16-byte load of 8 bf16 logits.
const LOGITS_FWD_INSTRUCTIONS_PER_LOAD: f64 = 100.0;

/// Which family a kernel belongs to (what its checks are).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Family {
    /// `cmma` (WMMA) fragments through shared memory.
    Cmma,
    /// Register tiles on `mma.sync`, fragments from `ldmatrix`.
    Mma,
    /// Register tiles on `mma.sync`, fragments from element reads (`MLAGENT_ATTENTION=mma-direct`).
    MmaDirect,
    /// The `[N, V]` logits kernels of the PPO loss and log-probs (memory-bound: no tensor cores).
    Logits,
    /// The attention backward's elementwise helpers (D = rowsum(dO∘O), the GQA dK/dV sums).
    Elementwise,
}

struct CudaKernel {
    name: String,
    family: Family,
    /// `mma.sync` (register tiles) or `wmma::mma_sync` (cmma) calls the source must hold.
    mma_calls: usize,
    source: String,
}

/// cubecl-cuda's compilation options on a card of compute capability `sm` (its `runtime.rs`): fast
/// math always, grid constants and fast tanh from sm_70/75, clusters and `elect.sync` from sm_90.
fn runtime_options(sm: u32) -> CompilationOptions {
    CompilationOptions {
        warp_size: 32,
        supports_features: CppSupportedFeatures {
            grid_constants: sm >= 70,
            clusters: sm >= 90,
            fast_math: true,
            fast_tanh: sm >= 75,
            elect_sync: sm >= 90,
        },
    }
}

fn to_cuda(definition: KernelDefinition, sm: u32, mode: ExecutionMode) -> String {
    cubecl::cuda::CudaCompiler::default()
        .compile(definition, &runtime_options(sm), mode, AddressType::U32.unsigned_type())
        .expect("CUDA code generation")
        .to_string()
}

/// Every tensor-core attention kernel (bf16 inputs, i32 padding, head dim 128, launch settings as
/// `cube/mod.rs` launches them), as CUDA source for compute capability `sm`.
fn tensor_core_kernels(dev: &WgpuDevice, sm: u32) -> Vec<CudaKernel> {
    use attention_cmma::flash_fwd_cmma_kernel::FlashFwdCmmaKernel;
    use attention_cmma_bwd::{flash_dkv_cmma_kernel::FlashDkvCmmaKernel, flash_dq_cmma_kernel::FlashDqCmmaKernel};
    use attention_mma::flash_fwd_mma_kernel::FlashFwdMmaKernel;
    use attention_mma_bwd::{flash_dkv_mma_kernel::FlashDkvMmaKernel, flash_dq_mma_kernel::FlashDqMmaKernel};
    use attention_mma_dkv::flash_dkv_wide_kernel::FlashDkvWideKernel;
    let client = WgpuRuntime::client(dev);
    let d = HEAD_DIM;
    let dtypes: [StorageType; 2] = [ElemType::Float(FloatKind::BF16).into(), ElemType::Int(IntKind::I32).into()];
    // The dK/dV kernels write f32 shares (grouped-query attention, as in the benchmarks).
    let dkv_dtypes: [StorageType; 3] = [dtypes[0], dtypes[1], ElemType::Float(FloatKind::F32).into()];
    // Tensors: none in place. After them come the two scalars (scale, q_offset) as `()`.
    let t = || TensorCompilationArg { inplace: None };
    let mut out = Vec::new();
    // `cube/mod.rs` launches the register-tile kernels unchecked (they guard their own indices).
    let mode = |family| if family == Family::Cmma { ExecutionMode::Checked } else { ExecutionMode::Unchecked };
    let mut push = |name: String, family, mma_calls, definition| out.push(CudaKernel { name, family, mma_calls, source: to_cuda(definition, sm, mode(family)) });

    let planes = attention_cmma::PLANES;
    let cmma = KernelSettings::default().cube_dim(CubeDim::new_2d(attention_cmma::PLANE as u32, planes as u32)).address_type(AddressType::U32);
    for causal in [true, false] {
        // Per 64-key tile: S = Q Kᵀ ([16, 128] × [128, 64]: 4 × 8 fragments) and P V (4 × 8).
        let k = FlashFwdCmmaKernel::<WgpuRuntime>::new(cmma.clone(), client.clone(), t(), t(), t(), t(), t(), t(), (), (), causal, d, planes, false, dtypes);
        push(format!("cmma fwd{}", if causal { " causal" } else { "" }), Family::Cmma, 0, k.define());
    }
    let k = FlashDqCmmaKernel::<WgpuRuntime>::new(cmma.clone(), client.clone(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), true, d, planes, 64, false, dtypes);
    // dQ: S and dP ([16, 128] × [128, 64], 8 × 4 each), then dS K ([16, 64] × [64, 128], 4 × 8).
    push("cmma dq causal".into(), Family::Cmma, 8 * 4 * 2 + 4 * 8, k.define());
    let k = FlashDkvCmmaKernel::<WgpuRuntime>::new(cmma, client.clone(), t(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), true, d, planes, 64, false, dtypes);
    // dK/dV: Sᵀ and dPᵀ (8 × 4 each), Pᵀ dO and dSᵀ Q (2 × 4 × 8).
    push("cmma dkv causal".into(), Family::Cmma, 8 * 4 * 2 + 2 * 4 * 8, k.define());

    let planes = attention_mma::PLANES;
    let mma = KernelSettings::default().cube_dim(CubeDim::new_2d(crate::cube::mma_frags::PLANE as u32, planes as u32)).address_type(AddressType::U32);
    // Q, K, V staged 8 bf16 (16 bytes) at a time, as `vector_tiles` picks on CUDA.
    let vector = 8;
    // The forward fills its K/V buffers with `cp.async` on CUDA (`AsyncCopy`); one case through
    // registers (`MLAGENT_MMA_ASYNC=0`) for comparison.
    for (causal, ldmatrix, mtiles, async_copy) in [(true, true, 1, true), (false, true, 1, true), (true, false, 1, true), (true, true, 2, true), (false, true, 2, true), (true, true, 2, false)] {
        let family = if ldmatrix { Family::Mma } else { Family::MmaDirect };
        let (settings, client) = (mma.clone(), client.clone());
        let definition = if async_copy {
            FlashFwdMmaKernel::<AsyncCopy, WgpuRuntime>::new(settings, client, t(), t(), t(), t(), t(), t(), (), (), vector, causal, d, planes, mtiles, ldmatrix, false, dtypes).define()
        } else {
            FlashFwdMmaKernel::<SyncCopy, WgpuRuntime>::new(settings, client, t(), t(), t(), t(), t(), t(), (), (), vector, causal, d, planes, mtiles, ldmatrix, false, dtypes).define()
        };
        // Per 64-key tile and M tile, in m16n8k16 products: S = Q Kᵀ (8 key blocks of 8 × 8 steps
        // of 16 dims) and P V (16 blocks of 8 dims × 4 steps of 16 keys), 64 each.
        let name = format!(
            "mma fwd{}{}{}{}",
            if causal { " causal" } else { "" },
            if ldmatrix { "" } else { " direct" },
            if mtiles == 2 { " m32" } else { "" },
            if async_copy { "" } else { " sync" }
        );
        push(name, family, mtiles * (2 * 4 * 8 + 2 * 4 * 8), definition);
    }
    for ldmatrix in [true, false] {
        let family = if ldmatrix { Family::Mma } else { Family::MmaDirect };
        let suffix = if ldmatrix { "" } else { " direct" };
        // dQ per step: S, dP (4 pairs × 8 steps × 2 each) and dS K (4 steps × 8 pairs × 2).
        let k = FlashDqMmaKernel::<AsyncCopy, WgpuRuntime>::new(mma.clone(), client.clone(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), vector, true, d, planes, 1, ldmatrix, false, dtypes);
        push(format!("mma dq causal{suffix}"), family, 3 * 4 * 8 * 2, k.define());
        // dK/dV per step: Sᵀ, dPᵀ (2 × 8 × 2 each), Pᵀ dO and dSᵀ Q (2 × 8 × 2 each).
        let k = FlashDkvMmaKernel::<AsyncCopy, WgpuRuntime>::new(mma.clone(), client.clone(), t(), t(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), vector, true, d, planes, ldmatrix, false, false, dkv_dtypes);
        push(format!("mma dkv causal{suffix}"), family, 4 * 2 * 8 * 2, k.define());
    }
    // dQ with two M tiles per plane (`MLAGENT_MMA_DQ_ROWS=32`): per 64-key tile two 32-key halves,
    // each S, dP (2 M tiles × 2 pairs × 8 steps × 2) and dS K (2 × 2 steps × 8 pairs × 2).
    let k = FlashDqMmaKernel::<AsyncCopy, WgpuRuntime>::new(mma.clone(), client.clone(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), vector, true, d, planes, 2, true, false, dtypes);
    push("mma dq causal m32".into(), Family::Mma, 2 * 3 * 2 * 2 * 8 * 2, k.define());
    // The fused backward (`MLAGENT_MMA_BWD=fused`): dK/dV's products, then each plane's quarter of
    // dS K ([16, 64] × [64, 64]: 4 steps × 4 pairs × 2).
    let k = FlashDkvMmaKernel::<AsyncCopy, WgpuRuntime>::new(mma.clone(), client.clone(), t(), t(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), vector, true, d, planes, true, false, true, dkv_dtypes);
    push("mma bwd causal fused".into(), Family::Mma, 4 * 2 * 8 * 2 + 4 * 4 * 2, k.define());
    // With 8 planes (`MLAGENT_MMA_BWD_PLANES=8`, 128 keys): each plane's eighth of dS K is
    // [16, 128] × [128, 32] (8 steps × 2 pairs × 2).
    let mma8 = KernelSettings::default().cube_dim(CubeDim::new_2d(crate::cube::mma_frags::PLANE as u32, 8)).address_type(AddressType::U32);
    let k = FlashDkvMmaKernel::<AsyncCopy, WgpuRuntime>::new(mma8.clone(), client.clone(), t(), t(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), vector, true, d, 8, true, false, true, dkv_dtypes);
    push("mma bwd causal fused p8".into(), Family::Mma, 4 * 2 * 8 * 2 + 8 * 2 * 2, k.define());
    // The wide dK/dV kernel (`MLAGENT_MMA_BWD=wide`, 8 planes: 128 keys, FA2's layout): per
    // 64-query step each plane's Sᵀ and dPᵀ ([32, 128] × [128, 32]: 2 M tiles × 2 pairs × 8 steps
    // × 2 each), then Pᵀ dO and dSᵀ Q ([32, 64] × [64, 64]: 4 steps × 2 M tiles × 4 pairs × 2 each).
    let wide = 2 * (2 * 2 * 8 * 2) + 2 * (4 * 2 * 4 * 2);
    for fused in [false, true] {
        let k = FlashDkvWideKernel::<AsyncCopy, WgpuRuntime>::new(mma8.clone(), client.clone(), t(), t(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), vector, true, d, 8, true, false, fused, dkv_dtypes);
        // Fused (`MLAGENT_MMA_BWD=wide-fused`): also each plane's [32, 32] share of dS K ([64, 128]
        // × [128, 128]: 8 steps of 16 keys × 2 M tiles × 2 pairs × 2).
        let (name, calls) = if fused { ("mma bwd causal wide fused", wide + 8 * 2 * 2 * 2) } else { ("mma dkv causal wide", wide) };
        push(name.into(), Family::Mma, calls, k.define());
    }
    out.extend(logits_kernels(dev, sm));
    if let Some(dir) = std::env::var_os("MLAGENT_DUMP_CUDA") {
        for k in &out {
            let path = Path::new(&dir).join(format!("{}.sm{sm}.cu", k.name.replace(' ', "_")));
            std::fs::write(&path, &k.source).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
    }
    out
}

/// The `[N, V]` logits kernels (bf16 logits read 8 at a time, i32 targets, 256-unit row cubes, as
/// `cube/mod.rs` launches them at a 152064-entry vocabulary), all launched unchecked; then the
/// attention backward's elementwise kernels (launched checked).
fn logits_kernels(dev: &WgpuDevice, sm: u32) -> Vec<CudaKernel> {
    use crate::cube::attention_kernels::{flash_delta_kernel::FlashDeltaKernel, group_sum_kernel::GroupSumKernel, scale_cast_kernel::ScaleCastKernel};
    use crate::cube::logits_kernels::{
        logprobs_fwd_kernel::LogprobsFwdKernel, ppo_fwd_kernel::PpoFwdKernel, softmax_grad_kernel::SoftmaxGradKernel,
        target_grad_kernel::TargetGradKernel,
    };
    let client = WgpuRuntime::client(dev);
    let bf16: StorageType = ElemType::Float(FloatKind::BF16).into();
    let dtypes: [StorageType; 2] = [bf16, ElemType::Int(IntKind::I32).into()];
    let t = || TensorCompilationArg { inplace: None };
    let rows = KernelSettings::default().cube_dim(CubeDim::new_1d(256)).address_type(AddressType::U32);
    let elementwise = KernelSettings::default().cube_dim(CubeDim::new_1d(256)).address_type(AddressType::U32);
    let cuda = |definition| to_cuda(definition, sm, ExecutionMode::Unchecked);
    let kernel = |name: &str, family, source| CudaKernel { name: name.into(), family, mma_calls: 0, source };
    let k = |name: &str, source| kernel(name, Family::Logits, source);
    let elementwise_kernel = |name: &str, definition| kernel(name, Family::Elementwise, to_cuda(definition, sm, ExecutionMode::Checked));
    vec![
        // logits (vectors and scalars), targets, logp, lse; rows, vecs; vector width, block.
        k("logprobs fwd", cuda(LogprobsFwdKernel::<WgpuRuntime>::new(rows.clone(), client.clone(), t(), t(), t(), t(), t(), (), (), 8, 256, dtypes).define())),
        // + old, ref, advantages, loss, coef; clip low/high, dual c, β; dual clip on, k3.
        k(
            "ppo fwd",
            cuda(
                PpoFwdKernel::<WgpuRuntime>::new(rows, client.clone(), t(), t(), t(), t(), t(), t(), t(), t(), t(), t(), (), (), (), (), (), (), 8, true, 3, 256, dtypes)
                    .define(),
            ),
        ),
        k("softmax grad", cuda(SoftmaxGradKernel::<WgpuRuntime>::new(elementwise.clone(), client.clone(), t(), t(), t(), t(), (), 8, bf16).define())),
        k("target grad", cuda(TargetGradKernel::<WgpuRuntime>::new(elementwise.clone(), client.clone(), t(), t(), t(), t(), t(), dtypes).define())),
        // O, dO (8-lane vectors), delta; head dim 128, not unrolled (as launched at D 128).
        elementwise_kernel("attention delta", FlashDeltaKernel::<WgpuRuntime>::new(elementwise.clone(), client.clone(), t(), t(), t(), 8, 128, false, bf16).define()),
        // The dK, dV f32 shares (4-lane vectors), dK, dV; 7 heads per group (issue 3's 28 / 4).
        elementwise_kernel("attention group sum", GroupSumKernel::<WgpuRuntime>::new(elementwise.clone(), client.clone(), t(), t(), t(), t(), 4, 7, bf16).define()),
        // The fused backwards' f32 dQ sums (4-lane vectors), scaled and cast to bf16.
        elementwise_kernel("attention dq scale cast", ScaleCastKernel::<WgpuRuntime>::new(elementwise, client, t(), t(), (), 4, bf16).define()),
    ]
}

/// The source's structure: the tensor-core calls each kernel is built from, shared arrays aligned,
/// in the register-tile kernels the fragment loads, quad shuffles and fast `exp`, and fast `exp` in
/// the logits kernels.
#[test]
fn tensor_core_kernels_generate_cuda_source() {
    let Some(dev) = device() else { return };
    let kernels = tensor_core_kernels(&dev, 90);
    assert_eq!(kernels.len(), 19 + 4 + 3);
    for k in &kernels {
        let (name, source) = (&k.name, &k.source);
        if std::env::var_os("MLAGENT_PRINT_CUDA").is_some() {
            eprintln!("{source}");
        }
        match k.family {
            Family::Cmma => shared_arrays_aligned(source, 32),
            Family::Mma | Family::MmaDirect => shared_arrays_aligned(source, 16),
            Family::Logits | Family::Elementwise => {}
        }
        // A helper is defined once, then called.
        let calls = |f: &str| source.matches(f).count().saturating_sub(1);
        match k.family {
            Family::Cmma => {
                assert!(source.contains("store_matrix_sync"), "{name}: no WMMA stores");
                if k.mma_calls > 0 {
                    assert_eq!(source.matches("mma_sync").count(), k.mma_calls, "{name}: WMMA products");
                } else {
                    assert!(source.contains("mma_sync"), "{name}: no WMMA products");
                }
            }
            Family::Mma | Family::MmaDirect => {
                assert_eq!(calls("__mma_m16n8k16___nv_bfloat16___nv_bfloat16_float("), k.mma_calls, "{name}: mma.sync calls");
                assert_eq!(source.contains("ldmatrix"), k.family == Family::Mma, "{name}: ldmatrix use");
                let async_copy = !name.ends_with("sync");
                assert_eq!(source.contains("__cp_async_shared_global<16>"), async_copy, "{name}: 16-byte cp.async");
                assert_eq!(source.contains("atomicAdd"), name.contains("fused"), "{name}: atomic adds (dQ of the fused backward)");
                if name.contains("wide") {
                    // Per step: Sᵀ and dPᵀ (K or V as A for 2 M tiles, Q or dO as B for 2 pairs, × 8
                    // steps of 16 dims) and Pᵀ/dSᵀ as A (2 M tiles × 4 steps of 16 queries), each
                    // once per product; dO and Q as B, transposed (4 pairs × 4 steps, × 2). Fused,
                    // also dSᵀ as A and K as B, both transposed (8 steps × 2 M tiles or 2 pairs).
                    let dq = if name.contains("fused") { 8 * 2 + 8 * 2 } else { 0 };
                    assert_eq!(calls("__ldmatrix_m8n8___nv_bfloat16_4x("), 2 * (8 * 2 + 8 * 2) + 2 * (2 * 4), "{name}: ldmatrix");
                    assert_eq!(calls("__ldmatrix_m8n8___nv_bfloat16_4x_trans("), 2 * 4 * 4 + dq, "{name}: ldmatrix.trans");
                }
            }
            // Fast exp: the accurate one costs several times the instructions per logit.
            Family::Logits => assert!(source.contains("__expf(") && !source.contains(" exp("), "{name}: exp not compiled to __expf"),
            // 16-byte loads: O and dO as 8 bf16 lanes.
            Family::Elementwise if name == "attention delta" => assert!(source.contains("__nv_bfloat16_8"), "{name}: O and dO not read as 8-lane vectors"),
            Family::Elementwise => {}
        }
        if name.starts_with("mma fwd") {
            assert!(source.contains("__shfl_xor_sync"), "{name}: no quad shuffles");
            assert!(!source.contains(" exp("), "{name}: accurate exp");
            if k.family == Family::Mma {
                // 2^x through `__powf(2, x)` (NVRTC folds it to `ex2.approx`), not `__expf`'s extra multiply.
                assert!(source.contains("__powf(") && !source.contains("__expf("), "{name}: P not computed as 2^x");
                // Q: one x4 load per 16 columns and M tile (once; per key tile with two M tiles, as
                // the loop body appears once in the source either way); K: one per pair of 8-key
                // blocks per 16-wide step, shared by the M tiles; V likewise.
                let mtiles = if name.contains(" m32") { 2 } else { 1 };
                assert_eq!(calls("__ldmatrix_m8n8___nv_bfloat16_4x("), 8 * mtiles + 4 * 8, "{name}: ldmatrix (Q, K)");
                assert_eq!(calls("__ldmatrix_m8n8___nv_bfloat16_4x_trans("), 4 * 8, "{name}: ldmatrix.trans (V)");
            }
        }
    }
}

/// WMMA loads and stores need 32-byte aligned pointers, `ldmatrix` rows and `cp.async` 16-byte
/// copies 16-byte aligned ones. CubeCL packs a kernel's shared arrays into one dynamic buffer at the
/// byte offsets it writes as `&dynamic_shared_mem[N]` (tile offsets inside each array are multiples
/// of `align` bytes by the kernels' strides; the `mma` kernels' two 8-byte mbarriers come first):
/// every `N` must be a multiple of `align`.
fn shared_arrays_aligned(source: &str, align: usize) {
    let offsets: Vec<usize> = source
        .split("&dynamic_shared_mem[")
        .skip(1)
        .map(|rest| rest[..rest.find(']').expect("closing bracket")].parse().expect("a byte offset"))
        .collect();
    assert!(!offsets.is_empty(), "no shared arrays found in\n{source}");
    assert!(offsets.iter().all(|o| o % align == 0), "shared arrays at byte offsets {offsets:?}: not all {align}-byte aligned");
}

/// NVRTC, loaded at run time from a CUDA toolkit or NVIDIA's PyPI wheels (`lib/libnvrtc.so.*` and
/// `include/` under one folder). Only what compiling needs: create, compile, read the log.
struct Nvrtc {
    lib: libloading::Library,
    include: PathBuf,
    version: (i32, i32),
    /// `bin/nvdisasm` beside `lib/`, when there.
    nvdisasm: Option<PathBuf>,
}

type Program = *mut std::ffi::c_void;

impl Nvrtc {
    /// The folder: `MLAGENT_NVRTC`, else (as cubecl-cuda looks) `CUDA_PATH`, else `/usr/local/cuda`.
    fn find() -> Result<Self, String> {
        let root = std::env::var_os("MLAGENT_NVRTC").or_else(|| std::env::var_os("CUDA_PATH")).map_or_else(|| PathBuf::from("/usr/local/cuda"), PathBuf::from);
        let lib = ["lib", "lib64"]
            .iter()
            .filter_map(|d| std::fs::read_dir(root.join(d)).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libnvrtc.so")))
            .min()
            .ok_or_else(|| format!("no lib/libnvrtc.so* under {}", root.display()))?;
        let include = root.join("include");
        if !include.join("cuda_bf16.h").exists() {
            return Err(format!("no include/cuda_bf16.h under {}", root.display()));
        }
        // SAFETY: loading NVIDIA's NVRTC library runs its initialisers, which have no preconditions.
        let lib = unsafe { libloading::Library::new(&lib) }.map_err(|e| format!("loading {}: {e}", lib.display()))?;
        let mut version = (0, 0);
        // SAFETY: `nvrtcVersion(int*, int*)` per NVRTC's header; both pointers are valid.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn(*mut i32, *mut i32) -> i32> = lib.get(b"nvrtcVersion").map_err(|e| e.to_string())?;
            f(&mut version.0, &mut version.1);
        }
        let nvdisasm = Some(root.join("bin/nvdisasm")).filter(|p| p.is_file());
        Ok(Nvrtc { lib, include, version, nvdisasm })
    }

    /// `cubin` as `nvdisasm` prints it; `None` without `nvdisasm`.
    fn disassemble(&self, cubin: &[u8], name: &str) -> Option<String> {
        let tool = self.nvdisasm.as_ref()?;
        let path = std::env::temp_dir().join(format!("mlagent-{}-{name}.cubin", std::process::id()));
        std::fs::write(&path, cubin).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let out = std::process::Command::new(tool).arg(&path).output().unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "{} {name}: {}", tool.display(), String::from_utf8_lossy(&out.stderr));
        let sass = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(dir) = std::env::var_os("MLAGENT_DUMP_CUDA") {
            let path = Path::new(&dir).join(format!("{name}.sass"));
            std::fs::write(&path, &sass).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        Some(sass)
    }

    /// Compiles `source` with cubecl-cuda's options for `arch` plus `--ptxas-options=-v`: the log
    /// (ptxas' report) and the machine code (CUBIN) on success, the log as the error otherwise.
    fn compile(&self, source: &str, arch: &str) -> Result<(String, Vec<u8>), String> {
        use std::ffi::{CString, c_char};
        // As cubecl-cuda: CUDA's include/, and include/cccl where it exists (CUDA 13 keeps CCCL's
        // headers there; the register-tile forward's `cp.async` barriers need `cuda/barrier`).
        let cccl = self.include.join("cccl");
        let options: Vec<CString> = [
            Some(format!("--gpu-architecture={arch}")),
            Some(format!("--include-path={}", self.include.display())),
            cccl.exists().then(|| format!("--include-path={}", cccl.display())),
            Some("-lineinfo".into()),
            Some("--ptxas-options=-v".into()),
        ]
        .into_iter()
        .flatten()
        .map(|o| CString::new(o).expect("no NUL in options"))
        .collect();
        let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let source = CString::new(source).map_err(|_| "NUL in the source".to_string())?;
        // SAFETY: the signatures are NVRTC's (nvrtc.h); every pointer passed is valid for the call,
        // the program is destroyed once, and the log buffer has the size NVRTC reported.
        unsafe {
            let sym = |name: &[u8]| self.lib.get::<*const ()>(name).map(|s| *s).map_err(|e| e.to_string());
            let create: unsafe extern "C" fn(*mut Program, *const c_char, *const c_char, i32, *const *const c_char, *const *const c_char) -> i32 =
                std::mem::transmute(sym(b"nvrtcCreateProgram")?);
            let compile: unsafe extern "C" fn(Program, i32, *const *const c_char) -> i32 = std::mem::transmute(sym(b"nvrtcCompileProgram")?);
            let log_size: unsafe extern "C" fn(Program, *mut usize) -> i32 = std::mem::transmute(sym(b"nvrtcGetProgramLogSize")?);
            let get_log: unsafe extern "C" fn(Program, *mut c_char) -> i32 = std::mem::transmute(sym(b"nvrtcGetProgramLog")?);
            let destroy: unsafe extern "C" fn(*mut Program) -> i32 = std::mem::transmute(sym(b"nvrtcDestroyProgram")?);
            let cubin_size: unsafe extern "C" fn(Program, *mut usize) -> i32 = std::mem::transmute(sym(b"nvrtcGetCUBINSize")?);
            let get_cubin: unsafe extern "C" fn(Program, *mut c_char) -> i32 = std::mem::transmute(sym(b"nvrtcGetCUBIN")?);
            let mut program: Program = std::ptr::null_mut();
            let rc = create(&mut program, source.as_ptr(), c"kernel.cu".as_ptr(), 0, std::ptr::null(), std::ptr::null());
            if rc != 0 {
                return Err(format!("nvrtcCreateProgram failed ({rc})"));
            }
            let rc = compile(program, pointers.len() as i32, pointers.as_ptr());
            let mut n = 0usize;
            log_size(program, &mut n);
            let mut log = vec![0u8; n.max(1)];
            get_log(program, log.as_mut_ptr().cast());
            let mut cubin = Vec::new();
            if rc == 0 {
                let mut n = 0usize;
                cubin_size(program, &mut n);
                cubin = vec![0u8; n];
                get_cubin(program, cubin.as_mut_ptr().cast());
            }
            destroy(&mut program);
            let log = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(log.len())]).into_owned();
            if rc == 0 { Ok((log, cubin)) } else { Err(log) }
        }
    }
}

/// What ptxas reported for a kernel's entry function.
#[derive(Debug, Default, PartialEq)]
struct PtxasReport {
    registers: usize,
    /// Local memory per thread: arrays ptxas could not keep in registers, and spills.
    stack_bytes: usize,
    spill_stores: usize,
    spill_loads: usize,
}

/// Reads ptxas' `-v` lines: `… N bytes stack frame, N bytes spill stores, N bytes spill loads` and
/// `… Used N registers, …`.
fn ptxas_report(log: &str) -> Option<PtxasReport> {
    let number_before = |line: &str, what: &str| -> Option<usize> {
        let head = &line[..line.find(what)?];
        head.split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty())?.parse().ok()
    };
    let mut report = PtxasReport::default();
    let (mut frame, mut used) = (false, false);
    for line in log.lines() {
        if line.contains("bytes stack frame") {
            report.stack_bytes = number_before(line, " bytes stack frame")?;
            report.spill_stores = number_before(line, " bytes spill stores")?;
            report.spill_loads = number_before(line, " bytes spill loads")?;
            frame = true;
        }
        if line.contains(" registers") && line.contains("Used ") {
            report.registers = number_before(line, " registers")?;
            used = true;
        }
    }
    (frame && used).then_some(report)
}

/// The instructions of a kernel's hottest loop in machine code (SASS, as `nvdisasm` prints it):
/// of the loops (a label, and a later branch back to it), the one with the most instructions whose
/// opcode starts with `key` (`HMMA` for tensor-core operations, `LDG` for global loads), and how
/// many those are.
#[derive(Debug, PartialEq)]
struct HotLoop {
    instructions: usize,
    key: usize,
    /// Local-memory loads and stores (`LDL`, `STL`: spills) in the loop.
    local: usize,
    /// `MUFU.LG2`s in the loop (a `2^x` written `powf(2, x)` that NVRTC did not fold has one).
    log2: usize,
}

fn hot_loop(sass: &str, key: &str) -> Option<HotLoop> {
    // (label or None, opcode) per line, in program order.
    let mut labels = std::collections::HashMap::new();
    let mut code: Vec<(String, Option<String>)> = Vec::new();
    for line in sass.lines() {
        let line = line.trim();
        if let Some(label) = line.strip_suffix(':').filter(|l| l.starts_with(".L_x_")) {
            labels.insert(label.to_string(), code.len());
            continue;
        }
        let Some(rest) = line.strip_prefix("/*").and_then(|r| r.split_once("*/")).map(|(_, r)| r.trim()) else { continue };
        let rest = rest.trim_end_matches(';').trim();
        // Skip data (`.byte`, `.dword`) and a guard predicate (`@P0`, `@!UP1`).
        let mut words = rest.split_whitespace().filter(|w| !w.starts_with('@'));
        let Some(op) = words.next().filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase())) else { continue };
        let target = op.starts_with("BRA").then(|| rest.split('`').nth(1).map(|t| t.trim_matches(|c| c == '(' || c == ')').to_string())).flatten();
        code.push((op.to_string(), target));
    }
    code.iter()
        .enumerate()
        .filter_map(|(end, (_, target))| {
            let start = *labels.get(target.as_ref()?)?;
            (start <= end).then(|| {
                let body = &code[start..=end];
                let count = |p: &[&str]| body.iter().filter(|(op, _)| p.iter().any(|p| op.starts_with(p))).count();
                HotLoop { instructions: body.len(), key: count(&[key]), local: count(&["LDL", "STL"]), log2: count(&["MUFU.LG2"]) }
            })
        })
        .max_by_key(|l| l.key)
}

#[test]
fn hot_loop_finds_the_loop_with_the_most_hmma() {
    let sass = "        /*0000*/                   STL [R1], R7 ;\n.L_x_1:\n        /*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n        /*0020*/               @P0 BRA `(.L_x_1) ;\n.L_x_2:\n        /*0030*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n        /*0040*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n        /*0050*/                   LDL.LU R2, [R1] ;\n        /*0060*/              @!P1 BRA `(.L_x_2) ;\n        /*0070*/                   EXIT ;\n        /*0080*/                   BRA `(.L_x_3);\n.L_x_3:\n";
    assert_eq!(hot_loop(sass, "HMMA"), Some(HotLoop { instructions: 4, key: 2, local: 1, log2: 0 }));
    assert_eq!(hot_loop(sass, "LDL"), Some(HotLoop { instructions: 4, key: 1, local: 1, log2: 0 }));
    assert_eq!(hot_loop("        /*0000*/                   EXIT ;\n", "HMMA"), None);
}

#[test]
fn ptxas_report_reads_the_verbose_lines() {
    let log = "ptxas info    : 0 bytes gmem\nptxas info    : Compiling entry function 'k' for 'sm_90a'\nptxas info    : Function properties for k\nptxas         .     16 bytes stack frame, 12 bytes spill stores, 36 bytes spill loads\nptxas info    : Used 255 registers, used 1 barriers, 16 bytes cumulative stack size\n";
    assert_eq!(ptxas_report(log), Some(PtxasReport { registers: 255, stack_bytes: 16, spill_stores: 12, spill_loads: 36 }));
    assert_eq!(ptxas_report("ptxas info    : Used 8 registers\n"), None, "no stack-frame line");
}

/// NVRTC compiles every tensor-core kernel and the logits kernels for sm_80 (A100) and sm_90a
/// (H100/H200) as the runtime would, and the register-tile kernels that use `ldmatrix` (the ones
/// `MLAGENT_ATTENTION=mma` runs) stay in registers: ptxas reports at most a few spilled words, and
/// none is touched in the hottest loop except with two M tiles per plane or 8 fused planes (the
/// split or the wide layout). Where `nvdisasm` is at hand (`bin/`
/// beside NVRTC's `lib/`), the machine code is read too: the attention kernels' hottest loop holds
/// the expected tensor-core instructions and at most a budget of other instructions per `HMMA`
/// (softmax, fragment loads, staging, addresses), and the logits forwards' row loop at most a
/// budget per 16-byte load: static counts, not timings, that catch the regressions a GPU would show
/// as lost throughput (bounds-checked reads, vectors built element by element, per-score branches:
/// the attention forward had 12.3 instructions per `HMMA` with those, now 7). Prints the numbers.
#[test]
fn tensor_core_kernels_compile_with_nvrtc() {
    let require = std::env::var_os("MLAGENT_REQUIRE_NVRTC").is_some();
    let nvrtc = match Nvrtc::find() {
        Ok(n) => n,
        Err(why) if require => panic!("MLAGENT_REQUIRE_NVRTC is set but NVRTC is unusable: {why}"),
        Err(why) => {
            eprintln!("skipping: {why} (set MLAGENT_NVRTC to a folder with lib/libnvrtc.so* and include/; .ci/run fetches one)");
            return;
        }
    };
    assert!(nvrtc.nvdisasm.is_some() || !require, "MLAGENT_REQUIRE_NVRTC is set but there is no bin/nvdisasm beside NVRTC");
    let Some(dev) = device() else { return };
    eprintln!("NVRTC {}.{}{}", nvrtc.version.0, nvrtc.version.1, if nvrtc.nvdisasm.is_none() { " (no nvdisasm: machine code not read)" } else { "" });
    eprintln!("{:<22} {:>7} {:>5} {:>6} {:>8} {:>8} {:>10} {:>10} {:>9} {:>10}", "kernel", "arch", "regs", "stack", "spill-st", "spill-ld", "loop-instr", "HMMA|LDG", "per-each", "loop-local");
    let mut failures = Vec::new();
    for (sm, arch) in [(80, "sm_80"), (90, "sm_90a")] {
        for k in tensor_core_kernels(&dev, sm) {
            let (log, cubin) = match nvrtc.compile(&k.source, arch) {
                Ok(out) => out,
                Err(log) => {
                    failures.push(format!("{} ({arch}) does not compile:\n{}", k.name, log.lines().filter(|l| l.contains("error")).take(10).collect::<Vec<_>>().join("\n")));
                    continue;
                }
            };
            let r = ptxas_report(&log).unwrap_or_else(|| panic!("{} ({arch}): no ptxas report in\n{log}", k.name));
            // The attention kernels' loop with the tensor-core operations; the logits forwards'
            // row loop (the one with the global loads); the elementwise backward has no loop.
            let key = if k.family == Family::Logits { "LDG" } else { "HMMA" };
            let hot = nvrtc.disassemble(&cubin, &format!("{}-{arch}", k.name.replace(' ', "_"))).and_then(|sass| hot_loop(&sass, key));
            let (li, lk, per, ll) = hot.as_ref().map_or(("-".into(), "-".into(), "-".into(), "-".into()), |h| {
                (h.instructions.to_string(), h.key.to_string(), format!("{:.2}", h.instructions as f64 / h.key.max(1) as f64), h.local.to_string())
            });
            eprintln!("{:<22} {:>7} {:>5} {:>6} {:>8} {:>8} {:>10} {:>10} {:>9} {:>10}", k.name, arch, r.registers, r.stack_bytes, r.spill_stores, r.spill_loads, li, lk, per, ll);
            match k.family {
                Family::Mma => {
                    // Local memory: ptxas's totals catch an array put there (hundreds of bytes, as
                    // the `direct` variants), the machine code where the spills are. A word spilled
                    // outside the key loop costs once per cube (the fused backward on sm_80, NVRTC
                    // 13.5: the pad length, stored before the loop and reloaded after it); inside, once
                    // per tile. Only kernels that take all 255 registers may spill in the loop: two
                    // M tiles per plane (NVRTC 13.5: none now; earlier builds up to 5 accesses per key
                    // tile against ~1430 instructions), the 8-plane fused backward and the wide fused
                    // one (NVRTC 13.5, sm_90a: one 4-byte reload per step against ~1500 instructions).
                    // The register-load variant (`MLAGENT_MMA_ASYNC=0`, a diagnostic beside the
                    // default `cp.async` one) is not held to it: at 255 registers on sm_80 it
                    // spilled 84 bytes once lazy rescaling moved the correction into a branch.
                    let diagnostic = k.name.ends_with(" sync");
                    let limit = 64;
                    if !diagnostic && (r.stack_bytes > limit || r.spill_stores > limit || r.spill_loads > limit) {
                        failures.push(format!("{} ({arch}): {r:?}: more local memory than {limit} bytes", k.name));
                    }
                    let loop_local = if k.name.contains(" m32") || k.name.ends_with(" p8") || k.name.contains("wide fused") { 8 } else { 0 };
                    if let Some(h) = hot.as_ref().filter(|h| !diagnostic && h.local > loop_local) {
                        failures.push(format!("{} ({arch}): {} local-memory accesses in the hottest loop (at most {loop_local})", k.name, h.local));
                    }
                    // P = 2^x: `__powf(2, x)` must fold to `ex2.approx` alone (an unfolded one
                    // adds a `MUFU.LG2` and a multiply per score).
                    if let Some(h) = hot.as_ref().filter(|h| h.log2 > 0) {
                        failures.push(format!("{} ({arch}): {} MUFU.LG2 in the hottest loop: powf(2, x) not folded to ex2", k.name, h.log2));
                    }
                    match hot {
                        // Today (NVRTC 13.5): forward 5.2–6.7, dQ 4.2–4.6 and dK/dV 4.8–5.2
                        // instructions per HMMA (2^x for P: one multiply per score less than `exp`).
                        Some(h) => {
                            // The fused backwards: 5.10 (split layout) and 4.72 (wide) on sm_90a
                            // (their dQ share adds dS stores or loads and atomic adds to dK/dV's loop).
                            let budget = if k.name.starts_with("mma fwd") {
                                8.0
                            } else if k.name.contains("fused") {
                                6.0
                            } else {
                                5.5
                            };
                            if h.key != k.mma_calls || h.instructions as f64 > budget * h.key as f64 {
                                failures.push(format!("{} ({arch}): hottest loop {h:?}, expected {} HMMA and at most {budget} instructions per HMMA", k.name, k.mma_calls));
                            }
                        }
                        None if nvrtc.nvdisasm.is_some() => failures.push(format!("{} ({arch}): no loop with HMMA in its machine code", k.name)),
                        None => {}
                    }
                }
                Family::Logits | Family::Elementwise => {
                    if r.stack_bytes > 0 || r.spill_stores > 0 || r.spill_loads > 0 {
                        failures.push(format!("{} ({arch}): {r:?}: local memory", k.name));
                    }
                    if let Some(h) = hot.filter(|_| k.family == Family::Logits && k.name.ends_with("fwd")) {
                        // Per 16-byte load (8 logits): convert, max, 8 exps, sums, the rescale. Today
                        // (NVRTC 13.5) 86 (sm_80) and 89 (sm_90a); launched checked and with the
                        // accurate exp, 122 (sm_80).
                        let budget = LOGITS_FWD_INSTRUCTIONS_PER_LOAD;
                        if h.instructions as f64 > budget * h.key.max(1) as f64 {
                            failures.push(format!("{} ({arch}): row loop {h:?}, more than {budget} instructions per 16-byte load", k.name));
                        }
                    }
                }
                Family::Cmma | Family::MmaDirect => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
