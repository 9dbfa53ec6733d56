//! The random graph generator of the differential tests: well-typed op sequences over a
//! pool of values, with symbolic dims, broadcasting partners, zero-sized dims and data.

use rlx_ir::{
    BinaryOp, CompareOp, DType, Dim, DimBinding, HirModule, HirMut, ReduceOp, Shape, TensorData,
    UnaryOp, ValueId,
};

pub(crate) const B: (i64, i64) = (0, 3);
pub(crate) const S: (i64, i64) = (1, 8);

/// xorshift64*, so a shrunk seed still gives a deterministic case.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub(crate) fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }
    pub(crate) fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) v: ValueId,
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<Dim>,
    /// Computed exactly alike by any correct engine: compared bit for bit, and safe to feed
    /// comparisons and casts to int.
    pub(crate) exact: bool,
    /// False for the helper scalars, which `find` never offers (see `scalar`).
    pub(crate) pickable: bool,
}

/// How a leaf's data is made.
#[derive(Clone, Debug)]
pub(crate) enum Fill {
    Values,
    /// Gather indices for an axis of this size: in `[-d, d)`.
    Index(Dim),
    /// An attention mask: mostly "attend".
    Mask,
    /// Values times a power of two (a convolution's weights over its fan-in, so long sums
    /// stay near 1 and their rounding small against what follows them).
    Scaled(i32),
}

#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    pub(crate) name: String,
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<Dim>,
    pub(crate) fill: Fill,
}

pub(crate) struct Gen<'m> {
    pub(crate) g: HirMut<'m>,
    pub(crate) pool: Vec<Entry>,
    pub(crate) inputs: Vec<Leaf>,
    pub(crate) params: Vec<Leaf>,
    pub(crate) r: Rng,
    pub(crate) consts: usize,
}

pub(crate) fn at(bind: &DimBinding, d: &Dim) -> i64 {
    d.eval(bind).expect("bound")
}
pub(crate) fn lo() -> DimBinding {
    DimBinding::new().with("b", B.0).with("s", S.0)
}
pub(crate) fn hi() -> DimBinding {
    DimBinding::new().with("b", B.1).with("s", S.1)
}
pub(crate) fn c(v: i64) -> Dim {
    Dim::constant(v)
}
pub(crate) fn numel_hi(shape: &[Dim]) -> i64 {
    shape.iter().map(|d| at(&hi(), d)).product()
}
pub(crate) fn one() -> Dim {
    c(1)
}

/// Right-aligned numpy broadcasting on dims; a dim broadcasts only when it is the constant 1.
pub(crate) fn broadcasts(a: &[Dim], b: &[Dim]) -> bool {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .all(|(x, y)| x == y || *x == one() || *y == one())
}

