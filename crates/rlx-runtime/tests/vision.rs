//! Convolution, pooling and LRN against the reference interpreter on every kernel path:
//! 1-D / 2-D / 3-D, groups (depthwise and not), strides, dilations, asymmetric pads, bias,
//! the 1x1 direct case, ceil mode and count_include_pad; and the shape errors a model can
//! carry (channel mismatch, window larger than the padded input, groups not dividing).

mod support;

use rlx_ir::{DType, Dim, DimBinding, HirModule, HirMut, PoolKind, Shape, TensorData};
use support::Named;

fn data(n: usize, seed: u32) -> TensorData {
    TensorData::F32(
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 41) as f32 / 20.0 - 1.0)
            .collect(),
    )
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

/// The optimized LIR of `h` for its static shapes, `params` bound.
fn optimized_lir(h: &HirModule, params: &[Named]) -> rlx_ir::LirModule {
    let mut pipe = support::pipeline(h, true, params).unwrap();
    pipe.get_or_compile(&DimBinding::new(), || h.clone(), &support::options(true))
        .unwrap()
        .lir()
        .clone()
}

/// Checks `conv(x, w (+ b))` with a symbolic batch, at batch 1 and 2.
#[allow(clippy::too_many_arguments)]
fn check_conv(
    xs: &[usize],
    ws: &[usize],
    bias: bool,
    strides: &[usize],
    pads: &[usize],
    dil: &[usize],
    groups: usize,
) {
    let mut m = HirModule::new("conv");
    let mut g = HirMut::new(&mut m);
    let b = g.dim("batch", 1, 4).unwrap();
    let mut dims = vec![b];
    dims.extend(xs[1..].iter().map(|&d| Dim::constant(d as i64)));
    let x = g.input("x", DType::F32, Shape(dims)).unwrap();
    let w = g
        .param(
            "w",
            DType::F32,
            Shape::new(&ws.iter().map(|&d| d as i64).collect::<Vec<_>>()),
        )
        .unwrap();
    let bv = bias.then(|| {
        g.param("b", DType::F32, Shape::new(&[ws[0] as i64]))
            .unwrap()
    });
    let y = g.conv(x, w, bv, strides, pads, dil, groups).unwrap();
    let r = g.unary(rlx_ir::UnaryOp::Relu, y).unwrap();
    g.output("y", r).unwrap();
    let mut params: Vec<Named> = vec![("w".into(), data(numel(ws), 7))];
    if bias {
        params.push(("b".into(), data(ws[0], 9)));
    }
    let runs: Vec<_> = [1usize, 2]
        .into_iter()
        .map(|n| {
            let mut s = xs.to_vec();
            s[0] = n;
            (
                DimBinding::new().with("batch", n as i64),
                vec![("x".into(), data(numel(&s), 3))],
            )
        })
        .collect();
    support::check(&m, &params, &runs, &[false]);
}

/// `act(conv(x, w, b) + r)` with `r` an input of the output's shape (the residual first in
/// the add when `swap`): the optimized template fuses both into the conv (one kernel), and
/// every path matches the reference on the unfused graph.
fn check_fused_conv(
    xs: &[usize],
    ws: &[usize],
    (strides, pads, groups): (&[usize], &[usize], usize),
    act: rlx_ir::UnaryOp,
    swap: bool,
) {
    let mut m = HirModule::new("conv_epilogue");
    let mut g = HirMut::new(&mut m);
    let shape = |s: &[usize]| Shape::new(&s.iter().map(|&d| d as i64).collect::<Vec<_>>());
    let x = g.input("x", DType::F32, shape(xs)).unwrap();
    let w = g.param("w", DType::F32, shape(ws)).unwrap();
    let b = g.param("b", DType::F32, shape(&ws[..1])).unwrap();
    let y = g.conv(x, w, Some(b), strides, pads, &[], groups).unwrap();
    let rank = xs.len() - 2;
    let mut os = vec![xs[0], ws[0]];
    os.extend((0..rank).map(|i| {
        let pad = pads.get(i).map_or(0, |p| p + pads[rank + i]);
        (xs[2 + i] + pad - ws[2 + i]) / strides.get(i).copied().unwrap_or(1) + 1
    }));
    let r = g.input("r", DType::F32, shape(&os)).unwrap();
    let s = if swap { g.add(r, y) } else { g.add(y, r) }.unwrap();
    let z = g.unary(act, s).unwrap();
    g.output("z", z).unwrap();
    let params: Vec<Named> = vec![
        ("w".into(), data(numel(ws), 7)),
        ("b".into(), data(ws[0], 9)),
    ];
    let inputs: Vec<Named> = vec![
        ("x".into(), data(numel(xs), 3)),
        ("r".into(), data(numel(&os), 5)),
    ];
    let runs = vec![(DimBinding::new(), inputs)];
    support::check(&m, &params, &runs, &[false]);
    let lir = optimized_lir(&m, &params);
    // One convolution and no add or activation kernel (a channels-last one comes with the
    // transposes of its input, residual and output).
    let ops: Vec<&str> = lir.kernels.iter().map(|k| k.op.name()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "conv").count(), 1, "{lir}");
    assert!(
        ops.iter().all(|o| ["conv", "transpose"].contains(o)),
        "{lir}"
    );
    assert!(lir.to_string().contains("+residual act="), "{lir}");
}

