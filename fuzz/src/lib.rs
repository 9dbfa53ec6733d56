//! What the fuzz targets share: a byte reader that never runs out (an exhausted input reads as
//! zeros), and one module per target.

pub mod dims;
pub mod graph;
pub mod lir;

use rlx_ir::TensorData;
use rlx_runtime::HostData;

/// Owned data as the borrowed form runs and bindings take.
pub fn host(d: &TensorData) -> HostData<'_> {
    match d {
        TensorData::F32(v) => HostData::F32(v),
        TensorData::I64(v) => HostData::I64(v),
        TensorData::I32(v) => HostData::I32(v),
        TensorData::Bool(v) => HostData::Bool(v),
    }
}

/// Reads choices from the fuzzer's bytes.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// An index below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { usize::from(self.u16()) % n }
    }

    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }

    /// Small values most of the time, the extremes sometimes.
    pub fn i64(&mut self) -> i64 {
        match self.u8() % 8 {
            0 => self.pick(&[i64::MIN, i64::MAX, -1, 1 << 31, 1 << 62, -(1 << 40)]),
            1 => i64::from(self.u16() as i16),
            _ => i64::from(self.u8() % 17) - 4,
        }
    }

    pub fn text(&mut self, max: usize) -> String {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| self.pick(&['n', 'm', '+', '-', '*', '(', ')', '1', '2', '0', ' ', '9', 'x']))
            .collect()
    }
}
