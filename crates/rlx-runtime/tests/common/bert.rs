//! A BERT-style encoder built with the builder in the unfused form exporters emit (hidden 384,
//! 12 heads, FFN 1536, GELU, post layer norm, padding mask), for fusion and accuracy tests.

use rlx_ir::{BinaryOp, DType, Dim, HirModule, HirMut, Shape, UnaryOp, ValueId};

pub const H: i64 = 384;
pub const HEADS: i64 = 12;
pub const FFN: i64 = 1536;

fn p(g: &mut HirMut, name: String, shape: &[i64]) -> ValueId {
    g.param(&name, DType::F32, Shape::new(shape)).unwrap()
}

/// Param names and shapes of layer `l`.
pub fn layer_params(l: usize) -> Vec<(String, Vec<i64>)> {
    let mut v = Vec::new();
    for (n, s) in [
        ("wq", vec![H, H]),
        ("bq", vec![H]),
        ("wk", vec![H, H]),
        ("bk", vec![H]),
        ("wv", vec![H, H]),
        ("bv", vec![H]),
        ("wo", vec![H, H]),
        ("bo", vec![H]),
        ("ln1_g", vec![H]),
        ("ln1_b", vec![H]),
        ("w1", vec![H, FFN]),
        ("b1", vec![FFN]),
        ("w2", vec![FFN, H]),
        ("b2", vec![H]),
        ("ln2_g", vec![H]),
        ("ln2_b", vec![H]),
    ] {
        v.push((format!("l{l}.{n}"), s));
    }
    v
}

/// `layers` encoder layers over input `x` [batch, seq, 384] and padding mask [batch, seq] (i64).
pub fn encoder(layers: usize) -> HirModule {
    encoder_with(layers, false)
}

/// As [`encoder`]; with `torch_layout` every linear weight is stored `[out, in]` (as in
/// PyTorch checkpoints) under the same name, its shape swapped.
pub fn encoder_with(layers: usize, torch_layout: bool) -> HirModule {
    let mut m = HirModule::new("bert_encoder");
    let mut g = HirMut::new(&mut m);
    let b = g.dim("batch", 1, 64).unwrap();
    let s = g.dim("seq", 1, 512).unwrap();
    let bsh = Shape(vec![b.clone(), s.clone(), Dim::constant(H)]);
    let mut x = g.input("x", DType::F32, bsh.clone()).unwrap();
    let mask = g
        .input("mask", DType::I64, Shape(vec![b.clone(), s.clone()]))
        .unwrap();
    // Additive mask bias, as exporters write it: (1 - mask) * -10000, shaped [b, 1, 1, s].
    let mf = g.cast(mask, DType::F32).unwrap();
    let one = g.scalar(1.0).unwrap();
    let inv = g.binary(BinaryOp::Sub, one, mf).unwrap();
    let big = g.scalar(-10000.0).unwrap();
    let bias = g.mul(inv, big).unwrap();
    let one_d = Dim::constant(1);
    let bias = g
        .reshape(
            bias,
            Shape(vec![b.clone(), one_d.clone(), one_d, s.clone()]),
        )
        .unwrap();
    let heads = Shape(vec![
        b.clone(),
        s.clone(),
        Dim::constant(HEADS),
        Dim::constant(H / HEADS),
    ]);
    for l in 0..layers {
        let w: Vec<ValueId> = layer_params(l)
            .into_iter()
            .map(|(n, mut s)| {
                if torch_layout {
                    s.reverse();
                }
                p(&mut g, n, &s)
            })
            .collect();
        let lin = |g: &mut HirMut, x, w, b, act| {
            if torch_layout {
                g.linear_t(x, w, Some(b), act)
            } else {
                g.linear(x, w, Some(b), act)
            }
            .unwrap()
        };
        let q = lin(&mut g, x, w[0], w[1], None);
        let k = lin(&mut g, x, w[2], w[3], None);
        let v = lin(&mut g, x, w[4], w[5], None);
        let split = |g: &mut HirMut, t, perm: &[usize]| {
            let r = g.reshape(t, heads.clone()).unwrap();
            g.transpose(r, perm).unwrap()
        };
        let qh = split(&mut g, q, &[0, 2, 1, 3]);
        let kt = split(&mut g, k, &[0, 2, 3, 1]);
        let vh = split(&mut g, v, &[0, 2, 1, 3]);
        let scores = g.matmul(qh, kt).unwrap();
        let scale = g.scalar(1.0 / ((H / HEADS) as f32).sqrt()).unwrap();
        let scores = g.mul(scores, scale).unwrap();
        let scores = g.add(scores, bias).unwrap();
        let probs = g.softmax(scores, -1).unwrap();
        let ctx = g.matmul(probs, vh).unwrap();
        let ctx = g.transpose(ctx, &[0, 2, 1, 3]).unwrap();
        let ctx = g.reshape(ctx, bsh.clone()).unwrap();
        let ao = lin(&mut g, ctx, w[6], w[7], None);
        let r1 = g.add(ao, x).unwrap();
        let h1 = g.layer_norm(r1, w[8], w[9], 1e-12).unwrap();
        let f = lin(&mut g, h1, w[10], w[11], Some(UnaryOp::Gelu));
        let f2 = lin(&mut g, f, w[12], w[13], None);
        let r2 = g.add(f2, h1).unwrap();
        x = g.layer_norm(r2, w[14], w[15], 1e-12).unwrap();
    }
    g.output("hidden", x).unwrap();
    m
}

/// Deterministic weights for every param of `encoder(layers)`: small normal-ish values,
/// layer-norm gains near 1.
pub fn encoder_weights(layers: usize) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for l in 0..layers {
        for (i, (name, shape)) in layer_params(l).into_iter().enumerate() {
            let n = shape.iter().product::<i64>() as usize;
            let mut w = super::weights((l * 100 + i) as u64 + 11, n);
            let scale = if name.ends_with("_g") {
                0.2
            } else if shape.len() == 2 {
                0.1
            } else {
                0.05
            };
            let shift = if name.ends_with("_g") { 1.0 } else { 0.0 };
            w.iter_mut().for_each(|v| *v = *v * scale + shift);
            out.push((name, w));
        }
    }
    out
}

/// A padding mask: row `i` keeps its first `seq - i % 3` tokens.
pub fn padding_mask(batch: usize, seq: usize) -> Vec<i64> {
    (0..batch * seq)
        .map(|k| i64::from(k % seq < seq - ((k / seq) % 3).min(seq - 1)))
        .collect()
}

/// `w` of shape `[rows, cols]` transposed to `[cols, rows]`.
pub fn transposed(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}
