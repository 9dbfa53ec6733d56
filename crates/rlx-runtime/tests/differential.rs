//! Differential tests: random well-typed graphs (op sequences over a pool of values, symbolic
//! dims `b` and `s`, broadcasting, zero-sized dims; vision ops in `differential/vision.rs`)
//! compiled with and without passes, run on two threads, and compared with the reference
//! interpreter on random bindings and data.
//!
//! `RLX_PROPTEST_CASES=5000 cargo test --release -p rlx-runtime --test differential` runs more.
//! Values whose computation is exact in both engines (data movement, integer ops, single
//! IEEE operations on exact values) are compared bit for bit; the rest within
//! `support::RTOL`/`ATOL`. Comparisons and float→int casts only see exact values, so a
//! rounding difference never flips a branch.

mod support;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rlx_ir::{BinaryOp, DType, DimBinding, HirModule, HirMut, Shape, TensorData, UnaryOp};

#[path = "differential/generator.rs"]
mod generator;
#[path = "differential/vision.rs"]
mod vision;

use generator::*;

/// Leaf data under `bind` (the shapes and index ranges depend on it).
fn data(leaves: &[Leaf], bind: &DimBinding, seed: u64) -> Vec<support::Named> {
    let mut r = generator::Rng::new(seed);
    leaves
        .iter()
        .map(|l| {
            let n: i64 = l.shape.iter().map(|d| at(bind, d)).product();
            let fill = match &l.fill {
                Fill::Index(d) => Fill::Index(c(at(bind, d))),
                f => f.clone(),
            };
            (
                l.name.clone(),
                fill_data(&mut r, l.dtype, n as usize, &fill),
            )
        })
        .collect()
}

