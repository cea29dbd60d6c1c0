//! Tensor-core flash-attention backward (FlashAttention-2 Algorithm 2, Dao 2023, arXiv
//! 2307.08691) through CubeCL's `cmma`, from the forward's log-sum-exp and `D = rowsum(dO∘O)`
//! ([`super::attention_kernels::flash_delta_kernel`]):
//! `P = exp(S − lse)`, `dP = dO Vᵀ`, `dS = P∘(dP − D)`, `dQ = scale·dS K`, `dK = scale·dSᵀ Q`,
//! `dV = Pᵀ dO`.
//!
//! Two kernels, as the portable ones: [`flash_dq_cmma_kernel`] (cube: `16·planes` query rows, one
//! head; loops over key tiles) and [`flash_dkv_cmma_kernel`] (cube: `16·planes` key rows of one KV
//! head; loops over the query tiles of every query head of its group, so dK and dV are summed over
//! the group in the kernel). Each plane owns 16 rows; its accumulators (dQ, or dK and dV) stay in
//! `cmma` fragments for the whole loop; `P` and `dS` go through shared memory in the input dtype
//! (as FA2 does in f16/bf16), elementwise work takes two units per row. `emulate` runs the same
//! kernels with scalar tile products (see [`super::cmma_tiles`]). Masking as the forward: key `j`
//! is visible to query `i` of batch row `b` iff `j ≥ pad[b]` and, if causal, `j ≤ q_offset + i`;
//! padding queries carry `lse = f32::MAX`, which zeroes their `P`.

use super::attention_cmma::{PLANE, ROWS_PER_PLANE, ld_f32, ld_half};
use super::attention_kernels::key_range;
use super::attention_kernels::visible_end;
use super::cmma_tiles::{ab_acc_16xn, abt_16xn, stage_rows, store_acc, zero_acc, zero_rows};
use cubecl::prelude::*;

/// Shared memory of [`flash_dq_cmma_kernel`] in bytes (`tile` keys per step).
pub fn dq_shared_bytes(d: usize, elem: usize, planes: usize, tile: usize) -> usize {
    let rows = planes * ROWS_PER_PLANE;
    // Q, dO, K, V, dS in the input dtype; S, dP and the dQ rows in f32.
    let half = (2 * rows + 2 * tile) * ld_half(d) + rows * ld_half(tile);
    let f32s = 2 * rows * ld_f32(tile) + rows * ld_f32(d);
    half * elem + f32s * 4
}

/// Shared memory of [`flash_dkv_cmma_kernel`] in bytes (`tile` queries per step).
pub fn dkv_shared_bytes(d: usize, elem: usize, planes: usize, tile: usize) -> usize {
    let rows = planes * ROWS_PER_PLANE;
    // K, V, Q, dO, Pᵀ, dSᵀ in the input dtype; Sᵀ, dPᵀ, the dK and dV rows, lse and D in f32.
    let half = (2 * rows + 2 * tile) * ld_half(d) + 2 * rows * ld_half(tile);
    let f32s = 2 * rows * ld_f32(tile) + 2 * rows * ld_f32(d) + 2 * tile;
    half * elem + f32s * 4
}

/// Loop passes one unit of the emulated kernels makes at most (Mesa's per-invocation limit; see
/// `attention_kernels`), the larger of the two: per step, staging, two emulated `16 × tile`
/// products over `d`, the elementwise loop, and one (dQ) or two (dK, dV) `16 × d` products over
/// `tile`; dK/dV steps over every query tile of each of the `groups` query heads.
pub fn emulated_bwd_loop_iterations(tq: usize, tk: usize, d: usize, planes: usize, tile: usize, groups: usize) -> usize {
    let units = planes * PLANE;
    let rows = planes * ROWS_PER_PLANE;
    let abt = (ROWS_PER_PLANE * tile).div_ceil(PLANE) * (d + 1) + 1;
    let ab = (ROWS_PER_PLANE * d).div_ceil(PLANE) * (tile + 1) + 1;
    let stage = |n: usize| (n * d).div_ceil(units) + 1;
    // (The lse/D staging loop of dK/dV counted in both.)
    let step = |acc: usize| 1 + 2 * stage(tile) + (tile.div_ceil(units) + 1) + 2 * abt + (tile / 2 + 1) + acc * ab;
    let edges = 2 * stage(rows) + 2 * ((rows * d).div_ceil(units) + 1);
    let dq = tk.div_ceil(tile) * step(1) + edges;
    let dkv = groups * (1 + tq.div_ceil(tile) * (step(2) + 1)) + edges;
    dq.max(dkv)
}