#[test]
fn fused_conv_epilogues_match_the_reference() {
    use rlx_ir::UnaryOp::{HardSwish, Relu, Relu6, Sigmoid};
    let same = (&[][..], &[1usize, 1, 1, 1][..], 1);
    // Channel-major patch panels, then the 1x1 kernel read in place, both activations.
    check_fused_conv(&[2, 3, 9, 9], &[4, 3, 3, 3], same, Relu, false);
    check_fused_conv(
        &[2, 16, 6, 6],
        &[24, 16, 1, 1],
        (&[], &[], 1),
        Sigmoid,
        true,
    );
    // Channels-last implicit GEMM: kernel rows of 288 and 1,800 K rows, each one piece.
    check_fused_conv(&[1, 96, 4, 5], &[32, 96, 3, 3], same, Relu, false);
    check_fused_conv(&[1, 600, 3, 3], &[32, 600, 3, 3], same, Relu, true);
    // Relu6 in the tiles' stores, HardSwish after them: sums of 864 and 5,400 products reach
    // past 6 and -3.
    check_fused_conv(&[1, 96, 4, 5], &[32, 96, 3, 3], same, Relu6, false);
    check_fused_conv(&[1, 600, 3, 3], &[40, 600, 3, 3], same, HardSwish, true);
    // Depthwise over 40 channels with a residual: the per-position epilogue on vectors.
    check_fused_conv(
        &[2, 40, 7, 7],
        &[40, 1, 3, 3],
        (&[1, 1], &[1, 1, 1, 1], 40),
        Relu,
        true,
    );
    // A 1x1 with whole panels of channels: residual and relu or relu6 in the tiles' stores;
    // HardSwish in the product's block epilogue (256 K rows: sums past 6).
    check_fused_conv(&[2, 16, 6, 6], &[64, 16, 1, 1], (&[], &[], 1), Relu, false);
    check_fused_conv(
        &[2, 256, 6, 6],
        &[64, 256, 1, 1],
        (&[], &[], 1),
        Relu6,
        false,
    );
    check_fused_conv(
        &[2, 256, 5, 6],
        &[48, 256, 1, 1],
        (&[], &[], 1),
        HardSwish,
        true,
    );
    // Depthwise with a residual: the per-position epilogue's relu6 and HardSwish (40
    // channels: a lane tail; without a residual relu6 goes in the kernel's stores).
    let depthwise = (&[1usize, 1][..], &[1usize, 1, 1, 1][..], 40);
    check_fused_conv(&[2, 40, 7, 7], &[40, 1, 3, 3], depthwise, Relu6, false);
    check_fused_conv(&[2, 40, 7, 7], &[40, 1, 3, 3], depthwise, HardSwish, true);
    // Rows of 4,608 floats, tasks of 10 rows: the per-position epilogue with a residual.
    let wide = (&[1usize, 1][..], &[1usize, 1, 1, 1][..], 64);
    check_fused_conv(&[1, 64, 40, 72], &[64, 1, 3, 3], wide, HardSwish, true);
    // A 16-channel stem (MobileNet v3's): one panel of half the kernel's width, one vector
    // per row on AVX-512, the HardSwish after the tiles.
    let stem = (&[2usize, 2][..], &[1usize, 1, 1, 1][..], 1);
    check_fused_conv(&[1, 3, 17, 16], &[16, 3, 3, 3], stem, HardSwish, false);
    // Position-major (fewer positions than channels), depthwise, a strided 1x1 of rank 3.
    check_fused_conv(&[2, 16, 5, 5], &[40, 16, 3, 3], same, Relu, true);
    check_fused_conv(
        &[2, 6, 7, 7],
        &[6, 1, 3, 3],
        (&[2, 2], &[1, 1, 1, 1], 6),
        Relu,
        false,
    );
    check_fused_conv(
        &[1, 4, 5, 6, 7],
        &[5, 4, 1, 1, 1],
        (&[2, 1, 2], &[], 1),
        Relu,
        false,
    );
}

#[test]
fn winograd_convolutions_match_the_reference() {
    use rlx_ir::UnaryOp::{Relu, Sigmoid};
    // 3x3, stride 1, 16+ channels, 16+ tiles of 2x2 outputs: Winograd F(2x2, 3x3) where the
    // weights are packed. Whole vectors and panels of channels, then 20 input channels (a
    // lane tail) into 40 output channels (an edge panel), odd output sizes (edge tiles), no
    // pads, asymmetric pads, a residual first in the add.
    check_fused_conv(
        &[2, 16, 8, 8],
        &[32, 16, 3, 3],
        (&[], &[1, 1, 1, 1], 1),
        Relu,
        false,
    );
    check_fused_conv(
        &[1, 20, 9, 7],
        &[40, 20, 3, 3],
        (&[], &[1, 1, 1, 1], 1),
        Relu,
        true,
    );
    check_fused_conv(
        &[2, 24, 10, 11],
        &[16, 24, 3, 3],
        (&[], &[], 1),
        Sigmoid,
        false,
    );
    check_fused_conv(
        &[1, 16, 9, 10],
        &[48, 16, 3, 3],
        (&[], &[0, 2, 1, 1], 1),
        Relu,
        true,
    );
    // A symbolic batch, and 40 tile rows of 20 tiles: more than one block of tile rows.
    check_conv(
        &[2, 16, 40, 40],
        &[32, 16, 3, 3],
        true,
        &[],
        &[1, 1, 1, 1],
        &[],
        1,
    );
}

