//! Models shared by the integration tests, plus a naive dense evaluator (plain f64 loops) used
//! as the oracle for them.
#![allow(dead_code)]

pub mod bert;

use rlx_ir::{DType, Dim, HirModule, HirMut, Shape, UnaryOp};

pub const HIDDEN: usize = 32;
pub const HEADS: usize = 4;
pub const HEAD_DIM: usize = HIDDEN / HEADS;

/// Deterministic pseudo-random weights in [-0.5, 0.5).
pub fn weights(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn sym(h: &mut HirMut, name: &str, max: i64) -> Dim {
    h.dim(name, 1, max).unwrap()
}

/// 2-layer MLP over a symbolic batch: softmax(gelu(x @ w1 + b1) @ w2 + b2).
pub fn mlp() -> HirModule {
    let mut m = HirModule::new("mlp");
    let mut g = HirMut::new(&mut m);
    let b = sym(&mut g, "batch", 4096);
    let x = g
        .input("x", DType::F32, Shape(vec![b, Dim::constant(16)]))
        .unwrap();
    let w1 = g.param("w1", DType::F32, Shape::new(&[16, 24])).unwrap();
    let b1 = g.param("b1", DType::F32, Shape::new(&[24])).unwrap();
    let w2 = g.param("w2", DType::F32, Shape::new(&[24, 8])).unwrap();
    let b2 = g.param("b2", DType::F32, Shape::new(&[8])).unwrap();
    let h = g.linear(x, w1, Some(b1), Some(UnaryOp::Gelu)).unwrap();
    let y = g.linear(h, w2, Some(b2), None).unwrap();
    let p = g.softmax(y, -1).unwrap();
    g.output("probs", p).unwrap();
    m
}

/// Param names and sizes of [`block`], in definition order.
pub fn block_params() -> Vec<(&'static str, usize)> {
    let h = HIDDEN;
    vec![
        ("wq", h * h),
        ("bq", h),
        ("wk", h * h),
        ("bk", h),
        ("wv", h * h),
        ("bv", h),
        ("scale", 1),
        ("wo", h * h),
        ("bo", h),
        ("gamma", h),
        ("beta", h),
    ]
}

/// Transformer-style block with symbolic batch and seq: q/k/v linears, reshape to heads,
/// q @ k^T * scale, softmax, @ v, merge heads, output linear, residual add, layer norm.
pub fn block() -> HirModule {
    let mut m = HirModule::new("block");
    let mut g = HirMut::new(&mut m);
    let b = sym(&mut g, "batch", 64);
    let s = sym(&mut g, "seq", 512);
    let hd = Dim::constant(HIDDEN as i64);
    let x = g
        .input(
            "x",
            DType::F32,
            Shape(vec![b.clone(), s.clone(), hd.clone()]),
        )
        .unwrap();
    let mut p = std::collections::HashMap::new();
    for (name, n) in block_params() {
        let shape = if n == HIDDEN * HIDDEN {
            Shape::new(&[HIDDEN as i64, HIDDEN as i64])
        } else {
            Shape::new(&[n as i64])
        };
        p.insert(name, g.param(name, DType::F32, shape).unwrap());
    }
    let heads = |g: &mut HirMut, v, perm: &[usize]| {
        let shape = Shape(vec![
            b.clone(),
            s.clone(),
            Dim::constant(HEADS as i64),
            Dim::constant(HEAD_DIM as i64),
        ]);
        let r = g.reshape(v, shape).unwrap();
        g.transpose(r, perm).unwrap()
    };
    let q = g.linear(x, p["wq"], Some(p["bq"]), None).unwrap();
    let k = g.linear(x, p["wk"], Some(p["bk"]), None).unwrap();
    let v = g.linear(x, p["wv"], Some(p["bv"]), None).unwrap();
    let q = heads(&mut g, q, &[0, 2, 1, 3]);
    let kt = heads(&mut g, k, &[0, 2, 3, 1]);
    let v = heads(&mut g, v, &[0, 2, 1, 3]);
    let scores = g.matmul(q, kt).unwrap();
    let scores = g.mul(scores, p["scale"]).unwrap();
    let probs = g.softmax(scores, -1).unwrap();
    let ctx = g.matmul(probs, v).unwrap();
    let ctx = g.transpose(ctx, &[0, 2, 1, 3]).unwrap();
    let ctx = g.reshape(ctx, Shape(vec![&b * &s, hd.clone()])).unwrap();
    let o = g.linear(ctx, p["wo"], Some(p["bo"]), None).unwrap();
    let o = g.reshape(o, Shape(vec![b.clone(), s.clone(), hd])).unwrap();
    let r = g.add(o, x).unwrap();
    let y = g.layer_norm(r, p["gamma"], p["beta"], 1e-5).unwrap();
    g.output("y", y).unwrap();
    m
}

pub fn block_weights() -> Vec<(&'static str, Vec<f32>)> {
    block_params()
        .into_iter()
        .enumerate()
        .map(|(i, (name, n))| {
            let w = if name == "scale" {
                vec![1.0 / (HEAD_DIM as f32).sqrt()]
            } else {
                weights(100 + i as u64, n)
            };
            (name, w)
        })
        .collect()
}

// ---- naive dense evaluation, f64, no sharing with the runtime's kernels ----

fn erf64(x: f64) -> f64 {
    // Maclaurin series; accurate to ~1e-12 for |x| < 4, saturates beyond.
    if x.abs() > 4.0 {
        return x.signum();
    }
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-16 {
        n += 1.0;
        term *= -x * x / n;
        sum += term / (2.0 * n + 1.0);
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// `x[rows, k] @ w[k, n] + b`.
pub fn naive_linear(x: &[f64], w: &[f32], b: &[f32], k: usize, n: usize) -> Vec<f64> {
    let rows = x.len() / k;
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            let mut acc = f64::from(b[j]);
            for i in 0..k {
                acc += x[r * k + i] * f64::from(w[i * n + j]);
            }
            out[r * n + j] = acc;
        }
    }
    out
}

fn naive_softmax_rows(x: &mut [f64], n: usize) {
    for row in x.chunks_mut(n) {
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        row.iter_mut().for_each(|v| *v = (*v - max).exp() / sum);
    }
}

pub fn naive_mlp(x: &[f32], w: &[(&str, Vec<f32>)]) -> Vec<f64> {
    let get = |n: &str| &w.iter().find(|(k, _)| *k == n).unwrap().1;
    let x: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    let mut h = naive_linear(&x, get("w1"), get("b1"), 16, 24);
    h.iter_mut()
        .for_each(|v| *v = 0.5 * *v * (1.0 + erf64(*v / 2f64.sqrt())));
    let mut y = naive_linear(&h, get("w2"), get("b2"), 24, 8);
    naive_softmax_rows(&mut y, 8);
    y
}

pub fn mlp_weights() -> Vec<(&'static str, Vec<f32>)> {
    vec![
        ("w1", weights(1, 16 * 24)),
        ("b1", weights(2, 24)),
        ("w2", weights(3, 24 * 8)),
        ("b2", weights(4, 8)),
    ]
}

pub fn naive_block(x: &[f32], batch: usize, seq: usize, w: &[(&str, Vec<f32>)]) -> Vec<f64> {
    let get = |n: &str| &w.iter().find(|(k, _)| *k == n).unwrap().1;
    let h = HIDDEN;
    let x: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    let q = naive_linear(&x, get("wq"), get("bq"), h, h);
    let k = naive_linear(&x, get("wk"), get("bk"), h, h);
    let v = naive_linear(&x, get("wv"), get("bv"), h, h);
    let scale = f64::from(get("scale")[0]);
    let mut ctx = vec![0.0; batch * seq * h];
    for b in 0..batch {
        for hh in 0..HEADS {
            let at = |t: &[f64], s: usize, d: usize| t[(b * seq + s) * h + hh * HEAD_DIM + d];
            for i in 0..seq {
                let mut scores: Vec<f64> = (0..seq)
                    .map(|j| {
                        (0..HEAD_DIM)
                            .map(|d| at(&q, i, d) * at(&k, j, d))
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                naive_softmax_rows(&mut scores, seq);
                for d in 0..HEAD_DIM {
                    ctx[(b * seq + i) * h + hh * HEAD_DIM + d] =
                        (0..seq).map(|j| scores[j] * at(&v, j, d)).sum();
                }
            }
        }
    }
    let o = naive_linear(&ctx, get("wo"), get("bo"), h, h);
    let (gamma, beta) = (get("gamma"), get("beta"));
    let mut out = vec![0.0; o.len()];
    for r in 0..batch * seq {
        let row: Vec<f64> = (0..h).map(|i| o[r * h + i] + x[r * h + i]).collect();
        let mean = row.iter().sum::<f64>() / h as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / h as f64;
        for i in 0..h {
            out[r * h + i] =
                (row[i] - mean) / (var + 1e-5).sqrt() * f64::from(gamma[i]) + f64::from(beta[i]);
        }
    }
    out
}

pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}
