//! The two tile products of the tensor-core attention kernels, for one plane of 32 units and 16
//! rows, on tiles in shared memory: through CubeCL's `cmma` (16×16×16, input dtype → f32), or,
//! with `emulate`, as scalar code on the same tiles (so the kernels' logic runs on devices without
//! tensor cores; see [`super::attention_cmma`]); and the staging of rows into shared tiles.

use super::attention_cmma::PLANE;
use cubecl::prelude::*;

/// Copies rows `first..first + rows` of the `[.., T, D]` tensor slice at `base` into `sh` (row
/// stride `ld`, input dtype), zero past `t`; all `units` units of the cube take part.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn stage_rows<F: Float>(
    src: &Tensor<F>,
    base: usize,
    first: usize,
    t: usize,
    sh: &mut SharedMemory<F>,
    #[comptime] rows: usize,
    #[comptime] ld: usize,
    #[comptime] head_dim: usize,
    #[comptime] units: usize,
) {
    let tid = UNIT_POS_Y as usize * PLANE + UNIT_POS_X as usize;
    let mut i = tid;
    while i < rows * head_dim {
        let r = i / head_dim;
        let d = i % head_dim;
        let mut x = F::new(0.0);
        if first + r < t {
            x = src[base + (first + r) * src.stride(2) + d * src.stride(3)];
        }
        sh[r * ld + d] = x;
        i += units;
    }
}

/// Zeroes the first `head_dim` columns of `rows` f32 rows of `sh` (row stride `ld`); all `units`
/// units of the cube take part.
#[cube]
pub fn zero_rows(sh: &mut SharedMemory<f32>, #[comptime] rows: usize, #[comptime] ld: usize, #[comptime] head_dim: usize, #[comptime] units: usize) {
    let mut i = UNIT_POS_Y as usize * PLANE + UNIT_POS_X as usize;
    while i < rows * head_dim {
        sh[(i / head_dim) * ld + i % head_dim] = f32::new(0.0);
        i += units;
    }
}

/// `dst[16, n] = a[16, D] · b[n, D]ᵀ` in f32 (`S = Q Kᵀ` and its kin): `a`'s rows at `a_off`,
/// `b`'s at `b_off`, both with row stride `ld` (elements); `dst`'s rows at `dst_off`, stride `ldd`.
/// `a_len`, `b_len`, `dst_len` are the shared arrays' lengths (slice ends).
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn abt_16xn<F: Float>(
    a: &SharedMemory<F>,
    a_off: usize,
    b: &SharedMemory<F>,
    b_off: usize,
    dst: &mut SharedMemory<f32>,
    dst_off: usize,
    #[comptime] ld: usize,
    #[comptime] ldd: usize,
    #[comptime] a_len: usize,
    #[comptime] b_len: usize,
    #[comptime] dst_len: usize,
    #[comptime] head_dim: usize,
    #[comptime] n: usize,
    #[comptime] emulate: bool,
) {
    if comptime!(emulate) {
        let mut e = UNIT_POS_X as usize;
        while e < 16 * n {
            let r = e / n;
            let c = e % n;
            let mut s = f32::new(0.0);
            for d in 0..head_dim {
                s += f32::cast_from(a[a_off + r * ld + d]) * f32::cast_from(b[b_off + c * ld + d]);
            }
            dst[dst_off + r * ldd + c] = s;
            e += PLANE;
        }
    } else {
        #[unroll]
        for j in 0..comptime!(n / 16) {
            let c = cmma::Matrix::<f32>::from_value(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined, f32::new(0.0));
            #[unroll]
            for kk in 0..comptime!(head_dim / 16) {
                let am = cmma::Matrix::<F>::from_slice(
                    cmma::MatrixIdent::A,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::RowMajor,
                    &a.slice(a_off + kk * 16, a_len),
                    comptime!(ld as u32),
                );
                // bᵀ: column c of B is row c of `b`.
                let bm = cmma::Matrix::<F>::from_slice(
                    cmma::MatrixIdent::B,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::ColMajor,
                    &b.slice(b_off + j * 16 * ld + kk * 16, b_len),
                    comptime!(ld as u32),
                );
                cmma::execute::<F, F, f32, f32>(&am, &bm, &c, &c);
            }
            let mut out = dst.slice_mut(dst_off + j * 16, dst_len);
            cmma::store(&mut out, &c, comptime!(ldd as u32), cmma::MatrixLayout::RowMajor);
        }
    }
}