/// A bottleneck block, `relu(conv1x1(relu(conv3x3(y))) + y)` with `y = relu(conv1x1(x))` of
/// `m` channels, and the same 1x1 kernel over its own residual, `relu(conv1x1(y) + y)`. In the
/// block `y` is read for the last time by the residual conv, whose output the arena plan then
/// puts over it (the product adds onto the residual in place); over its own input it cannot.
fn check_bottleneck(xs: &[usize], m: usize) {
    let mut h = HirModule::new("bottleneck");
    let mut g = HirMut::new(&mut h);
    let shape = |s: &[usize]| Shape::new(&s.iter().map(|&d| d as i64).collect::<Vec<_>>());
    let relu = rlx_ir::UnaryOp::Relu;
    let x = g.input("x", DType::F32, shape(xs)).unwrap();
    let w1 = g.param("w1", DType::F32, shape(&[m, xs[1], 1, 1])).unwrap();
    let w2 = g.param("w2", DType::F32, shape(&[16, m, 3, 3])).unwrap();
    let w3 = g.param("w3", DType::F32, shape(&[m, 16, 1, 1])).unwrap();
    let w4 = g.param("w4", DType::F32, shape(&[m, m, 1, 1])).unwrap();
    let b3 = g.param("b3", DType::F32, shape(&[m])).unwrap();
    let c1 = g.conv(x, w1, None, &[], &[], &[], 1).unwrap();
    let y = g.unary(relu, c1).unwrap();
    let c2 = g.conv(y, w2, None, &[], &[1, 1, 1, 1], &[], 1).unwrap();
    let y2 = g.unary(relu, c2).unwrap();
    let c3 = g.conv(y2, w3, Some(b3), &[], &[], &[], 1).unwrap();
    let s3 = g.add(c3, y).unwrap();
    let z = g.unary(relu, s3).unwrap();
    let c4 = g.conv(z, w4, None, &[], &[], &[], 1).unwrap();
    let s4 = g.add(c4, z).unwrap();
    let out = g.unary(relu, s4).unwrap();
    g.output("out", out).unwrap();
    let params: Vec<Named> = vec![
        ("w1".into(), data(m * xs[1], 7)),
        ("w2".into(), data(16 * m * 9, 11)),
        ("w3".into(), data(m * 16, 13)),
        ("w4".into(), data(m * m, 17)),
        ("b3".into(), data(m, 9)),
    ];
    let runs = vec![(DimBinding::new(), vec![("x".into(), data(numel(xs), 5))])];
    support::check(&h, &params, &runs, &[false]);
    let lir = optimized_lir(&h, &params);
    let plan = lir.arena.as_ref().unwrap();
    let onto: Vec<&str> = plan
        .in_place
        .iter()
        .filter_map(|(out, _)| lir.kernels.iter().find(|k| k.output == *out))
        .map(|k| k.op.name())
        .filter(|op| *op == "conv")
        .collect();
    assert_eq!(onto.len(), 1, "{lir}");
}

#[test]
fn residual_convolutions_add_onto_their_residual_in_place() {
    // 64 channels: whole panels, relu in the tiles. 40: an edge panel, added through its
    // tile buffer (AVX-512) or a half tile (AVX2); 48: a half tile (AVX-512). Two images of
    // 7x6 positions: row blocks split over the two threads.
    check_bottleneck(&[2, 16, 7, 6], 64);
    check_bottleneck(&[2, 16, 7, 6], 40);
    check_bottleneck(&[2, 16, 7, 6], 48);
}

