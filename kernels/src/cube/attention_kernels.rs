//! Portable flash-attention kernels (FlashAttention-2, Dao 2023, arXiv 2307.08691).
//!
//! One unit owns one query row (forward, dQ) or one key row (dK/dV) and keeps its row and its
//! accumulators in local arrays of `head_dim` f32; the cube stages the other side's tiles in shared
//! memory as f32. No plane operations and no `cmma`, so the same code runs on lavapipe (8-wide
//! planes, no tensor cores) and on CUDA. Inputs may be f32, f16 or bf16 (`#[define]`); all
//! arithmetic is f32. Masking is index arithmetic: key `j` is visible to query `i` of batch row
//! `b` iff `j >= pad[b]` and, if causal, `j <= q_offset + i`. GQA: query head `h` reads KV head
//! `h / (H / K)`; K and V are never repeated.

use cubecl::prelude::*;

/// Whether key `key` is visible to query `row`.
#[cube]
pub(crate) fn visible(key: usize, row: usize, tk: usize, pad: usize, q_offset: usize, #[comptime] causal: bool) -> bool {
    let mut ok = key < tk && key >= pad;
    if causal {
        ok = ok && key <= q_offset + row;
    }
    ok
}

/// Copies rows `first..first + rows` of the `[.., T, D]` slice at `base` into `sh` as f32, zero
/// past `t`. All units of the cube take part.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_tile<F: Float>(
    src: &Tensor<F>,
    base: usize,
    first: usize,
    t: usize,
    sh: &mut SharedMemory<f32>,
    #[comptime] rows: usize,
    #[comptime] head_dim: usize,
) {
    let st = src.stride(2);
    let sd = src.stride(3);
    let mut idx = UNIT_POS_X as usize;
    while idx < rows * head_dim {
        let r = first + idx / head_dim;
        let d = idx % head_dim;
        let mut x = f32::new(0.0);
        if r < t {
            x = f32::cast_from(src[base + r * st + d * sd]);
        }
        sh[idx] = x;
        idx += CUBE_DIM_X as usize;
    }
}

/// `Σ_d a[d]·sh[off + d]`.
#[cube]
fn dot_shared(a: &Array<f32>, sh: &SharedMemory<f32>, off: usize, #[comptime] head_dim: usize) -> f32 {
    let mut s = f32::new(0.0);
    for d in 0..head_dim {
        s += a[d] * sh[off + d];
    }
    s
}

/// Range of key tiles a query tile of `rows` rows starting at `first_row` needs: from the tile
/// holding the first unpadded key to the last key the tile's last query may see (cube-uniform, so
/// `sync_cube` inside the loop is safe).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn key_range(
    first_row: usize,
    rows: usize,
    tq: usize,
    tk: usize,
    pad: usize,
    q_offset: usize,
    #[comptime] block_k: usize,
    #[comptime] causal: bool,
) -> (usize, usize) {
    let start = (pad / block_k) * block_k;
    let mut end = tk;
    if causal {
        let mut rows_end = first_row + rows;
        if rows_end > tq {
            rows_end = tq;
        }
        if q_offset + rows_end < tk {
            end = q_offset + rows_end;
        }
    }
    (start, end)
}

