//! Dim expressions: parse, combine, evaluate.

use rlx_ir::{Dim, DimBinding, Shape};

use crate::Bytes;

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let mut dims: Vec<Dim> = vec![Dim::sym("n"), Dim::sym("m")];
    while !b.is_empty() && dims.len() < 32 {
        let d = match b.u8() % 6 {
            0 => match Dim::parse(&b.text(24)) {
                Ok(d) => d,
                Err(_) => continue,
            },
            1 => Dim::constant(b.i64()),
            2 => &b.pick(&dims) + &b.pick(&dims),
            3 => &b.pick(&dims) - &b.pick(&dims),
            4 => &b.pick(&dims) * &b.pick(&dims),
            _ => match b.pick(&dims).div_exact(&b.pick(&dims)) {
                Some(d) => d,
                None => continue,
            },
        };
        let _ = d.to_string();
        let _ = (d.as_const(), d.symbols(), d.is_overflow());
        dims.push(d);
    }
    let binding = DimBinding::new().with("n", b.i64()).with("m", b.i64());
    for d in &dims {
        let _ = d.eval(&binding);
    }
    let shape = Shape(dims.iter().take(6).cloned().collect());
    let _ = (shape.numel(), shape.eval(&binding));
    let _ = Dim::product(dims.iter());
}