#[test]
fn convolutions_match_the_reference() {
    // Channels-last depthwise over whole channel vectors and a tail (40 = 2 x 16 + 8), four
    // interior positions at a time, strided and not.
    check_conv(
        &[2, 40, 9, 10],
        &[40, 1, 3, 3],
        true,
        &[1, 1],
        &[1, 1, 1, 1],
        &[],
        40,
    );
    check_conv(
        &[1, 40, 9, 9],
        &[40, 1, 3, 3],
        true,
        &[2, 2],
        &[1, 1, 1, 1],
        &[],
        40,
    );
    // Whole vectors on every ISA (32 channels): the register sweeps at stride 1 and 2 with
    // remainders (11 = 8 + 2 + 1 and 12 = 8 + 4 interior positions at stride 1, 6 = 4 + 2 and
    // 7 = 4 + 2 + 1 at stride 2), and a dilated kernel (no sweep).
    for (xs, strides, pads, dil) in [
        ([2, 32, 6, 13], [1, 1], [1, 1, 1, 1], [1, 1]),
        ([1, 32, 5, 14], [1, 1], [1, 1, 1, 1], [1, 1]),
        ([1, 32, 7, 15], [2, 2], [1, 1, 1, 1], [1, 1]),
        ([1, 32, 7, 17], [2, 2], [1, 1, 1, 1], [1, 1]),
        ([1, 32, 7, 12], [1, 1], [2, 2, 2, 2], [2, 2]),
        // Pairs of rows at row stride 2 and column stride 1, and the reverse; an odd height
        // whose last row goes alone.
        ([2, 32, 11, 12], [2, 1], [1, 1, 1, 1], [1, 1]),
        ([1, 32, 10, 13], [1, 2], [0, 1, 1, 1], [1, 1]),
        // Four rows at a time at row stride 2 (bands of four rows: 4..8 goes as one).
        ([1, 32, 21, 12], [2, 2], [1, 1, 1, 1], [1, 1]),
    ] {
        check_conv(&xs, &[32, 1, 3, 3], true, &strides, &pads, &dil, 32);
    }
    // Groups of rows over 20 channels (a vector and an overlapping last one on AVX-512).
    for (hw, s) in [(9, 1), (19, 2)] {
        check_conv(
            &[1, 20, hw, hw],
            &[20, 1, 3, 3],
            true,
            &[s, s],
            &[1, 1, 1, 1],
            &[],
            20,
        );
    }
    // 256 channels: rows cut in chunks of 8 positions, each swept by every channel vector.
    for strides in [[1, 1], [2, 2]] {
        check_conv(
            &[1, 256, 5, 21],
            &[256, 1, 3, 3],
            true,
            &strides,
            &[1, 1, 1, 1],
            &[],
            256,
        );
    }
    // A padded image of more than half of L2_BLOCK: one image per block at batch 2.
    check_conv(
        &[2, 64, 46, 46],
        &[16, 64, 3, 3],
        true,
        &[1, 1],
        &[1, 1, 1, 1],
        &[],
        1,
    );
    // Channels-last with column dilation: one K piece per tap.
    check_conv(
        &[2, 16, 7, 7],
        &[32, 16, 3, 3],
        true,
        &[1, 1],
        &[2, 2, 2, 2],
        &[2, 2],
        1,
    );
    check_conv(&[1, 3, 9, 9], &[4, 3, 3, 3], true, &[], &[], &[], 1);
    // Stems gathering their padded image from the channel-major input: MobileNet's 3x3 / 2
    // (an edge panel of 24 channels), ResNet's 7x7 / 2, padding at the end only, and a kernel
    // wider than the image.
    for (xs, ws, strides, pads) in [
        ([2, 3, 30, 37], [24, 3, 3, 3], [2, 2], [1, 1, 1, 1]),
        ([1, 3, 23, 40], [32, 3, 7, 7], [2, 2], [3, 3, 3, 3]),
        ([1, 2, 9, 29], [8, 2, 3, 3], [1, 1], [0, 0, 2, 2]),
        ([1, 4, 6, 5], [8, 4, 3, 7], [1, 2], [1, 3, 1, 3]),
    ] {
        check_conv(&xs, &ws, true, &strides, &pads, &[], 1);
    }
    check_conv(
        &[1, 3, 10, 11],
        &[5, 3, 3, 2],
        false,
        &[2, 1],
        &[1, 0, 2, 1],
        &[1, 2],
        1,
    );
    check_conv(
        &[1, 4, 8, 8],
        &[6, 2, 3, 3],
        true,
        &[1, 1],
        &[1, 1, 1, 1],
        &[],
        2,
    ); // groups
    check_conv(
        &[1, 6, 7, 7],
        &[6, 1, 3, 3],
        true,
        &[2, 2],
        &[1, 1, 1, 1],
        &[],
        6,
    ); // depthwise
    check_conv(
        &[1, 3, 11, 13],
        &[3, 1, 3, 4],
        true,
        &[2, 3],
        &[1, 2, 0, 1],
        &[2, 1],
        3,
    ); // depthwise: column stride 3 (phased rows), dilated rows, asymmetric pads
    for (width, pads) in [(8, [2, 2, 1, 1]), (9, [0, 0, 1, 0]), (6, [1, 3, 0, 2])] {
        // Column stride 2 (deinterleaved rows): even and odd begin pads and widths.
        check_conv(
            &[1, 3, 5, width],
            &[3, 1, 3, 3],
            true,
            &[1, 2],
            &pads,
            &[],
            3,
        );
    }
    check_conv(
        &[1, 4, 5, 5],
        &[8, 1, 3, 3],
        false,
        &[],
        &[1, 1, 1, 1],
        &[],
        4,
    ); // multiplier 2
    check_conv(&[1, 16, 6, 6], &[40, 16, 1, 1], true, &[], &[], &[], 1); // 1x1, read in place
    // Fewer output positions than channels and at least 16 input channels: position-major
    // (packed weights) when prepacked, with padding, strides, dilations, an edge panel of
    // channels, and more input channels than one K block (segments split within a tap).
    check_conv(
        &[1, 16, 5, 5],
        &[40, 16, 3, 3],
        true,
        &[],
        &[1, 1, 1, 1],
        &[],
        1,
    );
    check_conv(
        &[1, 300, 3, 3],
        &[40, 300, 3, 3],
        true,
        &[],
        &[1, 1, 1, 1],
        &[],
        1,
    );
    check_conv(
        &[1, 20, 9, 8],
        &[37, 20, 3, 2],
        false,
        &[2, 3],
        &[2, 0, 1, 1],
        &[2, 1],
        1,
    );
    check_conv(&[1, 16, 8, 8], &[33, 16, 1, 1], true, &[2, 2], &[], &[], 1);
    // Maps no wider than the padding: kernel columns that reach no input at all.
    check_conv(
        &[1, 3, 1, 1],
        &[3, 1, 5, 5],
        true,
        &[],
        &[2, 2, 2, 2],
        &[],
        3,
    );
    check_conv(
        &[1, 2, 1, 2],
        &[4, 2, 5, 5],
        true,
        &[],
        &[2, 2, 2, 2],
        &[],
        1,
    );
    // Empty axes: no input channels (the bias alone), an empty row, a depthwise empty row.
    check_conv(
        &[1, 0, 3, 3],
        &[8, 0, 3, 3],
        true,
        &[],
        &[1, 1, 1, 1],
        &[],
        1,
    );
    check_conv(
        &[1, 4, 2, 0],
        &[8, 4, 2, 2],
        true,
        &[],
        &[0, 1, 0, 1],
        &[],
        1,
    );
    check_conv(
        &[1, 2, 3, 0],
        &[2, 1, 1, 1],
        true,
        &[1, 2],
        &[0, 0, 0, 1],
        &[],
        2,
    );
    // Output rows longer than a panel, and panels that start mid-row.
    check_conv(
        &[2, 3, 5, 70],
        &[9, 3, 3, 4],
        true,
        &[1, 1],
        &[1, 2, 0, 1],
        &[1, 2],
        1,
    );
    check_conv(&[1, 2, 17], &[3, 2, 4], true, &[3], &[2, 1], &[2], 1); // 1-D
    check_conv(&[1, 3, 11], &[4, 3, 1], true, &[3], &[], &[], 1); // 1-D strided 1x1: subsampled
    check_conv(
        &[1, 2, 5, 4, 6],
        &[3, 2, 2, 3, 2],
        true,
        &[1, 2, 1],
        &[0, 1, 1, 1, 0, 0],
        &[],
        1,
    ); // 3-D
    check_conv(
        &[1, 64, 14, 14],
        &[70, 64, 3, 3],
        true,
        &[1, 1],
        &[1, 1, 1, 1],
        &[],
        1,
    ); // panels
}