/// Forward: cube (query tile, head, batch); out `[B, H, Tq, D]` and lse `[B, H, Tq]` contiguous.
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn flash_fwd_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    pad: &Tensor<I>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    scale: f32,
    q_offset: usize,
    #[comptime] causal: bool,
    #[comptime] head_dim: usize,
    #[comptime] block_k: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tid = UNIT_POS_X as usize;
    let first_row = CUBE_POS_X as usize * CUBE_DIM_X as usize;
    let row = first_row + tid;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let kvh = h / (nh / nkv);
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let row_ok = row < tq;

    let mut qa = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    let mut sc = Array::<f32>::new(block_k);
    let qb = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
    for d in 0..head_dim {
        acc[d] = f32::new(0.0);
        qa[d] = f32::new(0.0);
        if row_ok {
            qa[d] = f32::cast_from(q[qb + d * q.stride(3)]) * scale;
        }
    }
    let mut ks = SharedMemory::<f32>::new(block_k * head_dim);
    let mut vs = SharedMemory::<f32>::new(block_k * head_dim);
    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let lowest = f32::min_value();
    let mut m = lowest;
    let mut l = f32::new(0.0);
    let (start, end) = key_range(first_row, CUBE_DIM_X as usize, tq, tk, pad_b, q_offset, block_k, causal);
    let mut kt = start;
    while kt < end {
        load_tile::<F>(k, kb, kt, tk, &mut ks, block_k, head_dim);
        load_tile::<F>(v, vb, kt, tk, &mut vs, block_k, head_dim);
        sync_cube();
        if row_ok {
            let mut mt = lowest;
            for j in 0..block_k {
                let mut s = lowest;
                if visible(kt + j, row, tk, pad_b, q_offset, causal) {
                    s = dot_shared(&qa, &ks, j * head_dim, head_dim);
                    mt = mt.max(s);
                }
                sc[j] = s;
            }
            if mt > lowest {
                // Online softmax (FA2): rescale the running sum and accumulator once per tile.
                let m_new = m.max(mt);
                let corr = (m - m_new).exp();
                l *= corr;
                for d in 0..head_dim {
                    acc[d] *= corr;
                }
                for j in 0..block_k {
                    if visible(kt + j, row, tk, pad_b, q_offset, causal) {
                        let p = (sc[j] - m_new).exp();
                        l += p;
                        for d in 0..head_dim {
                            acc[d] += p * vs[j * head_dim + d];
                        }
                    }
                }
                m = m_new;
            }
        }
        sync_cube();
        kt += block_k;
    }
    if row_ok {
        let r = (b * nh + h) * tq + row;
        if l > f32::new(0.0) {
            let inv = f32::new(1.0) / l;
            for d in 0..head_dim {
                out[r * head_dim + d] = F::cast_from(acc[d] * inv);
            }
            lse[r] = m + l.ln();
        } else {
            // No visible key (a padding query): output 0, and an lse that zeroes every P in backward.
            for d in 0..head_dim {
                out[r * head_dim + d] = F::new(0.0);
            }
            lse[r] = f32::max_value();
        }
    }
}

/// `delta[r] = Σ_d dO[r, d]·O[r, d]` (FA2's D), one unit per row; both inputs contiguous.
#[cube(launch, address_type = "dynamic")]
pub fn flash_delta_kernel<F: Float>(
    out: &Tensor<F>,
    dout: &Tensor<F>,
    delta: &mut Tensor<f32>,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: StorageType,
) {
    let r = ABSOLUTE_POS;
    if r >= delta.len() {
        terminate!();
    }
    let mut s = f32::new(0.0);
    for d in 0..head_dim {
        s += f32::cast_from(out[r * head_dim + d]) * f32::cast_from(dout[r * head_dim + d]);
    }
    delta[r] = s;
}

/// dQ: cube (query tile, head, batch), one unit per query row; dq `[B, H, Tq, D]` contiguous.
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn flash_dq_kernel<F: Float, I: Numeric>(
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
    #[comptime] block_k: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tid = UNIT_POS_X as usize;
    let first_row = CUBE_POS_X as usize * CUBE_DIM_X as usize;
    let row = first_row + tid;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let kvh = h / (nh / nkv);
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let row_ok = row < tq;
    let r = (b * nh + h) * tq + row;

    let mut qa = Array::<f32>::new(head_dim);
    let mut doa = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    let qb = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
    let ob = b * dout.stride(0) + h * dout.stride(1) + row * dout.stride(2);
    let mut lse_r = f32::new(0.0);
    let mut delta_r = f32::new(0.0);
    for d in 0..head_dim {
        acc[d] = f32::new(0.0);
        qa[d] = f32::new(0.0);
        doa[d] = f32::new(0.0);
        if row_ok {
            qa[d] = f32::cast_from(q[qb + d * q.stride(3)]) * scale;
            doa[d] = f32::cast_from(dout[ob + d * dout.stride(3)]);
        }
    }
    if row_ok {
        lse_r = lse[r];
        delta_r = delta[r];
    }
    let mut ks = SharedMemory::<f32>::new(block_k * head_dim);
    let mut vs = SharedMemory::<f32>::new(block_k * head_dim);
    let kb = b * k.stride(0) + kvh * k.stride(1);
    let vb = b * v.stride(0) + kvh * v.stride(1);
    let (start, end) = key_range(first_row, CUBE_DIM_X as usize, tq, tk, pad_b, q_offset, block_k, causal);
    let mut kt = start;
    while kt < end {
        load_tile::<F>(k, kb, kt, tk, &mut ks, block_k, head_dim);
        load_tile::<F>(v, vb, kt, tk, &mut vs, block_k, head_dim);
        sync_cube();
        if row_ok {
            for j in 0..block_k {
                if visible(kt + j, row, tk, pad_b, q_offset, causal) {
                    let p = (dot_shared(&qa, &ks, j * head_dim, head_dim) - lse_r).exp();
                    let ds = p * (dot_shared(&doa, &vs, j * head_dim, head_dim) - delta_r);
                    for d in 0..head_dim {
                        acc[d] += ds * ks[j * head_dim + d];
                    }
                }
            }
        }
        sync_cube();
        kt += block_k;
    }
    if row_ok {
        for d in 0..head_dim {
            dq[r * head_dim + d] = F::cast_from(acc[d] * scale);
        }
    }
}