impl Gen<'_> {
    pub(crate) fn dim(&mut self, big: bool) -> Dim {
        match self.r.below(if big { 12 } else { 11 }) {
            0 | 1 => c(1),
            2 => c(2),
            3 => c(3),
            4 => c(5),
            5 => c(0),
            6 | 7 => Dim::sym("b"),
            8 | 9 => Dim::sym("s"),
            10 => c(4),
            _ => c(700),
        }
    }

    pub(crate) fn shape(&mut self, min_rank: usize) -> Vec<Dim> {
        let rank = min_rank + self.r.below(4 - min_rank.min(3));
        let big = self.r.chance(1, 8);
        let mut s: Vec<Dim> = (0..rank).map(|_| self.dim(big)).collect();
        while numel_hi(&s) > 40_000 {
            let i = self.r.below(s.len());
            s[i] = c(2);
        }
        s
    }

    pub(crate) fn push(&mut self, v: ValueId, exact: bool) -> usize {
        let ty = self.g.module().ty(v).expect("just built").clone();
        self.pool.push(Entry {
            v,
            dtype: ty.dtype,
            shape: ty.shape.0,
            exact,
            pickable: true,
        });
        self.pool.len() - 1
    }

    /// A new input, param or constant of `dtype` and `shape`.
    pub(crate) fn leaf(&mut self, dtype: DType, shape: Vec<Dim>, fill: Fill) -> usize {
        let is_static = shape.iter().all(Dim::is_const);
        let n = self.inputs.len() + self.params.len() + self.consts;
        let kind = if matches!(fill, Fill::Values | Fill::Scaled(_)) && is_static {
            self.r.below(3)
        } else {
            0
        };
        let st: Vec<usize> = shape
            .iter()
            .filter_map(|d| d.as_const())
            .map(|d| d as usize)
            .collect();
        let v = match kind {
            1 if (1..=64).contains(&st.iter().product::<usize>()) => {
                self.consts += 1;
                let data = fill_data(&mut self.r, dtype, st.iter().product(), &fill);
                self.g.constant(&st, data).expect("constant")
            }
            1 | 2 => {
                let name = format!("p{n}");
                self.params.push(Leaf {
                    name: name.clone(),
                    dtype,
                    shape: shape.clone(),
                    fill,
                });
                self.g.param(&name, dtype, Shape(shape)).expect("param")
            }
            _ => {
                let name = format!("in{n}");
                self.inputs.push(Leaf {
                    name: name.clone(),
                    dtype,
                    shape: shape.clone(),
                    fill,
                });
                self.g.input(&name, dtype, Shape(shape)).expect("input")
            }
        };
        self.push(v, true)
    }

    /// A pool entry matching `keep`, favouring recent ones so chains grow.
    pub(crate) fn find(&mut self, keep: impl Fn(&Entry) -> bool) -> Option<usize> {
        let hits: Vec<usize> = (0..self.pool.len())
            .filter(|&i| self.pool[i].pickable && keep(&self.pool[i]))
            .collect();
        if hits.is_empty() {
            return None;
        }
        if self.r.chance(1, 2) {
            return hits.last().copied();
        }
        Some(self.r.pick(&hits))
    }

    pub(crate) fn e(&self, i: usize) -> Entry {
        self.pool[i].clone()
    }

    /// A shape that broadcasts with `s`: leading dims dropped or added, dims set to 1.
    pub(crate) fn partner_shape(&mut self, s: &[Dim]) -> Vec<Dim> {
        let drop = self.r.below(s.len() + 1);
        let mut out: Vec<Dim> = s[drop.min(s.len())..]
            .iter()
            .map(|d| {
                if self.r.chance(1, 3) {
                    one()
                } else if *d == one() && self.r.chance(1, 3) {
                    self.dim(false)
                } else {
                    d.clone()
                }
            })
            .collect();
        if drop == 0 && self.r.chance(1, 4) && out.len() < 4 {
            out.insert(0, self.dim(false));
        }
        if numel_hi(&out) > 40_000 {
            out = vec![one(); out.len()];
        }
        out
    }

    /// A second operand broadcasting with entry `a`: from the pool or a new leaf.
    pub(crate) fn partner(&mut self, a: usize, dtype: DType, need_exact: bool) -> usize {
        let sa = self.e(a).shape;
        if self.r.chance(1, 2)
            && let Some(i) = self
                .find(|e| e.dtype == dtype && (e.exact || !need_exact) && broadcasts(&e.shape, &sa))
        {
            return i;
        }
        let s = self.partner_shape(&sa);
        self.leaf(dtype, s, Fill::Values)
    }

    /// A one-element constant, of rank 0 or 1 (so against a rank-0 operand it may add an axis,
    /// the case of `regressions::fuse_elementwise_keeps_rank_of_one_element_constant`).
    pub(crate) fn scalar(&mut self, v: f32, rank: usize) -> usize {
        self.consts += 1;
        let shape: &[usize] = if rank == 0 && self.r.below(2) == 0 {
            &[]
        } else {
            &[1]
        };
        let id = self
            .g
            .constant(shape, TensorData::F32(vec![v]))
            .expect("scalar");
        self.push(id, true)
    }

    pub(crate) fn unary(&mut self, op: UnaryOp, x: usize) -> usize {
        let v = self.g.unary(op, self.pool[x].v).expect("unary");
        let exact = self.pool[x].exact
            && matches!(
                op,
                UnaryOp::Relu | UnaryOp::Relu6 | UnaryOp::Neg | UnaryOp::Abs
            );
        self.push(v, exact)
    }

    pub(crate) fn binary(&mut self, op: BinaryOp, a: usize, b: usize) -> usize {
        let v = self
            .g
            .binary(op, self.pool[a].v, self.pool[b].v)
            .expect("binary");
        let (ea, eb) = (self.pool[a].exact, self.pool[b].exact);
        let int = self.pool[a].dtype != DType::F32;
        self.push(v, ea && eb && (int || op != BinaryOp::Pow))
    }

    /// `|x| + k`: keeps a rounded value away from a domain edge.
    pub(crate) fn positive(&mut self, x: usize, k: f32) -> usize {
        if self.pool[x].exact {
            return x;
        }
        let a = self.unary(UnaryOp::Abs, x);
        let k = self.scalar(k, self.pool[x].shape.len());
        self.binary(BinaryOp::Add, a, k)
    }
}