/// A pool's kernel, strides, pads, dilations, ceil_mode and count_include_pad.
type PoolCase<'a> = (
    &'a [usize],
    &'a [usize],
    &'a [usize],
    &'a [usize],
    bool,
    bool,
);

/// `pool(conv(x))` with a 1x1 convolution of `xs[1]` (16+) channels to `m`: the optimizer
/// runs both channels-last (checked in the LIR), and every path matches the reference.
fn check_pool_after_conv(kind: PoolKind, xs: &[usize], m: usize, pool: PoolCase) {
    let (k, strides, pads, dil, ceil, include_pad) = pool;
    let mut h = HirModule::new("conv_pool");
    let mut g = HirMut::new(&mut h);
    let shape = |s: &[usize]| Shape::new(&s.iter().map(|&d| d as i64).collect::<Vec<_>>());
    let x = g.input("x", DType::F32, shape(xs)).unwrap();
    let w = g.param("w", DType::F32, shape(&[m, xs[1], 1, 1])).unwrap();
    let y = g.conv(x, w, None, &[], &[], &[], 1).unwrap();
    let z = g
        .pool(kind, y, k, strides, pads, dil, ceil, include_pad)
        .unwrap();
    g.output("z", z).unwrap();
    let params: Vec<Named> = vec![("w".into(), data(m * xs[1], 7))];
    let runs = vec![(DimBinding::new(), vec![("x".into(), data(numel(xs), 5))])];
    support::check(&h, &params, &runs, &[false]);
    let lir = optimized_lir(&h, &params);
    let text = lir.to_string();
    assert_eq!(text.matches("channels_last").count(), 2, "{lir}");
}

