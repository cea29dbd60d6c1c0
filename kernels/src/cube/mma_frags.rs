//! Register tiles of PTX `mma.sync.aligned.m16n8k16` (f16/bf16 inputs, f32 accumulators) through
//! CubeCL's manual MMA (`cmma::MmaDefinition`): fragment loads from shared memory, the product,
//! and the quad reductions of the accumulators' rows. Unlike the opaque `cmma` fragments of
//! [`super::cmma_tiles`], every unit knows which elements it holds, so a kernel can run its softmax
//! on the accumulators in registers (FlashAttention-2's layout, Dao 2023, arXiv 2307.08691).
//!
//! Layouts (lane `l` of the 32-unit plane, `g = l / 4`, `t = l % 4`; PTX ISA "Matrix fragments for
//! mma.m16n8k16", the same formulas as CubeCL's CUDA lowering in `cubecl-cpp/src/cuda/processors.rs`):
//! - A `[16, 16]`, 4 registers of 2 elements: register `i` holds row `g + 8·(i % 2)`, columns
//!   `2t + 8·(i / 2)` and the next;
//! - B `[16, 8]` (K × N), 2 registers: register `i` holds rows `2t + 8i` and `2t + 8i + 1`, column `g`;
//! - accumulator `[16, 8]` f32, 2 vectors of 2: vector `i` holds row `g + 8i`, columns `2t`, `2t + 1`.
//!
//! The accumulator of one 16×8 product and the next (columns 8..16) are, as pairs, exactly the A
//! fragment of a 16×16 operand: `P = softmax(S)` goes from `S`'s accumulators to `P V`'s A fragment
//! without leaving registers.
//!
//! Loads go through `ldmatrix` (`ldmatrix = true`, CUDA only) or read their elements one by one at
//! the positions above. With `emulate`, the product and the quad reductions go through shared
//! scratch ([`SCRATCH`] f32 per plane) with cube-wide barriers, so a kernel built on these runs on
//! any runtime (lavapipe in CI; its planes are 8 wide, so nothing here relies on the hardware's
//! plane): the loads, the layouts and everything a kernel does with them are then tested without a
//! GPU. Every call must be made by all units of the cube in uniform control flow.

use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::prelude::*;

/// Copies rows `first..first + rows` of a `[.., T, D]` tensor slice into `sh` from vector `sh_off`
/// on (row stride `ld` elements), zero past `t`, a vector of `vs` elements at a time: the slice's row 0 starts at
/// element `base` and rows are `row_stride` elements apart (both multiples of `vs`; the last
/// dimension is contiguous). All `units` units of the cube take part. The passes are unrolled, so a
/// unit's loads are all in flight before its first shared store, and the row stride is an argument
/// (read once by the kernel, not from the tensor's metadata on every pass).
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn stage_rows_vec<F: Float, N: Size>(
    src: &Tensor<Vector<F, N>>,
    base: usize,
    row_stride: usize,
    first: usize,
    t: usize,
    sh: &mut SharedMemory<Vector<F, N>>,
    sh_off: usize,
    #[comptime] rows: usize,
    #[comptime] ld: usize,
    #[comptime] head_dim: usize,
    #[comptime] vs: usize,
    #[comptime] units: usize,
) {
    let vd = comptime!(head_dim / vs);
    let ldv = comptime!(ld / vs);
    let total = comptime!(rows * vd);
    let unit = UNIT_POS_Y as usize * PLANE + UNIT_POS_X as usize;
    let row0 = (base + first * row_stride) / vs;
    let rs = row_stride / vs;
    if comptime!(units.is_multiple_of(vd)) {
        // A unit keeps its column `c` and steps `units / vd` rows per pass.
        let step = comptime!(units / vd);
        let (r0, c) = (unit / vd, unit % vd);
        #[unroll]
        for p in 0..comptime!(total.div_ceil(units)) {
            let r = r0 + p * step;
            if comptime!((p + 1) * units <= total) || r < rows {
                // Stored from either branch: a vector merged from the two would be built element by
                // element (CubeCL's vectors are structs of scalars in CUDA C++).
                if first + r < t {
                    sh[sh_off + r * ldv + c] = src[row0 + r * rs + c];
                } else {
                    sh[sh_off + r * ldv + c] = Vector::<F, N>::new(F::new(0.0));
                }
            }
        }
    } else {
        let mut i = unit;
        while i < total {
            let r = i / vd;
            let c = i % vd;
            if first + r < t {
                sh[sh_off + r * ldv + c] = src[row0 + r * rs + c];
            } else {
                sh[sh_off + r * ldv + c] = Vector::<F, N>::new(F::new(0.0));
            }
            i += units;
        }
    }
}