pub(crate) fn is_f32(e: &Entry) -> bool {
    e.dtype == DType::F32
}

/// Appends one random op (family `kind`) to the graph; `None` when no operand fitted.
pub(crate) fn step(g: &mut Gen, kind: u8) -> Option<usize> {
    const UNARY: &[UnaryOp] = &[
        UnaryOp::Relu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Erf,
        UnaryOp::Relu6,
        UnaryOp::HardSwish,
    ];
    const ACT: &[UnaryOp] = &[
        UnaryOp::Relu,
        UnaryOp::Relu6,
        UnaryOp::HardSwish,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Erf,
    ];
    let ints = [DType::I64, DType::I32];
    Some(match kind % 20 {
        0 => {
            let x = g.find(is_f32)?;
            let op = g.r.pick(UNARY);
            let x = match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => g.positive(x, 1.0),
                UnaryOp::Exp if !g.pool[x].exact => g.unary(UnaryOp::Tanh, x),
                _ => x,
            };
            g.unary(op, x)
        }
        1 => {
            let a = g.find(is_f32)?;
            let op = g.r.pick(BinaryOp::ALL);
            match op {
                BinaryOp::Pow => {
                    let base = g.positive(a, 0.5);
                    let e = g.r.pick(&[-1.0, 0.5, 2.0, 3.0, 1.5, 0.0]);
                    let e = g.scalar(e, g.pool[base].shape.len());
                    g.binary(op, base, e)
                }
                BinaryOp::Div => {
                    let b = g.partner(a, DType::F32, false);
                    let b = g.positive(b, 0.5);
                    g.binary(op, a, b)
                }
                _ => {
                    let b = g.partner(a, DType::F32, false);
                    if g.r.chance(1, 2) {
                        g.binary(op, a, b)
                    } else {
                        g.binary(op, b, a)
                    }
                }
            }
        }
        2 => {
            let dt = g.r.pick(&ints);
            let a = match g.find(|e| e.dtype == dt) {
                Some(a) => a,
                None => {
                    let s = g.shape(0);
                    g.leaf(dt, s, Fill::Values)
                }
            };
            let b = g.partner(a, dt, true);
            let op = g.r.pick(BinaryOp::ALL);
            g.binary(op, a, b)
        }
        3 => {
            let a = g.find(|e| e.exact)?;
            let dt = g.pool[a].dtype;
            let b = g.partner(a, dt, true);
            let op = g.r.pick(CompareOp::ALL);
            let v = g.g.compare(op, g.pool[a].v, g.pool[b].v).expect("compare");
            g.push(v, true)
        }
        4 => {
            let a = g.find(|_| true)?;
            let dt = g.pool[a].dtype;
            let b = g.partner(a, dt, false);
            let (sa, sb) = (g.e(a).shape, g.e(b).shape);
            let cond = match g.find(|e| {
                e.dtype == DType::Bool && broadcasts(&e.shape, &sa) && broadcasts(&e.shape, &sb)
            }) {
                Some(c) => c,
                None => {
                    let s = g.partner_shape(&g.e(a).shape);
                    let s = if broadcasts(&s, &g.e(b).shape) {
                        s
                    } else {
                        vec![]
                    };
                    g.leaf(DType::Bool, s, Fill::Values)
                }
            };
            let (ea, eb) = (g.pool[a].exact, g.pool[b].exact);
            let v =
                g.g.where_(g.pool[cond].v, g.pool[a].v, g.pool[b].v)
                    .expect("where");
            g.push(v, ea && eb)
        }
        5 => {
            let x = g.find(|_| true)?;
            let to = if g.pool[x].exact {
                g.r.pick(&DType::ALL)
            } else {
                DType::F32
            };
            let v = g.g.cast(g.pool[x].v, to).expect("cast");
            let exact = g.pool[x].exact;
            g.push(v, exact)
        }
        6 => {
            let x = g.find(|e| is_f32(e) && !e.shape.is_empty())?;
            let axis = g.r.below(g.pool[x].shape.len()) as i64
                - if g.r.chance(1, 2) {
                    g.pool[x].shape.len() as i64
                } else {
                    0
                };
            let v = g.g.softmax(g.pool[x].v, axis).expect("softmax");
            g.push(v, false)
        }
        7 => {
            let x = g.find(|e| is_f32(e) && !e.shape.is_empty())?;
            let d = g.pool[x].shape.last().expect("rank >= 1").clone();
            let gamma = g.leaf(DType::F32, vec![d.clone()], Fill::Values);
            // A norm scales its input's rounding error by up to 1/sqrt(eps) on a nearly
            // constant row (f32 mean vs f64 mean), so a rounded input gets a larger eps.
            let eps = if g.pool[x].exact {
                g.r.pick(&[1e-5, 1e-3, 0.1])
            } else {
                g.r.pick(&[1e-2, 0.1])
            };
            let v = if g.r.chance(1, 2) {
                let beta = g.leaf(DType::F32, vec![d], Fill::Values);
                g.g.layer_norm(g.pool[x].v, g.pool[gamma].v, g.pool[beta].v, eps)
                    .expect("layer_norm")
            } else {
                g.g.rms_norm(g.pool[x].v, g.pool[gamma].v, eps)
                    .expect("rms_norm")
            };
            g.push(v, false)
        }
        8 => {
            let x = g.find(|e| e.dtype != DType::Bool)?;
            let e = g.e(x);
            let op = if e.dtype == DType::F32 {
                g.r.pick(ReduceOp::ALL)
            } else {
                g.r.pick(&[ReduceOp::Sum, ReduceOp::Max])
            };
            let axes: Vec<i64> = (0..e.shape.len() as i64)
                .filter(|_| g.r.chance(1, 2))
                .collect();
            let v =
                g.g.reduce(op, e.v, &axes, g.r.chance(1, 2))
                    .expect("reduce");
            let exact =
                e.exact && (op == ReduceOp::Max || (op == ReduceOp::Sum && e.dtype != DType::F32));
            g.push(v, exact)
        }
        9 => {
            let x = g.find(|_| true)?;
            let e = g.e(x);
            let s = reshape_target(&mut g.r, &e.shape);
            let v = g.g.reshape(e.v, Shape(s)).expect("reshape");
            g.push(v, e.exact)
        }
        10 => {
            let x = g.find(|_| true)?;
            let e = g.e(x);
            let mut perm: Vec<usize> = (0..e.shape.len()).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, g.r.below(i + 1));
            }
            let v = g.g.transpose(e.v, &perm).expect("transpose");
            g.push(v, e.exact)
        }
        11 => {
            let x = g.find(|e| !e.shape.is_empty())?;
            let e = g.e(x);
            let axis = g.r.below(e.shape.len());
            let same = |o: &Entry| {
                o.dtype == e.dtype
                    && o.shape.len() == e.shape.len()
                    && (0..e.shape.len()).all(|d| d == axis || o.shape[d] == e.shape[d])
            };
            let mut parts = vec![x];
            for _ in 0..1 + g.r.below(3) {
                let p = match g.find(same) {
                    Some(p) if g.r.chance(1, 2) => p,
                    _ => {
                        let mut s = e.shape.clone();
                        s[axis] = g.dim(false);
                        g.leaf(e.dtype, s, Fill::Values)
                    }
                };
                parts.push(p);
            }
            let exact = parts.iter().all(|&p| g.pool[p].exact);
            let ids: Vec<ValueId> = parts.iter().map(|&p| g.pool[p].v).collect();
            let v = g.g.concat(&ids, axis as i64).expect("concat");
            g.push(v, exact)
        }
        12 => {
            let x = g.find(|e| !e.shape.is_empty())?;
            let e = g.e(x);
            let axis = g.r.below(e.shape.len());
            let d = e.shape[axis].clone();
            let (start, end) = slice_bounds(&mut g.r, &d);
            let v = g.g.slice(e.v, axis as i64, start, end).expect("slice");
            g.push(v, e.exact)
        }
        13 => {
            let x = g.find(|e| e.shape.iter().any(|d| at(&lo(), d) >= 1))?;
            let e = g.e(x);
            let axes: Vec<usize> = (0..e.shape.len())
                .filter(|&a| at(&lo(), &e.shape[a]) >= 1)
                .collect();
            let axis = g.r.pick(&axes);
            let rank = g.r.below(3);
            let mut s: Vec<Dim> = (0..rank).map(|_| g.dim(false)).collect();
            if numel_hi(&s) > 64 {
                s = vec![c(3); rank];
            }
            let dt = g.r.pick(&ints);
            let idx = g.leaf(dt, s, Fill::Index(e.shape[axis].clone()));
            let v =
                g.g.gather(
                    e.v,
                    g.pool[idx].v,
                    axis as i64
                        - if g.r.chance(1, 3) {
                            e.shape.len() as i64
                        } else {
                            0
                        },
                )
                .expect("gather");
            g.push(v, e.exact)
        }
        14 => {
            let a = g.find(|e| is_f32(e) && e.shape.len() >= 2 && numel_hi(&e.shape) <= 4096)?;
            let e = g.e(a);
            let r = e.shape.len();
            let k = e.shape[r - 1].clone();
            let fits = |o: &Entry| {
                is_f32(o)
                    && o.shape.len() >= 2
                    && o.shape[o.shape.len() - 2] == k
                    && broadcasts(&o.shape[..o.shape.len() - 2], &e.shape[..r - 2])
                    && numel_hi(&o.shape) <= 4096
            };
            let b = match g.find(fits) {
                Some(b) if g.r.chance(1, 2) => b,
                _ => {
                    let mut s = g.partner_shape(&e.shape[..r - 2]);
                    let n = g.r.pick(&[c(1), c(3), Dim::sym("s"), c(4)]);
                    s.extend([k, n]);
                    g.leaf(DType::F32, s, Fill::Values)
                }
            };
            let v = g.g.matmul(e.v, g.pool[b].v).expect("matmul");
            g.push(v, false)
        }
        15 => {
            let x = g.find(|e| is_f32(e) && !e.shape.is_empty() && numel_hi(&e.shape) <= 8192)?;
            let e = g.e(x);
            let k = e.shape.last().expect("rank >= 1").clone();
            let n = g.r.pick(&[c(1), c(4), c(6), Dim::sym("s")]);
            // Half the time the weight is `[out, in]` (PyTorch layout), read transposed.
            let t = g.r.chance(1, 2);
            let ws = if t {
                vec![n.clone(), k]
            } else {
                vec![k, n.clone()]
            };
            let w = g.leaf(DType::F32, ws, Fill::Values);
            let bias = if g.r.chance(1, 2) {
                Some(g.leaf(DType::F32, vec![n], Fill::Values))
            } else {
                None
            };
            let act = if g.r.chance(1, 2) {
                Some(g.r.pick(ACT))
            } else {
                None
            };
            let (x, w, b) = (e.v, g.pool[w].v, bias.map(|b| g.pool[b].v));
            let v = if t {
                g.g.linear_t(x, w, b, act)
            } else {
                g.g.linear(x, w, b, act)
            }
            .expect("linear");
            g.push(v, false)
        }
        16 => attention(g),
        18 => crate::vision::conv(g)?,
        19 => crate::vision::other(g)?,
        _ => {
            let dt = g.r.pick(&DType::ALL);
            let s = g.shape(0);
            g.leaf(dt, s, Fill::Values)
        }
    })
}