#[test]
fn channels_last_pools_match_the_reference() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        // 3x3 / 2 with pads (ResNet's), 20 channels (a vector and a tail).
        check_pool_after_conv(
            kind,
            &[2, 16, 9, 9],
            20,
            (&[3, 3], &[2, 2], &[1, 1, 1, 1], &[], false, false),
        );
        // 100 channels: blocks of four vectors, single vectors and a tail on every ISA.
        check_pool_after_conv(
            kind,
            &[1, 16, 11, 10],
            100,
            (&[3, 3], &[2, 2], &[1, 1, 1, 1], &[], false, false),
        );
        // ceil_mode, asymmetric pads, counting the pads, 5 channels (tail only).
        check_pool_after_conv(
            kind,
            &[1, 16, 10, 7],
            5,
            (&[3, 2], &[2, 2], &[1, 0, 1, 1], &[], true, true),
        );
        // Dilated, and a global window.
        check_pool_after_conv(
            kind,
            &[1, 16, 9, 8],
            32,
            (&[3, 2], &[1, 2], &[2, 1, 2, 2], &[2, 3], true, false),
        );
        check_pool_after_conv(
            kind,
            &[2, 16, 7, 7],
            48,
            (&[7, 7], &[1, 1], &[], &[], false, false),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn check_pool(
    kind: PoolKind,
    xs: &[usize],
    k: &[usize],
    strides: &[usize],
    pads: &[usize],
    dil: &[usize],
    ceil: bool,
    include_pad: bool,
) {
    let mut m = HirModule::new("pool");
    let mut g = HirMut::new(&mut m);
    let x = g
        .input(
            "x",
            DType::F32,
            Shape::new(&xs.iter().map(|&d| d as i64).collect::<Vec<_>>()),
        )
        .unwrap();
    let y = g
        .pool(kind, x, k, strides, pads, dil, ceil, include_pad)
        .unwrap();
    g.output("y", y).unwrap();
    let runs = vec![(DimBinding::new(), vec![("x".into(), data(numel(xs), 5))])];
    support::check(&m, &[], &runs, &[false]);
}

#[test]
fn pools_match_the_reference() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        check_pool(
            kind,
            &[2, 3, 9, 9],
            &[3, 3],
            &[2, 2],
            &[],
            &[],
            false,
            false,
        );
        check_pool(
            kind,
            &[1, 2, 10, 7],
            &[3, 2],
            &[2, 2],
            &[1, 0, 1, 1],
            &[],
            true,
            false,
        );
        check_pool(
            kind,
            &[1, 2, 10, 7],
            &[3, 2],
            &[2, 2],
            &[1, 0, 1, 1],
            &[],
            true,
            true,
        );
        check_pool(
            kind,
            &[1, 2, 8, 8],
            &[2, 2],
            &[1, 1],
            &[1, 1, 1, 1],
            &[],
            false,
            true,
        );
        // Dilated 2-D windows with padding, and a global pool (the window is the plane).
        check_pool(
            kind,
            &[1, 2, 9, 8],
            &[3, 2],
            &[1, 2],
            &[2, 1, 2, 2],
            &[2, 3],
            true,
            true,
        );
        check_pool(
            kind,
            &[2, 4, 7, 7],
            &[7, 7],
            &[1, 1],
            &[],
            &[],
            false,
            false,
        );
        // A 5x5 window padded by 2 over a 1x1 (and 1x3) map: columns that reach no input.
        check_pool(
            kind,
            &[1, 2, 1, 1],
            &[5, 5],
            &[1, 1],
            &[2, 2, 2, 2],
            &[],
            false,
            true,
        );
        check_pool(
            kind,
            &[1, 1, 1, 3],
            &[5, 5],
            &[1, 1],
            &[2, 2, 2, 2],
            &[],
            false,
            false,
        );
        check_pool(kind, &[1, 1, 11], &[3], &[2], &[1, 1], &[], true, false);
        check_pool(
            kind,
            &[1, 2, 4, 5, 6],
            &[2, 2, 3],
            &[2, 1, 2],
            &[0, 1, 0, 1, 0, 1],
            &[],
            false,
            false,
        );
    }
    check_pool(
        PoolKind::Max,
        &[1, 2, 12, 12],
        &[3, 3],
        &[1, 1],
        &[2, 2, 2, 2],
        &[2, 2],
        false,
        false,
    );
}

#[test]
fn lrn_matches_the_reference() {
    for size in [1usize, 3, 4, 5] {
        let mut m = HirModule::new("lrn");
        let mut g = HirMut::new(&mut m);
        let x = g.input("x", DType::F32, Shape::new(&[2, 7, 3, 3])).unwrap();
        let y = g.lrn(x, size, 1e-4, 0.75, 2.0).unwrap();
        g.output("y", y).unwrap();
        let runs = vec![(DimBinding::new(), vec![("x".into(), data(126, 1))])];
        support::check(&m, &[], &runs, &[false]);
    }
}