/// dK, dV: cube (key tile, KV head, batch), one unit per key row, looping over the G query heads
/// of the group and their query tiles; dk, dv `[B, K, Tk, D]` contiguous.
#[cube(launch, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn flash_dkv_kernel<F: Float, I: Numeric>(
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
    #[comptime] block_q: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tid = UNIT_POS_X as usize;
    let first_key = CUBE_POS_X as usize * CUBE_DIM_X as usize;
    let key = first_key + tid;
    let kvh = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let (nh, tq) = (q.shape(1), q.shape(2));
    let (nkv, tk) = (k.shape(1), k.shape(2));
    let groups = nh / nkv;
    let pad_b = u32::cast_from(pad[b * pad.stride(0)]) as usize;
    let key_ok = key < tk && key >= pad_b;

    let mut ka = Array::<f32>::new(head_dim);
    let mut va = Array::<f32>::new(head_dim);
    let mut dka = Array::<f32>::new(head_dim);
    let mut dva = Array::<f32>::new(head_dim);
    let kb = b * k.stride(0) + kvh * k.stride(1) + key * k.stride(2);
    let vb = b * v.stride(0) + kvh * v.stride(1) + key * v.stride(2);
    for d in 0..head_dim {
        ka[d] = f32::new(0.0);
        va[d] = f32::new(0.0);
        dka[d] = f32::new(0.0);
        dva[d] = f32::new(0.0);
        if key < tk {
            ka[d] = f32::cast_from(k[kb + d * k.stride(3)]) * scale;
            va[d] = f32::cast_from(v[vb + d * v.stride(3)]);
        }
    }
    let mut qs = SharedMemory::<f32>::new(block_q * head_dim);
    let mut dos = SharedMemory::<f32>::new(block_q * head_dim);
    let mut lse_s = SharedMemory::<f32>::new(block_q);
    let mut delta_s = SharedMemory::<f32>::new(block_q);
    // Causal: queries before `first_key - q_offset` see none of this tile's keys.
    let mut q_start = 0;
    if causal && first_key > q_offset {
        q_start = ((first_key - q_offset) / block_q) * block_q;
    }
    for g in 0..groups {
        let h = kvh * groups + g;
        let qb = b * q.stride(0) + h * q.stride(1);
        let ob = b * dout.stride(0) + h * dout.stride(1);
        let rb = (b * nh + h) * tq;
        let mut qt = q_start;
        while qt < tq {
            load_tile::<F>(q, qb, qt, tq, &mut qs, block_q, head_dim);
            load_tile::<F>(dout, ob, qt, tq, &mut dos, block_q, head_dim);
            if tid < block_q {
                let i = qt + tid;
                let mut l = f32::max_value();
                let mut dl = f32::new(0.0);
                if i < tq {
                    l = lse[rb + i];
                    dl = delta[rb + i];
                }
                lse_s[tid] = l;
                delta_s[tid] = dl;
            }
            sync_cube();
            if key_ok {
                for r in 0..block_q {
                    let i = qt + r;
                    let mut vis = i < tq;
                    if causal {
                        vis = vis && key <= q_offset + i;
                    }
                    if vis {
                        let p = (dot_shared(&ka, &qs, r * head_dim, head_dim) - lse_s[r]).exp();
                        let ds = p * (dot_shared(&va, &dos, r * head_dim, head_dim) - delta_s[r]);
                        for d in 0..head_dim {
                            dva[d] += p * dos[r * head_dim + d];
                            dka[d] += ds * qs[r * head_dim + d];
                        }
                    }
                }
            }
            sync_cube();
            qt += block_q;
        }
    }
    if key < tk {
        let o = ((b * nkv + kvh) * tk + key) * head_dim;
        for d in 0..head_dim {
            dk[o + d] = F::cast_from(dka[d] * scale);
            dv[o + d] = F::cast_from(dva[d]);
        }
    }
}