/// dQ: cube (`16·planes` query rows, head, batch); dq `[B, H, Tq, D]` contiguous; lse and delta
/// `[B, H, Tq]` contiguous. `head_dim` and `tile` multiples of 16.
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn flash_dq_cmma_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    pad: &Tensor<I>,
    dq: &mut Tensor<F>,
    scale: f32,
    q_offset: usize,
    #[comptime] causal: bool,
    #[comptime] head_dim: usize,
    #[comptime] planes: usize,
    #[comptime] tile: usize,
    #[comptime] emulate: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let tid = plane * PLANE + lane;
    let units = comptime!(PLANE * planes);
    let rows = comptime!(ROWS_PER_PLANE * planes);
    let first_row = CUBE_POS_X as usize * rows;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let kvh = h / (nh / nkv);
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;

    let dl = comptime!(ld_half(head_dim));
    let sl = comptime!(ld_f32(tile));
    let pl = comptime!(ld_half(tile));
    let ol = comptime!(ld_f32(head_dim));
    let (rows_len, tile_len) = (comptime!(rows * ld_half(head_dim)), comptime!(tile * ld_half(head_dim)));
    let (s_len, p_len, o_len) = (comptime!(rows * ld_f32(tile)), comptime!(rows * ld_half(tile)), comptime!(rows * ld_f32(head_dim)));
    let mut qs = SharedMemory::<F>::new(rows_len);
    let mut dos = SharedMemory::<F>::new(rows_len);
    let mut ks = SharedMemory::<F>::new(tile_len);
    let mut vs = SharedMemory::<F>::new(tile_len);
    let mut ss = SharedMemory::<f32>::new(s_len);
    let mut dps = SharedMemory::<f32>::new(s_len);
    let mut dss = SharedMemory::<F>::new(p_len);
    let mut os = SharedMemory::<f32>::new(o_len);

    let qb = b * q.stride(0) + h * q.stride(1);
    let ob = b * dout.stride(0) + h * dout.stride(1);
    stage_rows::<F>(q, qb, first_row, tq, &mut qs, rows, dl, head_dim, units);
    stage_rows::<F>(dout, ob, first_row, tq, &mut dos, rows, dl, head_dim, units);
    zero_rows(&mut os, rows, ol, head_dim, units);

    // Two units per row, as in the forward.
    let r_loc = tid / 2;
    let half = tid % 2;
    let row = first_row + r_loc;
    let row_ok = row < tq;
    let hi = visible_end(row, tk, q_offset, causal);
    let mut lse_r = f32::max_value();
    let mut delta_r = f32::new(0.0);
    if row_ok {
        lse_r = lse[(b * nh + h) * tq + row];
        delta_r = delta[(b * nh + h) * tq + row];
    }
    let q_off = plane * ROWS_PER_PLANE * dl;
    let s_off = plane * ROWS_PER_PLANE * sl;
    let p_off = plane * ROWS_PER_PLANE * pl;
    let o_off = plane * ROWS_PER_PLANE * ol;
    let acc = zero_acc(head_dim, emulate);
    sync_cube();

    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let (start, end) = key_range(first_row, rows, tq, tk, pad_b, q_offset, tile, causal);
    let mut kt = start;
    while kt < end {
        stage_rows::<F>(k, kb, kt, tk, &mut ks, tile, dl, head_dim, units);
        stage_rows::<F>(v, vb, kt, tk, &mut vs, tile, dl, head_dim, units);
        sync_cube();
        // S = Q Kᵀ and dP = dO Vᵀ for this plane's rows: [16, D] × [D, tile].
        abt_16xn::<F>(&qs, q_off, &ks, 0, &mut ss, s_off, dl, sl, rows_len, tile_len, s_len, head_dim, tile, emulate);
        abt_16xn::<F>(&dos, q_off, &vs, 0, &mut dps, s_off, dl, sl, rows_len, tile_len, s_len, head_dim, tile, emulate);
        sync_cube();
        // dS = P∘(dP − D), P = exp(scale·S − lse) on visible keys.
        let so = r_loc * sl;
        let po = r_loc * pl;
        for t in 0..tile / 2 {
            let j = 2 * t + half;
            let key = kt + j;
            let mut ds = f32::new(0.0);
            if row_ok && key >= pad_b && key < hi {
                let p = (ss[so + j] * scale - lse_r).exp();
                ds = p * (dps[so + j] - delta_r);
            }
            dss[po + j] = F::cast_from(ds);
        }
        sync_cube();
        // dQ += dS K: [16, tile] × [tile, D].
        ab_acc_16xn::<F>(&dss, p_off, &ks, &acc, &mut os, o_off, pl, dl, ol, p_len, tile_len, head_dim, tile, emulate);
        sync_cube();
        kt += tile;
    }

    store_acc(&acc, &mut os, o_off, ol, o_len, head_dim, emulate);
    sync_cube();
    let mut o = tid;
    while o < rows * head_dim {
        let r = o / head_dim;
        let d = o % head_dim;
        if first_row + r < tq {
            dq[((b * nh + h) * tq + first_row + r) * head_dim + d] = F::cast_from(os[r * ol + d] * scale);
        }
        o += units;
    }
}