pub(crate) fn attention(g: &mut Gen) -> usize {
    let q = match g.find(|e| is_f32(e) && e.shape.len() == 4 && numel_hi(&e.shape) <= 2048) {
        Some(q) if g.r.chance(1, 2) => q,
        _ => {
            let s = vec![
                g.r.pick(&[Dim::sym("b"), c(1), c(2)]),
                g.r.pick(&[c(1), c(2)]),
                g.r.pick(&[Dim::sym("s"), c(1), c(3)]),
                g.r.pick(&[c(1), c(4), c(3)]),
            ];
            g.leaf(DType::F32, s, Fill::Values)
        }
    };
    let qs = g.e(q).shape;
    let sk = g.r.pick(&[Dim::sym("s"), qs[2].clone(), c(2), c(0)]);
    let k = if sk == qs[2] && g.r.chance(1, 2) {
        q
    } else {
        g.leaf(
            DType::F32,
            vec![qs[0].clone(), qs[1].clone(), sk.clone(), qs[3].clone()],
            Fill::Values,
        )
    };
    let dv = g.r.pick(&[c(1), c(2), c(5)]);
    let v = g.leaf(
        DType::F32,
        vec![qs[0].clone(), qs[1].clone(), sk.clone(), dv],
        Fill::Values,
    );
    let mask = if g.r.chance(1, 2) {
        let dt = g.r.pick(&DType::ALL);
        Some(g.leaf(dt, vec![qs[0].clone(), sk], Fill::Mask))
    } else {
        None
    };
    let scale = if g.r.chance(1, 2) {
        None
    } else {
        Some(g.r.pick(&[0.5f32, 1.0, 0.125]))
    };
    let ids = [q, k, v].map(|i| g.pool[i].v);
    let out =
        g.g.attention(
            ids[0],
            ids[1],
            ids[2],
            mask.map(|m| g.pool[m].v),
            scale,
            g.r.chance(1, 2),
        )
        .expect("attention");
    g.push(out, false)
}