fn cases() -> u32 {
    std::env::var("RLX_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn run_case(steps: &[(u8, u64)], outs: &[u64], seed: u64, bindings: &[(i64, i64)]) {
    let case = build(steps, outs, seed);
    let params = data(&case.params, &lo(), seed ^ 0xA5A5);
    let runs: Vec<(DimBinding, Vec<support::Named>)> = bindings
        .iter()
        .enumerate()
        .map(|(i, &(b, s))| {
            let bind = DimBinding::new().with("b", b).with("s", s);
            let inputs = data(&case.inputs, &bind, seed.wrapping_add(i as u64));
            (bind, inputs)
        })
        .collect();
    support::check(&case.hir, &params, &runs, &case.exact);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_graphs_match_reference(
        steps in prop::collection::vec((0u8..20, any::<u64>()), 1..20),
        outs in prop::collection::vec(any::<u64>(), 0..3),
        seed in any::<u64>(),
        b1 in B.0..=B.1, s1 in S.0..=S.1, b2 in B.0..=B.1, s2 in S.0..=S.1,
    ) {
        run_case(&steps, &outs, seed, &[(b1, s1), (b2, s2)]);
    }
}

/// Shrunk failures of `random_graphs_match_reference`, kept as named cases.
mod regressions {
    use super::*;

    /// `fuse_elementwise` inlines a one-element constant as a scalar, dropping the axis it adds
    /// by broadcasting: `abs(x[]) + [1.0]` is `f32[1]`, the fused op was typed `f32[]` and the
    /// verifier rejected the template (with optimize=true only).
    #[test]

    fn fuse_elementwise_keeps_rank_of_one_element_constant() {
        let mut hir = HirModule::new("scalar_rank");
        let mut g = HirMut::new(&mut hir);
        let x = g.input("x", DType::F32, Shape::new(&[])).unwrap();
        let a = g.unary(UnaryOp::Abs, x).unwrap();
        let one = g.constant(&[1], TensorData::F32(vec![1.0])).unwrap();
        let y = g.add(a, one).unwrap();
        let y = g.unary(UnaryOp::Rsqrt, y).unwrap();
        g.output("y", y).unwrap();
        let x = vec![("x".to_string(), TensorData::F32(vec![-3.0]))];
        let out = support::check(&hir, &[], &[(DimBinding::new(), x)], &[false]);
        assert_eq!(out[0].shape, vec![1]);
        assert_eq!(out[0].as_f32().unwrap(), &[0.5]);
    }

    /// `fuse_elementwise` fused a unary chain over a one-element constant into an
    /// elementwise op with no operands, which the verifier rejects (optimize=true only).
    #[test]

    fn fuse_elementwise_chain_over_a_constant() {
        let mut hir = HirModule::new("const_chain");
        let mut g = HirMut::new(&mut hir);
        let c = g.constant(&[1], TensorData::F32(vec![0.5])).unwrap();
        let y = g.unary(UnaryOp::Gelu, c).unwrap();
        let y = g.unary(UnaryOp::Tanh, y).unwrap();
        let y = g.unary(UnaryOp::Exp, y).unwrap();
        g.output("y", y).unwrap();
        support::check(&hir, &[], &[(DimBinding::new(), vec![])], &[false]);
    }

    /// i32 `pow` clamped the exponent with `u32::MAX as i32` (= -1): every power was wrong.
    #[test]
    fn int_pow_is_repeated_wrapping_multiplication() {
        let mut hir = HirModule::new("ipow");
        let mut g = HirMut::new(&mut hir);
        let a = g.input("a", DType::I32, Shape::new(&[5])).unwrap();
        let y = g.binary(BinaryOp::Pow, a, a).unwrap();
        g.output("y", y).unwrap();
        let a = vec![("a".to_string(), TensorData::I32(vec![4, 3, -2, 0, 1]))];
        let out = support::check(&hir, &[], &[(DimBinding::new(), a)], &[true]);
        assert_eq!(out[0].data, TensorData::I32(vec![256, 27, 0, 1, 1]));
    }

    /// `relu(NaN)` was 0 (`f32::max` drops NaN); NaN propagates as in torch.
    #[test]
    fn relu_propagates_nan() {
        let mut hir = HirModule::new("relu_nan");
        let mut g = HirMut::new(&mut hir);
        let x = g.input("x", DType::F32, Shape::new(&[3])).unwrap();
        let y = g.unary(UnaryOp::Relu, x).unwrap();
        g.output("y", y).unwrap();
        let x = vec![("x".to_string(), TensorData::F32(vec![f32::NAN, -1.0, 2.0]))];
        let out = support::check(&hir, &[], &[(DimBinding::new(), x)], &[true]);
        let y = out[0].as_f32().unwrap();
        assert!(y[0].is_nan() && y[1] == 0.0 && y[2] == 2.0, "{y:?}");
    }

    /// gelu and gelu_tanh computed `1 + erf|tanh(..)` in f32, which cancels for x < -3 (0.2%
    /// relative error at x = -4, amplified by a following norm).
    #[test]
    fn gelu_tail_keeps_relative_precision() {
        for op in [UnaryOp::Gelu, UnaryOp::GeluTanh] {
            let mut hir = HirModule::new("gelu_tail");
            let mut g = HirMut::new(&mut hir);
            let x = g.input("x", DType::F32, Shape::new(&[4])).unwrap();
            let y = g.unary(op, x).unwrap();
            g.output("y", y).unwrap();
            let x = vec![(
                "x".to_string(),
                TensorData::F32(vec![-3.0, -4.0, -5.0, -6.0]),
            )];
            let want = support::check(&hir, &[], &[(DimBinding::new(), x.clone())], &[false]);
            let mut pipe = support::pipeline(&hir, false, &[]).unwrap();
            let out = support::run(&mut pipe, &hir, false, &DimBinding::new(), &x).unwrap();
            for (g, w) in out[0]
                .as_f32()
                .unwrap()
                .iter()
                .zip(want[0].as_f32().unwrap())
            {
                assert!(((g - w) / w).abs() < 1e-5, "{op}: {g} vs {w}");
            }
        }
    }
}
