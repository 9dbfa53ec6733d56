//! Golden tests: each pass on a small input, compared with the printed IR in
//! `tests/golden/<pass>/<case>.txt`. `RLX_BLESS=1 cargo test -p rlx-opt --test golden`
//! rewrites the expectations; review the diff before committing.

use std::path::PathBuf;

use rlx_ir::{BinaryOp, DType, Dim, HirModule, HirMut, Shape, TensorData, UnaryOp, ValueId};
use rlx_opt::Pipeline;

fn check(pass: &str, case: &str, passes: &[&str], build: impl FnOnce(&mut HirMut)) {
    let mut m = HirModule::new(case);
    build(&mut HirMut::new(&mut m));
    let before = m.to_string();
    let result = Pipeline::only(passes).unwrap().compile_hir(m).unwrap();
    let text = format!(
        "{before}---- after {} ----\n{}",
        passes.join(", "),
        result.hir
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(pass)
        .join(format!("{case}.txt"));
    if std::env::var("RLX_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing {} (run with RLX_BLESS=1 to create it)",
            path.display()
        )
    });
    if want != text {
        let diff: Vec<String> = want
            .lines()
            .zip(text.lines().chain(std::iter::repeat("")))
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "{} differs (RLX_BLESS=1 to accept):\n{}\n--- got ---\n{text}",
            path.display(),
            diff.join("\n")
        );
    }
}

fn dims(g: &mut HirMut) -> (Dim, Dim) {
    (g.dim("b", 1, 16).unwrap(), g.dim("s", 1, 64).unwrap())
}

fn f32_input(g: &mut HirMut, name: &str, shape: Vec<Dim>) -> ValueId {
    g.input(name, DType::F32, Shape(shape)).unwrap()
}

#[test]
fn simplify_transpose_and_reshape_chains() {
    check("simplify", "chains", &["simplify", "dce"], |g| {
        let (b, s) = dims(g);
        let x = f32_input(g, "x", vec![b.clone(), s.clone(), Dim::constant(8)]);
        let t = g.transpose(x, &[1, 0, 2]).unwrap();
        let t = g.transpose(t, &[1, 0, 2]).unwrap();
        let r = g
            .reshape(t, Shape(vec![&b * &s, Dim::constant(8)]))
            .unwrap();
        let r = g
            .reshape(r, Shape(vec![b, s, Dim::constant(2), Dim::constant(4)]))
            .unwrap();
        let one = g.scalar(1.0).unwrap();
        let y = g.mul(r, one).unwrap();
        let y = g.unary(UnaryOp::Relu, y).unwrap();
        g.output("y", y).unwrap();
    });
}

#[test]
fn cse_merges_duplicates() {
    check("cse", "duplicates", &["cse", "dce"], |g| {
        let (b, _) = dims(g);
        let x = f32_input(g, "x", vec![b, Dim::constant(4)]);
        let a = g.gelu(x).unwrap();
        let c = g.gelu(x).unwrap();
        let y = g.add(a, c).unwrap();
        g.output("y", y).unwrap();
    });
}

#[test]
fn fold_constants_folds_arithmetic() {
    check("fold_constants", "arith", &["fold_constants", "dce"], |g| {
        let (b, _) = dims(g);
        let x = f32_input(g, "x", vec![b, Dim::constant(3)]);
        let c = g
            .constant(&[3], TensorData::F32(vec![1.0, 2.0, 3.0]))
            .unwrap();
        let two = g.scalar(2.0).unwrap();
        let c2 = g.mul(c, two).unwrap();
        let i = g.constant(&[3], TensorData::I64(vec![1, 0, 1])).unwrap();
        let f = g.cast(i, DType::F32).unwrap();
        let c3 = g.add(c2, f).unwrap();
        let y = g.add(x, c3).unwrap();
        g.output("y", y).unwrap();
    });
}

#[test]
fn dce_keeps_interface() {
    check("dce", "unused", &["dce"], |g| {
        let (b, _) = dims(g);
        let x = f32_input(g, "x", vec![b.clone(), Dim::constant(4)]);
        let z = f32_input(g, "z", vec![b, Dim::constant(4)]);
        let _dead = g.unary(UnaryOp::Exp, z).unwrap();
        let y = g.unary(UnaryOp::Tanh, x).unwrap();
        g.output("y", y).unwrap();
    });
}

#[test]
fn epilogue_fuses_bias_and_activation() {
    check(
        "fuse_epilogue",
        "matmul_bias_gelu",
        &["fuse_epilogue", "dce"],
        |g| {
            let (b, s) = dims(g);
            let x = f32_input(g, "x", vec![b, s, Dim::constant(8)]);
            let w = g.param("w", DType::F32, Shape::new(&[8, 16])).unwrap();
            let bias = g.param("bias", DType::F32, Shape::new(&[16])).unwrap();
            let h = g.matmul(x, w).unwrap();
            let h = g.add(h, bias).unwrap();
            let y = g.gelu(h).unwrap();
            g.output("y", y).unwrap();
        },
    );
}