/// A reshape of `s` that is provably the same size.
pub(crate) fn reshape_target(r: &mut Rng, s: &[Dim]) -> Vec<Dim> {
    let mut out = s.to_vec();
    match r.below(5) {
        0 => vec![Dim::product(s)],
        1 if s.len() >= 2 => {
            let i = r.below(s.len() - 1);
            let merged = &s[i] * &s[i + 1];
            out.splice(i..i + 2, [merged]);
            out
        }
        2 if out.len() < 5 => {
            out.insert(r.below(out.len() + 1), c(1));
            out
        }
        3 => match s.iter().position(|d| *d == c(4) || *d == c(700)) {
            Some(i) => {
                let f = if s[i] == c(4) { 2 } else { 7 };
                let rest = s[i].as_const().expect("constant") / f;
                out.splice(i..i + 1, [c(f), c(rest)]);
                out
            }
            None => out,
        },
        // A -1 hole, inferred by the builder.
        _ if !s.is_empty() && s[0] != c(0) && Dim::product(s).div_exact(&s[0]).is_some() => {
            let mut t = vec![s[0].clone(), c(-1)];
            if s.len() == 1 {
                t = vec![c(-1)];
            }
            t
        }
        _ => out,
    }
}

/// Slice bounds valid for every binding in the symbols' bounds: each bound is a constant or
/// `d - constant` (passed as a negative constant half the time, which the builder turns into
/// `d - c`), and validity is linear in `d`, so checking the smallest and largest `d` suffices.
pub(crate) fn slice_bounds(r: &mut Rng, d: &Dim) -> (Dim, Option<Dim>) {
    let (dmin, dmax) = (at(&lo(), d), at(&hi(), d));
    let bound = |r: &mut Rng| -> (i64, bool) {
        let k = r.below(dmin.max(0) as usize + 1) as i64;
        (k, r.chance(1, 2))
    };
    let (s, e) = (bound(r), bound(r));
    let val = |(k, from_end): (i64, bool), d: i64| if from_end { d - k } else { k };
    let ok = [dmin, dmax].iter().all(|&dd| {
        let (a, b) = (val(s, dd), val(e, dd));
        0 <= a && a <= b && b <= dd
    });
    if !ok {
        return (
            c(0),
            if r.chance(1, 2) {
                None
            } else {
                Some(d.clone())
            },
        );
    }
    let dim = |(k, from_end): (i64, bool), r: &mut Rng| match (from_end, k) {
        (false, k) => c(k),
        (true, 0) => d.clone(),
        (true, k) if r.chance(1, 2) => c(-k),
        (true, k) => d - &c(k),
    };
    let start = dim(s, r);
    let end = if e == (0, true) && r.chance(1, 2) {
        None
    } else {
        Some(dim(e, r))
    };
    (start, end)
}