#[test]
fn bad_vision_shapes_are_errors() {
    let mut m = HirModule::new("bad");
    let mut g = HirMut::new(&mut m);
    let x = g.input("x", DType::F32, Shape::new(&[1, 3, 5, 5])).unwrap();
    let w4 = g
        .param("w4", DType::F32, Shape::new(&[8, 4, 3, 3]))
        .unwrap();
    assert!(
        g.conv(x, w4, None, &[], &[], &[], 1).is_err(),
        "channel mismatch"
    );
    let w7 = g
        .param("w7", DType::F32, Shape::new(&[8, 3, 7, 7]))
        .unwrap();
    assert!(
        g.conv(x, w7, None, &[], &[], &[], 1).is_err(),
        "kernel larger than the input"
    );
    assert!(
        g.conv(x, w7, None, &[], &[1, 1, 1, 1], &[], 1).is_ok(),
        "fits with pads"
    );
    let wg = g
        .param("wg", DType::F32, Shape::new(&[8, 1, 3, 3]))
        .unwrap();
    assert!(
        g.conv(x, wg, None, &[], &[], &[], 2).is_err(),
        "groups do not divide 3 channels"
    );
    let w3 = g
        .param("w3", DType::F32, Shape::new(&[8, 3, 3, 3]))
        .unwrap();
    assert!(
        g.conv(x, w3, None, &[0, 1], &[], &[], 1).is_err(),
        "zero stride"
    );
    assert!(
        g.conv(x, w3, None, &[], &[1, 1], &[], 1).is_err(),
        "two pads for two axes"
    );
    assert!(
        g.pool(PoolKind::Max, x, &[6, 6], &[], &[], &[], false, false)
            .is_err(),
        "pool window"
    );
    let v = g.input("v", DType::F32, Shape::new(&[1, 3])).unwrap();
    assert!(
        g.pool(PoolKind::Avg, v, &[1], &[], &[], &[], false, false)
            .is_err(),
        "no spatial axis"
    );
}

/// In bf16 and int8 precision a convolution is still computed in f32 (channels-last ones on
/// f32 panels packed for them): the results match the reference at f32 tolerance on every
/// ISA.
#[test]
fn channels_last_convolutions_stay_f32_in_reduced_precision() {
    use rlx_runtime::{CompileOptions, Precision};
    let mut h = HirModule::new("conv_precision");
    let mut g = HirMut::new(&mut h);
    let shape = |s: &[i64]| Shape::new(s);
    let x = g.input("x", DType::F32, shape(&[2, 32, 6, 6])).unwrap();
    let w1 = g.param("w1", DType::F32, shape(&[64, 32, 3, 3])).unwrap();
    let w2 = g.param("w2", DType::F32, shape(&[32, 64, 1, 1])).unwrap();
    let y = g.conv(x, w1, None, &[], &[1, 1, 1, 1], &[], 1).unwrap();
    let y = g.unary(rlx_ir::UnaryOp::Relu, y).unwrap();
    let z = g.conv(y, w2, None, &[], &[], &[], 1).unwrap();
    g.output("z", z).unwrap();
    let params: Vec<Named> = vec![
        ("w1".into(), data(64 * 32 * 9, 7)),
        ("w2".into(), data(32 * 64, 9)),
    ];
    let inputs: Vec<Named> = vec![("x".into(), data(2 * 32 * 36, 3))];
    let binding = DimBinding::new();
    let want = support::reference(&h, &binding, &inputs, &params).unwrap();
    let mut pipe = support::pipeline(&h, true, &params).unwrap();
    for precision in [Precision::Bf16, Precision::Int8] {
        for isa in support::Isa::available() {
            let opts = CompileOptions {
                isa: Some(isa),
                precision,
                ..support::options(true)
            };
            let exe = pipe.get_or_compile(&binding, || h.clone(), &opts).unwrap();
            assert!(
                exe.lir().to_string().contains("channels_last"),
                "{}",
                exe.lir()
            );
            let got = exe.run(&support::refs(&inputs)).unwrap();
            if let Err(e) = support::compare(&got, &want, &[false]) {
                panic!("{precision:?} on {isa}: {e}");
            }
        }
    }
}

/// A squeeze-excitation between two convolutions: the per-image, per-channel scale
/// (`[n, c, 1, 1]`, computed) multiplies the channels-last conv output in place of its
/// layout, so the chain pays a transpose at each end only; against the reference at batch 1
/// and 3.
#[test]
fn a_squeeze_excitation_scale_stays_channels_last() {
    use rlx_ir::{ReduceOp, UnaryOp};
    let mut m = HirModule::new("se");
    let mut g = HirMut::new(&mut m);
    let b = g.dim("batch", 1, 4).unwrap();
    let shape = Shape(vec![
        b,
        Dim::constant(16),
        Dim::constant(8),
        Dim::constant(8),
    ]);
    let x = g.input("x", DType::F32, shape).unwrap();
    let w1 = g
        .param("w1", DType::F32, Shape::new(&[16, 16, 3, 3]))
        .unwrap();
    let w2 = g
        .param("w2", DType::F32, Shape::new(&[24, 16, 1, 1]))
        .unwrap();
    let c = g.conv(x, w1, None, &[], &[1, 1, 1, 1], &[], 1).unwrap();
    let s = g.reduce(ReduceOp::Mean, c, &[2, 3], true).unwrap();
    let s = g.unary(UnaryOp::Sigmoid, s).unwrap();
    let y = g.mul(c, s).unwrap();
    let z = g.conv(y, w2, None, &[], &[], &[], 1).unwrap();
    g.output("z", z).unwrap();
    let params: Vec<Named> = vec![
        ("w1".into(), data(16 * 16 * 9, 7)),
        ("w2".into(), data(24 * 16, 8)),
    ];
    let runs: Vec<_> = [1usize, 3]
        .into_iter()
        .map(|n| {
            (
                DimBinding::new().with("batch", n as i64),
                vec![("x".into(), data(n * 16 * 64, 3))],
            )
        })
        .collect();
    support::check(&m, &params, &runs, &[false]);
    let mut pipe = support::pipeline(&m, true, &params).unwrap();
    let lir = pipe
        .get_or_compile(
            &DimBinding::new().with("batch", 3),
            || m.clone(),
            &support::options(true),
        )
        .unwrap()
        .lir()
        .clone();
    let transposes = lir
        .kernels
        .iter()
        .filter(|k| k.op.name() == "transpose")
        .count();
    assert_eq!(transposes, 2, "{lir}");
}