/// dK, dV: cube (`16·planes` key rows, KV head, batch), looping over the query tiles of the G
/// query heads that share the KV head; dk, dv `[B, K, Tk, D]` contiguous.
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn flash_dkv_cmma_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    pad: &Tensor<I>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    q_offset: usize,
    #[comptime] causal: bool,
    #[comptime] head_dim: usize,
    #[comptime] planes: usize,
    #[comptime] tile: usize,
    #[comptime] emulate: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let tid = plane * PLANE + lane;
    let units = comptime!(PLANE * planes);
    let rows = comptime!(ROWS_PER_PLANE * planes);
    let first_key = CUBE_POS_X as usize * rows;
    let kvh = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let groups = nh / nkv;
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;

    let dl = comptime!(ld_half(head_dim));
    let sl = comptime!(ld_f32(tile));
    let pl = comptime!(ld_half(tile));
    let ol = comptime!(ld_f32(head_dim));
    let (rows_len, tile_len) = (comptime!(rows * ld_half(head_dim)), comptime!(tile * ld_half(head_dim)));
    let (s_len, p_len, o_len) = (comptime!(rows * ld_f32(tile)), comptime!(rows * ld_half(tile)), comptime!(rows * ld_f32(head_dim)));
    let mut ks = SharedMemory::<F>::new(rows_len);
    let mut vs = SharedMemory::<F>::new(rows_len);
    let mut qs = SharedMemory::<F>::new(tile_len);
    let mut dos = SharedMemory::<F>::new(tile_len);
    let mut st = SharedMemory::<f32>::new(s_len);
    let mut dpt = SharedMemory::<f32>::new(s_len);
    let mut pts = SharedMemory::<F>::new(p_len);
    let mut dsts = SharedMemory::<F>::new(p_len);
    let mut osk = SharedMemory::<f32>::new(o_len);
    let mut osv = SharedMemory::<f32>::new(o_len);
    let mut lse_s = SharedMemory::<f32>::new(tile);
    let mut delta_s = SharedMemory::<f32>::new(tile);

    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    stage_rows::<F>(k, kb, first_key, tk, &mut ks, rows, dl, head_dim, units);
    stage_rows::<F>(v, vb, first_key, tk, &mut vs, rows, dl, head_dim, units);
    zero_rows(&mut osk, rows, ol, head_dim, units);
    zero_rows(&mut osv, rows, ol, head_dim, units);

    // Two units per key row.
    let r_loc = tid / 2;
    let half = tid % 2;
    let key = first_key + r_loc;
    let key_ok = key < tk && key >= pad_b;
    let k_off = plane * ROWS_PER_PLANE * dl;
    let s_off = plane * ROWS_PER_PLANE * sl;
    let p_off = plane * ROWS_PER_PLANE * pl;
    let o_off = plane * ROWS_PER_PLANE * ol;
    let acck = zero_acc(head_dim, emulate);
    let accv = zero_acc(head_dim, emulate);
    // Causal: queries before `first_key − q_offset` see none of this cube's keys.
    let mut q_start = 0;
    if causal && first_key > q_offset {
        q_start = ((first_key - q_offset) / tile) * tile;
    }
    sync_cube();

    for g in 0..groups {
        let h = kvh * groups + g;
        let qb = b * q.stride(0) + h * q.stride(1);
        let ob = b * dout.stride(0) + h * dout.stride(1);
        let rb = (b * nh + h) * tq;
        let mut qt = q_start;
        while qt < tq {
            stage_rows::<F>(q, qb, qt, tq, &mut qs, tile, dl, head_dim, units);
            stage_rows::<F>(dout, ob, qt, tq, &mut dos, tile, dl, head_dim, units);
            let mut j = tid;
            while j < tile {
                let qi = qt + j;
                let mut l = f32::max_value();
                let mut dd = f32::new(0.0);
                if qi < tq {
                    l = lse[rb + qi];
                    dd = delta[rb + qi];
                }
                lse_s[j] = l;
                delta_s[j] = dd;
                j += units;
            }
            sync_cube();
            // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ for this plane's keys: [16, D] × [D, tile].
            abt_16xn::<F>(&ks, k_off, &qs, 0, &mut st, s_off, dl, sl, rows_len, tile_len, s_len, head_dim, tile, emulate);
            abt_16xn::<F>(&vs, k_off, &dos, 0, &mut dpt, s_off, dl, sl, rows_len, tile_len, s_len, head_dim, tile, emulate);
            sync_cube();
            // Pᵀ = exp(scale·Sᵀ − lse) on visible pairs, dSᵀ = Pᵀ∘(dPᵀ − D).
            let so = r_loc * sl;
            let po = r_loc * pl;
            for t in 0..tile / 2 {
                let j = 2 * t + half;
                let qi = qt + j;
                let mut vis = key_ok && qi < tq;
                if causal {
                    vis = vis && key <= q_offset + qi;
                }
                let mut p = f32::new(0.0);
                let mut ds = f32::new(0.0);
                if vis {
                    p = (st[so + j] * scale - lse_s[j]).exp();
                    ds = p * (dpt[so + j] - delta_s[j]);
                }
                pts[po + j] = F::cast_from(p);
                dsts[po + j] = F::cast_from(ds);
            }
            sync_cube();
            // dV += Pᵀ dO and dK += dSᵀ Q: [16, tile] × [tile, D].
            ab_acc_16xn::<F>(&pts, p_off, &dos, &accv, &mut osv, o_off, pl, dl, ol, p_len, tile_len, head_dim, tile, emulate);
            ab_acc_16xn::<F>(&dsts, p_off, &qs, &acck, &mut osk, o_off, pl, dl, ol, p_len, tile_len, head_dim, tile, emulate);
            sync_cube();
            qt += tile;
        }
    }

    store_acc(&acck, &mut osk, o_off, ol, o_len, head_dim, emulate);
    store_acc(&accv, &mut osv, o_off, ol, o_len, head_dim, emulate);
    sync_cube();
    let mut o = tid;
    while o < rows * head_dim {
        let r = o / head_dim;
        let d = o % head_dim;
        if first_key + r < tk {
            let at = ((b * nkv + kvh) * tk + first_key + r) * head_dim + d;
            dk[at] = F::cast_from(osk[r * ol + d] * scale);
            dv[at] = F::cast_from(osv[r * ol + d]);
        }
        o += units;
    }
}
