//! How the register-tile kernels' K/V tiles reach shared memory: a unit's share of a tile is
//! either loaded into registers and stored ([`SyncCopy`], every runtime) or handed to the copy
//! engine with `cp.async` ([`AsyncCopy`], CUDA sm_80+), whose copies land while the unit computes
//! on the other buffer (FlashAttention-2's pipelining of K/V loads, Dao 2023, arXiv 2307.08691 §3.3;
//! NVIDIA's "asynchronous data copies", CUDA C++ Programming Guide §7.27).
//!
//! A kernel keeps two buffers per operand and one [`TileCopy::Fence`] per buffer. Per tile:
//! 1. `sync_cube()`: every unit is done reading the other buffer (and, for [`SyncCopy`], this
//!    buffer's rows stored in the previous step are visible);
//! 2. [`TileCopy::copy_rows`] the next tile into the other buffer, then [`TileCopy::commit`] its fence;
//! 3. [`TileCopy::wait`] on this buffer's fence (for [`AsyncCopy`]: its copies have landed);
//! 4. compute on this buffer.
//!
//! Every call is made by all units of the cube in uniform control flow.

use super::mma_frags::{PLANE, stage_rows_vec};
use cubecl::prelude::barrier::{Barrier, copy_async};
use cubecl::prelude::*;

/// One way of filling shared tiles; see the module doc for the protocol.
#[cube]
pub trait TileCopy: Send + Sync + 'static {
    /// What a unit waits on for one buffer's copies.
    type Fence: CubeType + Clone;

    /// A fence for one buffer. Every unit calls it; the cube must synchronise (`sync_cube`) before
    /// any unit uses the fence.
    fn fence() -> Self::Fence;

    /// Rows `first..first + rows` of a `[.., T, D]` tensor slice (row 0 at element `base`, rows
    /// `row_stride` elements apart, both multiples of `vs`, the last dimension contiguous) into
    /// `sh` from vector `sh_off` on, with a row stride of `ld` elements. Rows at or past `t` are
    /// zero ([`SyncCopy`]) or repeat row `t − 1` ([`AsyncCopy`]): callers mask them. `t ≥ 1`.
    #[allow(clippy::too_many_arguments)]
    fn copy_rows<F: Float, N: Size>(
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
    );

    /// Ties this unit's `copy_rows` calls since the last commit to `fence`.
    fn commit(fence: &Self::Fence);

    /// Returns once every unit's copies committed to `fence` have landed and are visible to this
    /// unit ([`SyncCopy`]: at once; the cube barrier of step 1 made the stores visible).
    fn wait(fence: &Self::Fence);
}

/// Loads into registers, then stores: any runtime. The cube barrier at each tile's start orders
/// the stores before the reads.
pub struct SyncCopy;

#[cube]
impl TileCopy for SyncCopy {
    type Fence = ();

    fn fence() -> Self::Fence {}

    #[allow(clippy::too_many_arguments)]
    fn copy_rows<F: Float, N: Size>(
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
        stage_rows_vec::<F, N>(src, base, row_stride, first, t, sh, sh_off, rows, ld, head_dim, vs, units);
    }

    fn commit(_fence: &Self::Fence) {}

    fn wait(_fence: &Self::Fence) {}
}

/// `cp.async.cg` 16-byte copies tracked by a shared `mbarrier` (CubeCL's `copy_async` and
/// `Barrier::commit_copy_async`): the loads bypass the registers and land while the unit goes on.
/// CUDA only (the runtime's `copy_async` feature), for 16-byte vectors (`vs` × element size = 16)
/// with 16-byte aligned rows (the tiles' padded row stride keeps them so).
pub struct AsyncCopy;

#[cube]
impl TileCopy for AsyncCopy {
    type Fence = Shared<Barrier>;

    fn fence() -> Self::Fence {
        // Completes a phase when all units have arrived and every copy committed to it has landed.
        Barrier::shared(CUBE_DIM, UNIT_POS == 0)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_rows<F: Float, N: Size>(
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
        let (b0, rs) = (base / vs, row_stride / vs);
        let last = t - 1;
        if comptime!(units.is_multiple_of(vd)) {
            // As `stage_rows_vec`: a unit keeps its column `c` and steps `units / vd` rows per
            // unrolled pass, so the shared offsets of the passes differ by constants (immediates
            // in the machine code, not a live register per pass).
            let step = comptime!(units / vd);
            let (r0, c) = (unit / vd, unit % vd);
            let to0 = sh_off + r0 * ldv + c;
            #[unroll]
            for p in 0..comptime!(total.div_ceil(units)) {
                let r = r0 + p * step;
                if comptime!((p + 1) * units <= total) || r < rows {
                    let at = b0 + (first + r).min(last) * rs + c;
                    let to = to0 + comptime!(p * step * ldv);
                    copy_async::<Vector<F, N>>(&src.slice(at, at + 1), &mut sh.slice_mut(to, to + 1), comptime!(vs as u32));
                }
            }
        } else {
            let mut i = unit;
            while i < total {
                let (r, c) = (i / vd, i % vd);
                let at = b0 + (first + r).min(last) * rs + c;
                let to = sh_off + r * ldv + c;
                copy_async::<Vector<F, N>>(&src.slice(at, at + 1), &mut sh.slice_mut(to, to + 1), comptime!(vs as u32));
                i += units;
            }
        }
    }

    fn commit(fence: &Self::Fence) {
        fence.commit_copy_async();
    }

    fn wait(fence: &Self::Fence) {
        fence.arrive_and_wait();
    }
}

/// Rows `first..first + rows` of two `[.., T, D]` tensor slices with the same row count `t` (K and
/// V, or Q and dO) into `a_sh` and `b_sh` at vector `sh_off` through `C` (see
/// [`TileCopy::copy_rows`]).
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn copy_row_pair<F: Float, N: Size, C: TileCopy>(
    a: &Tensor<Vector<F, N>>,
    a_base: usize,
    a_stride: usize,
    b: &Tensor<Vector<F, N>>,
    b_base: usize,
    b_stride: usize,
    first: usize,
    t: usize,
    a_sh: &mut SharedMemory<Vector<F, N>>,
    b_sh: &mut SharedMemory<Vector<F, N>>,
    sh_off: usize,
    #[comptime] rows: usize,
    #[comptime] ld: usize,
    #[comptime] head_dim: usize,
    #[comptime] vs: usize,
    #[comptime] units: usize,
) {
    C::copy_rows::<F, N>(a, a_base, a_stride, first, t, a_sh, sh_off, rows, ld, head_dim, vs, units);
    C::copy_rows::<F, N>(b, b_base, b_stride, first, t, b_sh, sh_off, rows, ld, head_dim, vs, units);
}

/// [`TileCopy::commit`] to buffer `buf`'s fence (`buf` 0 or 1).
#[cube]
pub fn commit_to<C: TileCopy>(buf: usize, fence0: &C::Fence, fence1: &C::Fence) {
    if buf == 0 {
        C::commit(fence0);
    } else {
        C::commit(fence1);
    }
}

/// [`TileCopy::wait`] on buffer `buf`'s fence (`buf` 0 or 1).
#[cube]
pub fn wait_for<C: TileCopy>(buf: usize, fence0: &C::Fence, fence1: &C::Fence) {
    if buf == 0 {
        C::wait(fence0);
    } else {
        C::wait(fence1);
    }
}