pub(crate) fn fill_data(r: &mut Rng, dtype: DType, n: usize, fill: &Fill) -> TensorData {
    match (dtype, fill) {
        (DType::F32, Fill::Mask) => {
            TensorData::F32((0..n).map(|_| r.pick(&[1.0, 1.0, 0.0, -0.5])).collect())
        }
        (DType::F32, Fill::Scaled(e)) => match fill_data(r, dtype, n, &Fill::Values) {
            TensorData::F32(v) => TensorData::F32(v.iter().map(|x| x * 2f32.powi(*e)).collect()),
            other => other,
        },
        (DType::F32, _) => {
            let coarse = r.chance(1, 2);
            TensorData::F32(
                (0..n)
                    .map(|_| {
                        if coarse {
                            (r.below(33) as f32 - 16.0) / 8.0
                        } else {
                            (r.next() >> 40) as f32 / (1u64 << 22) as f32 - 2.0
                        }
                    })
                    .collect(),
            )
        }
        (DType::Bool, Fill::Mask) => TensorData::Bool((0..n).map(|_| r.chance(3, 4)).collect()),
        (DType::Bool, _) => TensorData::Bool((0..n).map(|_| r.chance(1, 2)).collect()),
        (int, fill) => {
            let vals: Vec<i64> = (0..n)
                .map(|_| match fill {
                    Fill::Index(d) => {
                        r.below(2 * d.as_const().unwrap_or(1).max(1) as usize) as i64
                            - d.as_const().unwrap_or(1)
                    }
                    Fill::Mask => r.pick(&[1, 1, 0, 2]),
                    Fill::Values | Fill::Scaled(_) => r.below(11) as i64 - 5,
                })
                .collect();
            match int {
                DType::I64 => TensorData::I64(vals),
                _ => TensorData::I32(vals.iter().map(|&v| v as i32).collect()),
            }
        }
    }
}