/// `acc[16, D] += a[16, n] · b[n, D]` (`O += P V` and its kin): `a`'s rows at `a_off`, stride
/// `lda`; `b`'s rows from 0, stride `ldb`. The accumulator is `frags` (one fragment per 16
/// columns) or, with `emulate`, f32 rows of `emu` at `emu_off`, stride `lde`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn ab_acc_16xn<F: Float>(
    a: &SharedMemory<F>,
    a_off: usize,
    b: &SharedMemory<F>,
    frags: &Sequence<cmma::Matrix<f32>>,
    emu: &mut SharedMemory<f32>,
    emu_off: usize,
    #[comptime] lda: usize,
    #[comptime] ldb: usize,
    #[comptime] lde: usize,
    #[comptime] a_len: usize,
    #[comptime] b_len: usize,
    #[comptime] head_dim: usize,
    #[comptime] n: usize,
    #[comptime] emulate: bool,
) {
    if comptime!(emulate) {
        let mut e = UNIT_POS_X as usize;
        while e < 16 * head_dim {
            let r = e / head_dim;
            let c = e % head_dim;
            let mut s = f32::new(0.0);
            for j in 0..n {
                s += f32::cast_from(a[a_off + r * lda + j]) * f32::cast_from(b[j * ldb + c]);
            }
            emu[emu_off + r * lde + c] += s;
            e += PLANE;
        }
    } else {
        #[unroll]
        for t in 0..comptime!(head_dim / 16) {
            #[unroll]
            for kk in 0..comptime!(n / 16) {
                let am = cmma::Matrix::<F>::from_slice(
                    cmma::MatrixIdent::A,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::RowMajor,
                    &a.slice(a_off + kk * 16, a_len),
                    comptime!(lda as u32),
                );
                let bm = cmma::Matrix::<F>::from_slice(
                    cmma::MatrixIdent::B,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::RowMajor,
                    &b.slice(kk * 16 * ldb + t * 16, b_len),
                    comptime!(ldb as u32),
                );
                cmma::execute::<F, F, f32, f32>(&am, &bm, frags.index(t), frags.index(t));
            }
        }
    }
}

/// `frags` (one fragment per 16 columns of D) stored as f32 rows of `dst` at `dst_off`, stride
/// `ldd`; nothing when emulating (the accumulator already lives there).
#[cube]
pub fn store_acc(
    frags: &Sequence<cmma::Matrix<f32>>,
    dst: &mut SharedMemory<f32>,
    dst_off: usize,
    #[comptime] ldd: usize,
    #[comptime] dst_len: usize,
    #[comptime] head_dim: usize,
    #[comptime] emulate: bool,
) {
    if comptime!(!emulate) {
        #[unroll]
        for t in 0..comptime!(head_dim / 16) {
            let mut out = dst.slice_mut(dst_off + t * 16, dst_len);
            cmma::store(&mut out, frags.index(t), comptime!(ldd as u32), cmma::MatrixLayout::RowMajor);
        }
    }
}

/// `frags` loaded back from f32 rows of `src` at `src_off`, stride `lds` (after [`store_acc`] and
/// a change there); nothing when emulating.
#[cube]
pub fn load_acc(
    frags: &Sequence<cmma::Matrix<f32>>,
    src: &SharedMemory<f32>,
    src_off: usize,
    #[comptime] lds: usize,
    #[comptime] src_len: usize,
    #[comptime] head_dim: usize,
    #[comptime] emulate: bool,
) {
    if comptime!(!emulate) {
        #[unroll]
        for t in 0..comptime!(head_dim / 16) {
            cmma::load_with_layout(frags.index(t), &src.slice(src_off + t * 16, src_len), comptime!(lds as u32), cmma::MatrixLayout::RowMajor);
        }
    }
}

/// Zero-filled accumulator fragments, one per 16 columns of D (none when emulating).
#[cube]
pub fn zero_acc(#[comptime] head_dim: usize, #[comptime] emulate: bool) -> Sequence<cmma::Matrix<f32>> {
    let mut frags = Sequence::<cmma::Matrix<f32>>::new();
    if comptime!(!emulate) {
        #[unroll]
        for _t in 0..comptime!(head_dim / 16) {
            frags.push(cmma::Matrix::<f32>::from_value(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined, f32::new(0.0)));
        }
    }
    frags
}