/// Units per plane these tiles are laid out for (CUDA's warp), as for the `cmma` kernels.
pub use super::attention_cmma::PLANE;
/// f32 scratch per plane when emulating: A `[16, 16]`, B `[16, 8]` and 32 exchange slots.
pub const SCRATCH: usize = 16 * 16 + 16 * 8 + 32;
const SCRATCH_B: usize = 16 * 16;
const SCRATCH_X: usize = 16 * 16 + 16 * 8;

/// f32 scratch a cube of `planes` planes needs (8, never read, when not emulating: CubeCL wants
/// every shared array non-empty, and 32 bytes keep the arrays after it aligned).
pub const fn scratch_len(planes: usize, emulate: bool) -> usize {
    if emulate { planes * SCRATCH } else { 8 }
}

/// Element `e` of a shared tile held as vectors of `vs` elements.
#[cube]
fn elem<F: Float, N: Size>(sh: &SharedMemory<Vector<F, N>>, e: usize, #[comptime] vs: usize) -> F {
    let v = sh[e / vs];
    // Picked by selects: indexing a vector at a run-time position puts it in local memory on CUDA.
    let j = e % vs;
    let mut x = v[0];
    #[unroll]
    for i in 1..vs {
        x = select(j == i, v[i], x);
    }
    x
}

/// `vs` consecutive elements of a tile row from `start` (a multiple of 8 elements) as the slice
/// `ldmatrix` reads its 16-byte row from.
#[cube]
fn row_slice<F: Float, N: Size>(sh: &SharedMemory<Vector<F, N>>, start: usize, #[comptime] vs: usize) -> Slice<Vector<F, N>> {
    let sv = start / vs;
    sh.slice(sv, sv + comptime!(8 / vs))
}

/// A fragment of the `[16, 16]` block of `sh` whose top-left element is at `off` (row stride `ld`;
/// offsets and strides count elements, `sh` holds vectors of `vs`, which divides 8).
#[cube]
pub fn load_a<F: Float, N: Size>(sh: &SharedMemory<Vector<F, N>>, off: usize, #[comptime] ld: usize, #[comptime] vs: usize, #[comptime] ldmatrix: bool) -> Array<Vector<F, Const<2>>> {
    let lane = UNIT_POS_X as usize;
    let mut a = Array::<Vector<F, Const<2>>>::new(4usize);
    if comptime!(ldmatrix) {
        // Matrices 0..4: rows 0..8 / 8..16 of columns 0..8, then of columns 8..16; lane l gives
        // row l % 8 of matrix l / 8.
        let def = MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);
        let start = off + (lane % 8 + 8 * ((lane / 8) % 2)) * ld + 8 * (lane / 16);
        let regs = def.load_matrix::<Vector<F, N>, Const<2>>(&row_slice::<F, N>(sh, start, vs), MatrixIdent::A, 4usize, false);
        #[unroll]
        for i in 0..4usize {
            a[i] = regs[i];
        }
    } else {
        let (g, t) = (lane / 4, lane % 4);
        #[unroll]
        for i in 0..4usize {
            let at = off + (g + 8 * (i % 2)) * ld + 2 * t + 8 * (i / 2);
            let mut r = Vector::<F, Const<2>>::empty();
            r[0] = elem::<F, N>(sh, at, vs);
            r[1] = elem::<F, N>(sh, at + 1, vs);
            a[i] = r;
        }
    }
    a
}

/// B fragments of `Xᵀ` for two adjacent 8-row blocks of `sh` (`S = Q Kᵀ`: B's column n is row n
/// of K): the block's rows `0..16` from `off` (stride `ld`), columns `0..16`. Registers 0, 1 are
/// the fragment for rows `0..8`, registers 2, 3 for rows `8..16`.
#[cube]
pub fn load_bt_pair<F: Float, N: Size>(sh: &SharedMemory<Vector<F, N>>, off: usize, #[comptime] ld: usize, #[comptime] vs: usize, #[comptime] ldmatrix: bool) -> Array<Vector<F, Const<2>>> {
    let lane = UNIT_POS_X as usize;
    let mut b = Array::<Vector<F, Const<2>>>::new(4usize);
    if comptime!(ldmatrix) {
        // Matrices: (rows 0..8, columns 0..8), (0..8, 8..16), (8..16, 0..8), (8..16, 8..16).
        let def = MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);
        let start = off + (lane % 8 + 8 * (lane / 16)) * ld + 8 * ((lane / 8) % 2);
        let regs = def.load_matrix::<Vector<F, N>, Const<2>>(&row_slice::<F, N>(sh, start, vs), MatrixIdent::B, 4usize, false);
        #[unroll]
        for i in 0..4usize {
            b[i] = regs[i];
        }
    } else {
        let (g, t) = (lane / 4, lane % 4);
        #[unroll]
        for i in 0..4usize {
            // Block i / 2, register i % 2: row g of the block, columns 2t + 8·(i % 2) and the next.
            let at = off + (8 * (i / 2) + g) * ld + 2 * t + 8 * (i % 2);
            let mut r = Vector::<F, Const<2>>::empty();
            r[0] = elem::<F, N>(sh, at, vs);
            r[1] = elem::<F, N>(sh, at + 1, vs);
            b[i] = r;
        }
    }
    b
}