#[test]
fn add_norm_fuses_residual() {
    check(
        "fuse_add_norm",
        "residual",
        &["fuse_add_norm", "dce"],
        |g| {
            let (b, _) = dims(g);
            let x = f32_input(g, "x", vec![b.clone(), Dim::constant(8)]);
            let r = f32_input(g, "r", vec![b, Dim::constant(8)]);
            let gamma = g.param("gamma", DType::F32, Shape::new(&[8])).unwrap();
            let beta = g.param("beta", DType::F32, Shape::new(&[8])).unwrap();
            let a = g.add(x, r).unwrap();
            let y = g.layer_norm(a, gamma, beta, 1e-5).unwrap();
            g.output("y", y).unwrap();
        },
    );
}

#[test]
fn elementwise_chain_becomes_one_program() {
    check(
        "fuse_elementwise",
        "mask_bias",
        &["fuse_elementwise", "dce"],
        |g| {
            let (b, s) = dims(g);
            let m = g.input("mask", DType::I64, Shape(vec![b, s])).unwrap();
            let f = g.cast(m, DType::F32).unwrap();
            let one = g.scalar(1.0).unwrap();
            let inv = g.binary(BinaryOp::Sub, one, f).unwrap();
            let big = g.scalar(-10000.0).unwrap();
            let y = g.mul(inv, big).unwrap();
            let y = g.unary(UnaryOp::Exp, y).unwrap();
            g.output("y", y).unwrap();
        },
    );
}

#[test]
fn a_gate_broadcast_over_many_pixels_is_computed_at_its_own_shape() {
    // hard_sigmoid(s) of a [b, 8, 1, 1] gate scaling [b, 8, 32, 32]: inlined, its 4 steps
    // would run per pixel (8 x 1023 extra elements); it stays a program of its own and the
    // product a plain mul. A [b, 4, 1] operand of [b, 4, 2] is worth inlining (tanh then mul).
    check(
        "fuse_elementwise",
        "broadcast_gate",
        &["fuse_elementwise", "dce"],
        |g| {
            let b = g.dim("b", 1, 16).unwrap();
            let c = |n: i64| Dim::constant(n);
            let x = f32_input(g, "x", vec![b.clone(), c(8), c(32), c(32)]);
            let s = f32_input(g, "s", vec![b.clone(), c(8), c(1), c(1)]);
            let sixth = g.scalar(1.0 / 6.0).unwrap();
            let half = g.scalar(0.5).unwrap();
            let (zero, one) = (g.scalar(0.0).unwrap(), g.scalar(1.0).unwrap());
            let h = g.mul(s, sixth).unwrap();
            let h = g.add(h, half).unwrap();
            let h = g.binary(BinaryOp::Min, h, one).unwrap();
            let h = g.binary(BinaryOp::Max, h, zero).unwrap();
            let y = g.mul(x, h).unwrap();
            g.output("y", y).unwrap();
            let xs = f32_input(g, "xs", vec![b.clone(), c(4), c(2)]);
            let ss = f32_input(g, "ss", vec![b, c(4), c(1)]);
            let t = g.unary(UnaryOp::Tanh, ss).unwrap();
            let z = g.mul(xs, t).unwrap();
            g.output("z", z).unwrap();
        },
    );
}

/// A 2-head attention block with a q/k/v projection, in the exporters' unfused form.
fn attention_block(g: &mut HirMut) {
    let (b, s) = dims(g);
    let x = f32_input(g, "x", vec![b.clone(), s.clone(), Dim::constant(8)]);
    let bias = f32_input(
        g,
        "bias",
        vec![b.clone(), Dim::constant(1), Dim::constant(1), s.clone()],
    );
    let heads = Shape(vec![
        b.clone(),
        s.clone(),
        Dim::constant(2),
        Dim::constant(4),
    ]);
    let proj = |g: &mut HirMut, n: &str, perm: &[usize]| {
        let w = g
            .param(&format!("w{n}"), DType::F32, Shape::new(&[8, 8]))
            .unwrap();
        let bb = g
            .param(&format!("b{n}"), DType::F32, Shape::new(&[8]))
            .unwrap();
        let l = g.linear(x, w, Some(bb), None).unwrap();
        let r = g.reshape(l, heads.clone()).unwrap();
        g.transpose(r, perm).unwrap()
    };
    let q = proj(g, "q", &[0, 2, 1, 3]);
    let k = proj(g, "k", &[0, 2, 3, 1]);
    let v = proj(g, "v", &[0, 2, 1, 3]);
    let sc = g.matmul(q, k).unwrap();
    let scale = g.scalar(0.5).unwrap();
    let sc = g.mul(sc, scale).unwrap();
    let sc = g.add(sc, bias).unwrap();
    let p = g.softmax(sc, -1).unwrap();
    let ctx = g.matmul(p, v).unwrap();
    let ctx = g.transpose(ctx, &[0, 2, 1, 3]).unwrap();
    let y = g.reshape(ctx, Shape(vec![b, s, Dim::constant(8)])).unwrap();
    g.output("y", y).unwrap();
}