/// A generated case: the graph, which outputs are exact, and its leaves.
pub(crate) struct Case {
    pub(crate) hir: HirModule,
    pub(crate) exact: Vec<bool>,
    pub(crate) inputs: Vec<Leaf>,
    pub(crate) params: Vec<Leaf>,
}

pub(crate) fn build(steps: &[(u8, u64)], outs: &[u64], seed: u64) -> Case {
    let mut hir = HirModule::new("random");
    let mut g = Gen {
        g: HirMut::new(&mut hir),
        pool: vec![],
        inputs: vec![],
        params: vec![],
        r: Rng::new(seed),
        consts: 0,
    };
    g.g.dim("b", B.0, B.1).expect("b");
    g.g.dim("s", S.0, S.1).expect("s");
    let x = g.shape(1);
    g.leaf(DType::F32, x, Fill::Values);
    let mut last = 0;
    for &(kind, seed) in steps {
        g.r = Rng::new(seed);
        if let Some(v) = step(&mut g, kind) {
            last = v;
        }
    }
    let mut picks = vec![last];
    picks.extend(outs.iter().map(|&o| (o % g.pool.len() as u64) as usize));
    // Debug knob: every value an output, so a failure names the first op that disagrees.
    if std::env::var_os("RLX_DIFF_ALL_OUTPUTS").is_some() {
        picks = (0..g.pool.len()).collect();
    }
    let exact: Vec<bool> = picks.iter().map(|&p| g.pool[p].exact).collect();
    let outputs = picks
        .iter()
        .enumerate()
        .map(|(i, &p)| (format!("out{i}"), g.pool[p].v))
        .collect();
    g.g.set_outputs(outputs).expect("outputs");
    let (inputs, params) = (g.inputs, g.params);
    Case {
        hir,
        exact,
        inputs,
        params,
    }
}