/// B fragments of `X` itself for two adjacent 8-column blocks (`O += P V`: B's column n is column
/// n of V): rows `0..16` of `sh` from `off` (stride `ld`), columns `0..16`. Registers 0, 1 are
/// the fragment for columns `0..8`, registers 2, 3 for columns `8..16`.
#[cube]
pub fn load_b_pair<F: Float, N: Size>(sh: &SharedMemory<Vector<F, N>>, off: usize, #[comptime] ld: usize, #[comptime] vs: usize, #[comptime] ldmatrix: bool) -> Array<Vector<F, Const<2>>> {
    let lane = UNIT_POS_X as usize;
    let mut b = Array::<Vector<F, Const<2>>>::new(4usize);
    if comptime!(ldmatrix) {
        // Transposed loads of (rows 0..8, columns 0..8), (8..16, 0..8), (0..8, 8..16), (8..16, 8..16).
        let def = MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);
        let start = off + (lane % 8 + 8 * ((lane / 8) % 2)) * ld + 8 * (lane / 16);
        let regs = def.load_matrix::<Vector<F, N>, Const<2>>(&row_slice::<F, N>(sh, start, vs), MatrixIdent::B, 4usize, true);
        #[unroll]
        for i in 0..4usize {
            b[i] = regs[i];
        }
    } else {
        let (g, t) = (lane / 4, lane % 4);
        #[unroll]
        for i in 0..4usize {
            // Block i / 2, register i % 2: rows 2t + 8·(i % 2) and the next, column g of the block.
            let at = off + (2 * t + 8 * (i % 2)) * ld + 8 * (i / 2) + g;
            let mut r = Vector::<F, Const<2>>::empty();
            r[0] = elem::<F, N>(sh, at, vs);
            r[1] = elem::<F, N>(sh, at + ld, vs);
            b[i] = r;
        }
    }
    b
}

/// A fragment of `Xᵀ`'s `[16, 16]` block whose top-left element is at `off` of `sh` stored
/// transposed (`sh`'s rows are the product's K index, its columns the M index; row stride `ld`):
/// [`load_b_pair`]'s two fragments are the A fragment's registers in the order 0, 2, 1, 3
/// (register `i` of A holds M row `g + 8·(i % 2)`, K columns `2t + 8·(i / 2)`; of the B pair, block
/// `i / 2` of M, K rows `2t + 8·(i % 2)`).
#[cube]
pub fn load_at<F: Float, N: Size>(sh: &SharedMemory<Vector<F, N>>, off: usize, #[comptime] ld: usize, #[comptime] vs: usize, #[comptime] ldmatrix: bool) -> Array<Vector<F, Const<2>>> {
    let b = load_b_pair::<F, N>(sh, off, ld, vs, ldmatrix);
    let mut a = Array::<Vector<F, Const<2>>>::new(4usize);
    a[0] = b[0];
    a[1] = b[2];
    a[2] = b[1];
    a[3] = b[3];
    a
}

/// For each of `mtiles` A fragments held back to back in `a` (4 registers each), the products with
/// the B pair `b` (registers 0, 1: the first 8-wide block; 2, 3: the next) into the accumulators
/// `c[mt·stride + ci ..]` (two vectors per block): one B pair serves every M tile.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn mma_pair_tiles<F: Float>(
    a: &Array<Vector<F, Const<2>>>,
    b: &Array<Vector<F, Const<2>>>,
    c: &mut Array<Vector<f32, Const<2>>>,
    #[comptime] mtiles: usize,
    #[comptime] stride: usize,
    #[comptime] ci: usize,
    scratch: &mut SharedMemory<f32>,
    #[comptime] emulate: bool,
) {
    #[unroll]
    for mt in 0..mtiles {
        let mut am = Array::<Vector<F, Const<2>>>::new(4usize);
        #[unroll]
        for i in 0..4usize {
            am[i] = a[mt * 4 + i];
        }
        mma::<F>(&am, b[0], b[1], c, comptime!(mt * stride + ci), scratch, emulate);
        mma::<F>(&am, b[2], b[3], c, comptime!(mt * stride + ci + 2), scratch, emulate);
    }
}