#[test]
fn attention_block_fuses() {
    check(
        "fuse_attention",
        "block",
        &["fuse_attention", "dce"],
        attention_block,
    );
}

#[test]
fn qkv_projections_group() {
    check(
        "fuse_qkv",
        "block",
        &["fuse_attention", "dce", "fuse_qkv", "dce"],
        attention_block,
    );
}

#[test]
fn softmax_takes_its_scale_and_mask() {
    check(
        "fuse_softmax",
        "scale_mask",
        &["fuse_softmax", "dce"],
        |g| {
            let (b, s) = dims(g);
            let x = f32_input(
                g,
                "x",
                vec![b.clone(), Dim::constant(4), s.clone(), s.clone()],
            );
            let bias = f32_input(g, "bias", vec![b, Dim::constant(1), Dim::constant(1), s]);
            let c = g.scalar(8.0).unwrap();
            let y = g.binary(BinaryOp::Div, x, c).unwrap();
            let y = g.add(y, bias).unwrap();
            let y = g.softmax(y, -1).unwrap();
            g.output("y", y).unwrap();
        },
    );
}

#[test]
fn erf_gelu_becomes_gelu_and_joins_the_linear() {
    check(
        "fuse_gelu",
        "exported",
        &["fuse_gelu", "dce", "fuse_epilogue", "dce"],
        |g| {
            let (b, _) = dims(g);
            let x = f32_input(g, "x", vec![b, Dim::constant(8)]);
            let w = g.param("w", DType::F32, Shape::new(&[8, 4])).unwrap();
            let bias = g.param("bias", DType::F32, Shape::new(&[4])).unwrap();
            let h = g.matmul(x, w).unwrap();
            let h = g.add(h, bias).unwrap();
            let r2 = g.scalar(std::f32::consts::SQRT_2).unwrap();
            let d = g.binary(BinaryOp::Div, h, r2).unwrap();
            let e = g.unary(UnaryOp::Erf, d).unwrap();
            let one = g.scalar(1.0).unwrap();
            let a = g.add(e, one).unwrap();
            let p = g.mul(h, a).unwrap();
            let half = g.scalar(0.5).unwrap();
            let y = g.mul(p, half).unwrap();
            g.output("y", y).unwrap();
        },
    );
}

#[test]
fn fuse_silu_into_a_convolution() {
    check(
        "fuse_silu",
        "conv",
        &["fuse_silu", "dce", "fuse_epilogue", "dce"],
        |g| {
            let x = f32_input(
                g,
                "x",
                vec![
                    Dim::constant(1),
                    Dim::constant(4),
                    Dim::constant(6),
                    Dim::constant(6),
                ],
            );
            let w = g.param("w", DType::F32, Shape::new(&[8, 4, 3, 3])).unwrap();
            let b = g.param("b", DType::F32, Shape::new(&[8])).unwrap();
            let c = g.conv(x, w, Some(b), &[], &[1, 1, 1, 1], &[], 1).unwrap();
            let s = g.unary(UnaryOp::Sigmoid, c).unwrap();
            // sigmoid(c) * c: the sigmoid first.
            let y = g.mul(s, c).unwrap();
            g.output("y", y).unwrap();
            // A sigmoid with a second user stays: x * sigmoid(x) is not rewritten.
            let s2 = g.unary(UnaryOp::Sigmoid, x).unwrap();
            let z = g.mul(x, s2).unwrap();
            g.output("z", z).unwrap();
            g.output("s", s2).unwrap();
        },
    );
}

/// A Llama MLP: `down(silu(gate(x)) * up(x))`, weights in PyTorch's `[out, in]` layout.
fn swiglu_mlp(g: &mut HirMut) {
    let (b, s) = dims(g);
    let x = f32_input(g, "x", vec![b, s, Dim::constant(8)]);
    let wg = g.param("wg", DType::F32, Shape::new(&[12, 8])).unwrap();
    let wu = g.param("wu", DType::F32, Shape::new(&[12, 8])).unwrap();
    let wd = g.param("wd", DType::F32, Shape::new(&[8, 12])).unwrap();
    let gate = g.linear_t(x, wg, None, None).unwrap();
    let gate = g.unary(UnaryOp::Silu, gate).unwrap();
    let up = g.linear_t(x, wu, None, None).unwrap();
    let h = g.binary(BinaryOp::Mul, up, gate).unwrap();
    let y = g.linear_t(h, wd, None, None).unwrap();
    g.output("y", y).unwrap();
}

#[test]
fn swiglu_gate_and_up_group() {
    check("fuse_swiglu", "mlp", &["fuse_swiglu", "dce"], swiglu_mlp);
    // After fuse_epilogue took the silu into the gate linear.
    check(
        "fuse_swiglu",
        "mlp_epilogue",
        &["fuse_epilogue", "fuse_swiglu", "dce"],
        swiglu_mlp,
    );
}
