//! Builder, shape inference, verifier and printer of the HIR.

use rlx_ir::hir::{Node, Op, ValueId};
use rlx_ir::{ComputeOp, DType, Dim, HirModule, HirMut, IrError, Shape, TensorType};

fn sym_shape(dims: &[&str]) -> Shape {
    Shape(dims.iter().map(|d| Dim::parse(d).unwrap()).collect())
}

#[test]
fn symbolic_reshape_stays_symbolic() {
    let mut m = HirModule::new("r");
    let mut g = HirMut::new(&mut m);
    g.dim("b", 1, 64).unwrap();
    g.dim("s", 1, 512).unwrap();
    let x = g
        .input("x", DType::F32, sym_shape(&["b", "s", "384"]))
        .unwrap();
    let flat = g.reshape(x, sym_shape(&["b*s", "384"])).unwrap();
    assert_eq!(g.module().ty(flat).unwrap().shape.to_string(), "[b*s, 384]");
    let heads = g
        .reshape(
            x,
            Shape(vec![
                Dim::sym("b"),
                Dim::constant(-1),
                Dim::constant(12),
                Dim::constant(32),
            ]),
        )
        .unwrap();
    assert_eq!(
        g.module().ty(heads).unwrap().shape.to_string(),
        "[b, s, 12, 32]"
    );
    let e = g.reshape(x, sym_shape(&["b", "384"])).unwrap_err();
    assert!(
        matches!(&e, IrError::Shape(m) if m.contains("not provably equal")),
        "{e}"
    );
}

#[test]
fn inference_errors_name_the_op_and_shapes() {
    let mut m = HirModule::new("e");
    let mut g = HirMut::new(&mut m);
    g.dim("b", 1, 8).unwrap();
    g.dim("s", 1, 8).unwrap();
    let a = g.input("a", DType::F32, sym_shape(&["b", "4"])).unwrap();
    let c = g.input("c", DType::F32, sym_shape(&["s", "4"])).unwrap();
    let w = g.param("w", DType::F32, Shape::new(&[5, 3])).unwrap();
    let i = g.input("i", DType::I64, sym_shape(&["b", "4"])).unwrap();
    let e = g.add(a, c).unwrap_err().to_string();
    assert!(
        e.contains("add") && e.contains("[b, 4]") && e.contains("[s, 4]"),
        "{e}"
    );
    let e = g.linear(a, w, None, None).unwrap_err().to_string();
    assert!(e.contains("in-features 4 and 5"), "{e}");
    let e = g.matmul(a, w).unwrap_err().to_string();
    assert!(e.contains("inner dims 4 and 5"), "{e}");
    assert!(matches!(g.add(a, i), Err(IrError::DType(_))));
    assert!(matches!(g.softmax(a, 2), Err(IrError::Shape(_))));
    assert!(matches!(g.transpose(a, &[0, 0]), Err(IrError::Shape(_))));
    assert!(matches!(
        g.param("dyn", DType::F32, sym_shape(&["b"])),
        Err(IrError::Shape(_))
    ));
    assert!(matches!(
        g.input("a", DType::F32, Shape::new(&[1])),
        Err(IrError::Graph(_))
    ));
    assert!(matches!(
        g.input("u", DType::F32, sym_shape(&["undeclared"])),
        Err(IrError::Graph(_))
    ));
    assert!(matches!(g.dim("b", 1, 9), Err(IrError::Graph(_))));
    assert!(matches!(g.dim("z", 5, 1), Err(IrError::Binding(_))));
    assert!(matches!(g.add(a, ValueId(999)), Err(IrError::Graph(_))));
}

#[test]
fn broadcasting_follows_numpy() {
    let mut m = HirModule::new("bc");
    let mut g = HirMut::new(&mut m);
    g.dim("b", 1, 8).unwrap();
    let a = g
        .input("a", DType::F32, sym_shape(&["b", "1", "4"]))
        .unwrap();
    let c = g.input("c", DType::F32, Shape::new(&[3, 1])).unwrap();
    let y = g.mul(a, c).unwrap();
    assert_eq!(g.module().ty(y).unwrap().shape.to_string(), "[b, 3, 4]");
}

#[test]
fn verifier_collects_every_problem() {
    let f32s = |d: &[i64]| TensorType::new(DType::F32, Shape::new(d));
    let m = HirModule {
        name: "bad".into(),
        symbols: vec![],
        nodes: vec![
            Node {
                op: Op::Input { name: "x".into() },
                inputs: vec![],
                ty: f32s(&[2, 3]),
            },
            Node {
                op: Op::Input { name: "x".into() },
                inputs: vec![],
                ty: f32s(&[2, 3]),
            },
            Node {
                op: Op::Compute(ComputeOp::Unary(rlx_ir::UnaryOp::Relu)),
                inputs: vec![ValueId(3)],
                ty: f32s(&[2, 3]),
            },
            Node {
                op: Op::Compute(ComputeOp::Unary(rlx_ir::UnaryOp::Relu)),
                inputs: vec![ValueId(0)],
                ty: f32s(&[9]),
            },
        ],
        outputs: vec![],
    };
    let Err(IrError::Verify { problems, .. }) = m.verify() else {
        panic!("verifier passed a broken module")
    };
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let all = problems.join("\n");
    for needle in [
        "used by more than one",
        "not defined before use",
        "recorded type f32[9]",
        "no outputs",
    ] {
        assert!(all.contains(needle), "missing `{needle}` in\n{all}");
    }
}

#[test]
fn printer_shows_ops_types_and_outputs() {
    let mut m = HirModule::new("p");
    let mut g = HirMut::new(&mut m);
    g.dim("b", 1, 8).unwrap();
    let x = g.input("x", DType::F32, sym_shape(&["b", "4"])).unwrap();
    let w = g.param("w", DType::F32, Shape::new(&[4, 2])).unwrap();
    let y = g.linear(x, w, None, Some(rlx_ir::UnaryOp::Gelu)).unwrap();
    g.output("y", y).unwrap();
    let text = m.to_string();
    let want = "hir @p (b in [1, 8]) {\n  %0 = input \"x\" : f32[b, 4]\n  %1 = param \"w\" : f32[4, 2]\n  %2 = linear(%0, %1) act=gelu : f32[b, 2]\n  output \"y\" = %2\n}\n";
    assert_eq!(text, want);
}

#[test]
fn hundred_thousand_chained_ops_build_and_verify() {
    let mut m = HirModule::new("chain");
    let mut g = HirMut::new(&mut m);
    g.dim("b", 1, 8).unwrap();
    let mut v = g.input("x", DType::F32, sym_shape(&["b", "4"])).unwrap();
    for i in 0..100_000 {
        v = if i % 2 == 0 {
            g.unary(rlx_ir::UnaryOp::Tanh, v)
        } else {
            g.add(v, v)
        }
        .unwrap();
    }
    g.output("y", v).unwrap();
    m.verify().unwrap();
    assert_eq!(m.len(), 100_001);
}