/// `c[ci..ci + 2] += a · [b0, b1]`: one `[16, 16] × [16, 8]` product into the accumulator held in
/// vectors `ci`, `ci + 1` of `c`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn mma<F: Float>(
    a: &Array<Vector<F, Const<2>>>,
    b0: Vector<F, Const<2>>,
    b1: Vector<F, Const<2>>,
    c: &mut Array<Vector<f32, Const<2>>>,
    #[comptime] ci: usize,
    scratch: &mut SharedMemory<f32>,
    #[comptime] emulate: bool,
) {
    if comptime!(emulate) {
        let lane = UNIT_POS_X as usize;
        let (g, t) = (lane / 4, lane % 4);
        let base = UNIT_POS_Y as usize * SCRATCH;
        #[unroll]
        for i in 0..4usize {
            let at = base + (g + 8 * (i % 2)) * 16 + 2 * t + 8 * (i / 2);
            let r = a[i];
            scratch[at] = f32::cast_from(r[0]);
            scratch[at + 1] = f32::cast_from(r[1]);
        }
        let bb = base + SCRATCH_B + 2 * t * 8 + g;
        scratch[bb] = f32::cast_from(b0[0]);
        scratch[bb + 8] = f32::cast_from(b0[1]);
        scratch[bb + 64] = f32::cast_from(b1[0]);
        scratch[bb + 72] = f32::cast_from(b1[1]);
        sync_cube();
        #[unroll]
        for i in 0..2usize {
            let mut r = c[ci + i];
            #[unroll]
            for e in 0..2usize {
                let mut s = f32::new(0.0);
                #[unroll]
                for kk in 0..16usize {
                    s += scratch[base + (g + 8 * i) * 16 + kk] * scratch[base + SCRATCH_B + kk * 8 + 2 * t + e];
                }
                r[e] = r[e] + s;
            }
            c[ci + i] = r;
        }
        sync_cube();
    } else {
        let def = MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);
        let mut b = Array::<Vector<F, Const<2>>>::new(2usize);
        b[0] = b0;
        b[1] = b1;
        let mut acc = Array::<Vector<f32, Const<2>>>::new(2usize);
        acc[0] = c[ci];
        acc[1] = c[ci + 1];
        def.execute_inplace(a, &b, &mut acc);
        c[ci] = acc[0];
        c[ci + 1] = acc[1];
    }
}

/// The maximum of `x` over the quad of units holding the same accumulator rows (lanes `4g..4g+4`).
#[cube]
pub fn quad_max(x: f32, scratch: &mut SharedMemory<f32>, #[comptime] emulate: bool) -> f32 {
    let mut y = x;
    if comptime!(emulate) {
        let lane = UNIT_POS_X as usize;
        let q = UNIT_POS_Y as usize * SCRATCH + SCRATCH_X + lane - lane % 4;
        scratch[q + lane % 4] = x;
        sync_cube();
        y = scratch[q].max(scratch[q + 1]).max(scratch[q + 2].max(scratch[q + 3]));
        sync_cube();
    } else {
        y = y.max(plane_shuffle_xor(y, 1u32));
        y = y.max(plane_shuffle_xor(y, 2u32));
    }
    y
}

/// The sum of `x` over the quad (see [`quad_max`]); every unit of the quad gets the same value.
#[cube]
pub fn quad_sum(x: f32, scratch: &mut SharedMemory<f32>, #[comptime] emulate: bool) -> f32 {
    let mut y = x;
    if comptime!(emulate) {
        let lane = UNIT_POS_X as usize;
        let q = UNIT_POS_Y as usize * SCRATCH + SCRATCH_X + lane - lane % 4;
        scratch[q + lane % 4] = x;
        sync_cube();
        y = (scratch[q] + scratch[q + 1]) + (scratch[q + 2] + scratch[q + 3]);
        sync_cube();
    } else {
        y += plane_shuffle_xor(y, 1u32);
        y += plane_shuffle_xor(y, 2u32);
    }
    y
}