/// A ShuffleNet unit, `relu(t + gconv(dw(shuffle(relu(gconv(t))))))` with grouped 1x1 kernels
/// of `groups` groups over `c` channels, `t = gconv(x)`: the optimizer keeps it channels-last
/// from end to end (the grouped products, the shuffle as one transpose of the last axis, the
/// depthwise layer), the last product adds onto `t` in place, and every path (packed group
/// panels or the weight read in place) matches the reference.
fn check_shuffle_unit(xs: &[usize], groups: usize) {
    let c = xs[1];
    let mut h = HirModule::new("shuffle_unit");
    let mut g = HirMut::new(&mut h);
    let shape = |s: &[usize]| Shape::new(&s.iter().map(|&d| d as i64).collect::<Vec<_>>());
    let x = g.input("x", DType::F32, shape(xs)).unwrap();
    let grouped = shape(&[c, c / groups, 1, 1]);
    let w0 = g.param("w0", DType::F32, grouped.clone()).unwrap();
    let w1 = g.param("w1", DType::F32, grouped.clone()).unwrap();
    let b1 = g.param("b1", DType::F32, shape(&[c])).unwrap();
    let w2 = g.param("w2", DType::F32, shape(&[c, 1, 3, 3])).unwrap();
    let w3 = g.param("w3", DType::F32, grouped).unwrap();
    let t = g.conv(x, w0, None, &[], &[], &[], groups).unwrap();
    let y = g.conv(t, w1, Some(b1), &[], &[], &[], groups).unwrap();
    let y = g.unary(rlx_ir::UnaryOp::Relu, y).unwrap();
    let (n, hh, ww) = (xs[0], xs[2], xs[3]);
    let split = g
        .reshape(y, shape(&[n, groups, c / groups, hh, ww]))
        .unwrap();
    let swap = rlx_ir::ComputeOp::Transpose {
        perm: vec![0, 2, 1, 3, 4],
    };
    let swapped = g.compute(swap, vec![split]).unwrap();
    let s = g.reshape(swapped, shape(xs)).unwrap();
    let d = g.conv(s, w2, None, &[], &[1, 1, 1, 1], &[], c).unwrap();
    let y = g.conv(d, w3, None, &[], &[], &[], groups).unwrap();
    let y = g.add(t, y).unwrap();
    let z = g.unary(rlx_ir::UnaryOp::Relu, y).unwrap();
    g.output("z", z).unwrap();
    let per_group = c * (c / groups);
    let params: Vec<Named> = vec![
        ("w0".into(), data(per_group, 3)),
        ("w1".into(), data(per_group, 7)),
        ("b1".into(), data(c, 9)),
        ("w2".into(), data(c * 9, 11)),
        ("w3".into(), data(per_group, 13)),
    ];
    let runs = vec![(DimBinding::new(), vec![("x".into(), data(numel(xs), 5))])];
    support::check(&h, &params, &runs, &[false]);
    let lir = optimized_lir(&h, &params);
    let ops: Vec<&str> = lir.kernels.iter().map(|k| k.op.name()).collect();
    // Into channels-last, the shuffle, back: three transposes; four convolutions, all
    // channels-last.
    assert_eq!(
        ops.iter().filter(|o| **o == "transpose").count(),
        3,
        "{lir}"
    );
    assert_eq!(lir.to_string().matches("channels_last").count(), 4, "{lir}");
    let last = lir
        .kernels
        .iter()
        .rev()
        .find(|k| k.op.name() == "conv")
        .unwrap();
    let residual = *last.inputs.last().unwrap();
    let plan = lir.arena.as_ref().unwrap();
    assert!(
        plan.in_place.contains(&(last.output, residual)),
        "the last product adds onto its residual in place\n{lir}"
    );
}

#[test]
fn shuffle_units_stay_channels_last_and_match_the_reference() {
    // 136 channels in 4 groups: 34 per group, a whole panel and an edge (AVX-512 and AVX2);
    // 24 in 2 groups: 12 per group, an edge panel alone; 2 images, 5x6 positions.
    check_shuffle_unit(&[2, 136, 5, 6], 4);
    check_shuffle_unit(&[2, 24, 5, 6], 2);
}
