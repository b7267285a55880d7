//! [`QuantMatrix`]: a quantized weight matrix repacked once at load for the
//! kernels.
//!
//! GGML stores a matrix row by row, each row a run of 32-value blocks
//! (`Q4_1`: f16 d, f16 m, 16 bytes of nibbles, value = d·q + m; `Q8_0`: f16 d,
//! 32 × i8, value = d·q). A row-at-a-time kernel then needs a horizontal sum
//! per row and per-row scale broadcasts. Instead we interleave 16 rows (a
//! *group*) so that 32-bit lane `r` of every 64-byte chunk holds 4 consecutive
//! values of row `r`: one `vpdpbusd` against 4 broadcast activation bytes then
//! advances all 16 rows' dot products, and the 16 rows' scales of a block are
//! one 32-byte load. Per group and block (a *group block*):
//!
//! * `Q4_1` (320 bytes = 16 × 20, the same bytes as GGML): 4 chunks of 64
//!   bytes; in chunk `c`, byte `4r + i` holds row `r`'s value `8c + i` in its
//!   low nibble and value `8c + 4 + i` in its high nibble; then 16 f16 `d`,
//!   then 16 f16 `m`.
//! * `Q8_0` (544 bytes = 16 × 34): 8 chunks of 64 bytes; in chunk `c`, byte
//!   `4r + i` is row `r`'s value `4c + i` (signed); then 16 f16 `d`.
//!
//! Group blocks of one group are contiguous, groups follow each other, so a
//! kernel streams memory linearly. Rows are padded to a multiple of 16 with
//! zero weights whose outputs are never stored.
//!
//! `Q5_0`, `Q5_1` and the k-quants `Q4_K`, `Q5_K`, `Q6_K` reuse `Q4_1`'s
//! nibble interleaving plus high-bit planes; see `planes.rs`.

use candle_core::quantized::{GgmlDType, QTensor};

use super::f16::read_f16;
use super::planes;
use super::{KernelError, Result};

/// Rows interleaved per group (one 512-bit register of i32 lanes).
pub const ROWS_PER_GROUP: usize = 16;
/// Values per activation block, and per quantization block of `Q4_1`,
/// `Q8_0`, `Q5_0` and `Q5_1` (k-quant super-blocks are 8 such blocks).
pub(crate) const BLOCK: usize = 32;

/// The weight formats the kernels support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    Q4_1,
    Q8_0,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

impl QuantFormat {
    pub const ALL: [QuantFormat; 7] = [
        QuantFormat::Q4_1,
        QuantFormat::Q8_0,
        QuantFormat::Q5_0,
        QuantFormat::Q5_1,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
    ];

    /// The candle dtype with the same block encoding.
    pub fn ggml_dtype(self) -> GgmlDType {
        match self {
            QuantFormat::Q4_1 => GgmlDType::Q4_1,
            QuantFormat::Q8_0 => GgmlDType::Q8_0,
            QuantFormat::Q5_0 => GgmlDType::Q5_0,
            QuantFormat::Q5_1 => GgmlDType::Q5_1,
            QuantFormat::Q4K => GgmlDType::Q4K,
            QuantFormat::Q5K => GgmlDType::Q5K,
            QuantFormat::Q6K => GgmlDType::Q6K,
        }
    }

    pub fn from_ggml_dtype(dtype: GgmlDType) -> Option<Self> {
        QuantFormat::ALL
            .into_iter()
            .find(|f| f.ggml_dtype() == dtype)
    }

    /// The `planes.rs` format id, for formats stored as bit planes.
    pub(crate) fn plane(self) -> Option<u8> {
        match self {
            QuantFormat::Q4_1 | QuantFormat::Q8_0 => None,
            QuantFormat::Q5_0 => Some(planes::Q5_0),
            QuantFormat::Q5_1 => Some(planes::Q5_1),
            QuantFormat::Q4K => Some(planes::Q4K),
            QuantFormat::Q5K => Some(planes::Q5K),
            QuantFormat::Q6K => Some(planes::Q6K),
        }
    }

    /// Values of one GGML block (a k-quant super-block is 256).
    pub fn block_values(self) -> usize {
        match self {
            QuantFormat::Q4K | QuantFormat::Q5K | QuantFormat::Q6K => 256,
            _ => BLOCK,
        }
    }

    /// Bytes of one GGML block.
    pub(crate) fn ggml_block_bytes(self) -> usize {
        match self {
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q5_0 => 22,
            QuantFormat::Q5_1 => 24,
            QuantFormat::Q4K => 144,
            QuantFormat::Q5K => 176,
            QuantFormat::Q6K => 210,
        }
    }

    /// Bytes of one group block (one GGML block × 16 rows) in our layout.
    pub(crate) fn group_block_bytes(self) -> usize {
        match self.plane() {
            Some(p) => planes::geometry(p).sb_bytes,
            None => self.ggml_block_bytes() * ROWS_PER_GROUP,
        }
    }

    /// Bits per weight of our layout (the file's is
    /// `8 · ggml_block_bytes / block_values`).
    pub fn bits_per_weight(self) -> f64 {
        8.0 * self.group_block_bytes() as f64 / (ROWS_PER_GROUP * self.block_values()) as f64
    }

    /// Offset of the 16 f16 `d` scales inside a `Q4_1`/`Q8_0` group block.
    pub(crate) fn d_offset(self) -> usize {
        match self {
            QuantFormat::Q4_1 => 256,
            QuantFormat::Q8_0 => 512,
            // Plane formats place their scales per `planes.rs`.
            _ => unreachable!("d_offset of {self:?}"),
        }
    }
}

/// Offset of the 16 f16 `m` minimums inside a `Q4_1` group block.
pub(crate) const Q4_1_M_OFFSET: usize = 288;

/// One cache line; the backing store is a `Vec` of these so group blocks
/// start 64-byte aligned relative to the buffer (a plain `Vec<u8>` gives no
/// alignment guarantee, and split-line loads cost throughput).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A `rows × cols` quantized weight matrix in the kernels' interleaved layout.
#[derive(Clone)]
pub struct QuantMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    bytes: usize,
    data: Storage,
}

/// Where a matrix's packed bytes live: built in memory at load, or mapped from a
/// packed-weights file written by an earlier load (`crate::llm::packed`), which
/// every worker of the model on the machine then shares through the page cache.
#[derive(Clone)]
enum Storage {
    Owned(Vec<Line>),
    Mapped {
        map: std::sync::Arc<memmap2::Mmap>,
        offset: usize,
    },
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantMatrix")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl QuantMatrix {
    /// Repacks a 2-D tensor of a [`QuantFormat`] (`[rows, cols]`, the layout
    /// of a GGUF linear weight). `Ok(None)` for other dtypes or ranks, so callers
    /// can fall back to candle's `QMatMul`. Works for any device (`data()`
    /// copies device tensors to the host), but the kernels run on the CPU.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let Some(format) = QuantFormat::from_ggml_dtype(t.dtype()) else {
            return Ok(None);
        };
        let Ok((rows, cols)) = t.shape().dims2() else {
            return Ok(None);
        };
        let data = t.data()?;
        Self::from_ggml_bytes(format, rows, cols, &data).map(Some)
    }

    /// Quantizes a row-major f32 `[rows, cols]` matrix to `Q8_0` (per 32 values: scale
    /// `amax / 127`, values rounded to nearest) and repacks it. Rows are split over
    /// the machine's cores: this is most of a Whisper model's load time.
    pub fn quantize_q8_0(rows: usize, cols: usize, w: &[f32]) -> Result<Self> {
        Self::quantize_q8_0_with(rows, cols, w, |x, out| out.copy_from_slice(x))
    }

    /// [`QuantMatrix::quantize_q8_0`] of f16 weights, widened 32 values at a time inside
    /// the quantizing threads (f16 → f32 is exact, so the result is the same as
    /// widening first, without an f32 copy of the matrix).
    pub fn quantize_q8_0_f16(rows: usize, cols: usize, w: &[half::f16]) -> Result<Self> {
        Self::quantize_q8_0_with(rows, cols, w, |x, out| {
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(x, &mut out[..])
        })
    }

    fn quantize_q8_0_with<T: Sync>(
        rows: usize,
        cols: usize,
        w: &[T],
        widen: impl Fn(&[T], &mut [f32; BLOCK]) + Sync,
    ) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) || w.len() != rows * cols {
            return Err(KernelError::Shape {
                what: "f32 weights [rows, cols multiple of 32]",
                expected: rows * cols.next_multiple_of(BLOCK),
                got: w.len(),
            });
        }
        const BYTES: usize = 34;
        let nb = cols / BLOCK;
        let mut ggml = vec![0u8; rows * nb * BYTES];
        let threads = super::threads();
        let rows_per = rows.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (src, dst) in w
                .chunks(rows_per * cols)
                .zip(ggml.chunks_mut(rows_per * nb * BYTES))
            {
                let widen = &widen;
                s.spawn(move || {
                    let mut x = [0f32; BLOCK];
                    for (raw, b) in src.chunks_exact(BLOCK).zip(dst.chunks_exact_mut(BYTES)) {
                        widen(raw, &mut x);
                        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let d = amax / 127.0;
                        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                        b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
                        for (q, &v) in b[2..].iter_mut().zip(&x) {
                            // Round to nearest (ties to even) without a libm call, so the
                            // loop vectorises: |v·id| <= 127 is far inside 2^23.
                            let r = (v * id + 12_582_912.0) - 12_582_912.0;
                            *q = (r as i8) as u8;
                        }
                    }
                });
            }
        });
        Self::from_ggml_bytes(QuantFormat::Q8_0, rows, cols, &ggml)
    }

    /// Repacks raw GGML blocks (`rows × cols / block_values` blocks, row-major).
    pub fn from_ggml_bytes(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        src: &[u8],
    ) -> Result<Self> {
        let row_bytes = cols / format.block_values() * format.ggml_block_bytes();
        if src.len() != rows * row_bytes {
            return Err(KernelError::Shape {
                what: "GGML data bytes",
                expected: rows * row_bytes,
                got: src.len(),
            });
        }
        Self::from_ggml_parts(format, cols, &[src])
    }

    /// Repacks several GGML matrices with the same `cols` as one matrix whose rows are
    /// theirs in order (a fused projection), straight from their bytes (e.g. borrowed
    /// from a memory-mapped file) with no concatenated copy in between.
    /// `cols` must be a multiple of the format's block (32, or 256 for
    /// k-quants, which GGUF guarantees).
    pub fn from_ggml_parts(format: QuantFormat, cols: usize, parts: &[&[u8]]) -> Result<Self> {
        let block = format.block_values();
        if !cols.is_multiple_of(block) {
            return Err(KernelError::Shape {
                what: "cols multiple of the format's block",
                expected: cols.next_multiple_of(block),
                got: cols,
            });
        }
        let nb = cols / block;
        let src_block = format.ggml_block_bytes();
        let row_bytes = nb * src_block;
        if let Some(bad) = parts.iter().find(|p| p.len() % row_bytes.max(1) != 0) {
            return Err(KernelError::Shape {
                what: "GGML data bytes (whole rows)",
                expected: bad.len().next_multiple_of(row_bytes.max(1)),
                got: bad.len(),
            });
        }
        let rows: usize = parts.iter().map(|p| p.len() / row_bytes.max(1)).sum();
        let src_rows = parts.iter().flat_map(|p| p.chunks_exact(row_bytes.max(1)));
        let groups = rows.div_ceil(ROWS_PER_GROUP);
        let gbb = format.group_block_bytes();
        let bytes = groups * nb * gbb;
        let mut m = QuantMatrix {
            format,
            rows,
            cols,
            bytes,
            data: Storage::Owned(vec![Line([0; 64]); bytes.div_ceil(64)]),
        };
        let dst = m.bytes_mut();
        for (r, src_row) in src_rows.enumerate() {
            let (g, lane) = (r / ROWS_PER_GROUP, r % ROWS_PER_GROUP);
            for b in 0..nb {
                let s = &src_row[b * src_block..][..src_block];
                let o = &mut dst[(g * nb + b) * gbb..][..gbb];
                if let Some(p) = format.plane() {
                    planes::pack(p, s, o, lane);
                    continue;
                }
                let d_off = format.d_offset() + 2 * lane;
                o[d_off..d_off + 2].copy_from_slice(&s[0..2]);
                match format {
                    QuantFormat::Q4_1 => {
                        let mo = Q4_1_M_OFFSET + 2 * lane;
                        o[mo..mo + 2].copy_from_slice(&s[2..4]);
                        // GGML: qs[j] low nibble = value j, high = value j + 16.
                        let q = |e: usize| {
                            let byte = s[4 + e % 16];
                            if e < 16 {
                                byte & 0x0f
                            } else {
                                byte >> 4
                            }
                        };
                        for c in 0..4 {
                            for i in 0..4 {
                                o[64 * c + 4 * lane + i] = q(8 * c + i) | (q(8 * c + 4 + i) << 4);
                            }
                        }
                    }
                    QuantFormat::Q8_0 => {
                        for c in 0..8 {
                            o[64 * c + 4 * lane..][..4].copy_from_slice(&s[2 + 4 * c..][..4]);
                        }
                    }
                    _ => unreachable!("plane formats are packed above"),
                }
            }
        }
        Ok(m)
    }

    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Output features (GGUF `ne[1]`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features, a multiple of the format's block (GGUF `ne[0]`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Weight bytes (including padding rows), what one matmul streams.
    pub fn size_in_bytes(&self) -> usize {
        self.bytes
    }

    /// Number of 16-row groups (rows rounded up).
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(ROWS_PER_GROUP)
    }

    /// Blocks of 32 values (activation blocks) per row.
    pub(crate) fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Bytes of one row group (all its group blocks).
    pub(crate) fn group_bytes(&self) -> usize {
        self.cols / self.format.block_values() * self.format.group_block_bytes()
    }

    /// The packed bytes (group blocks back to back), e.g. to store them in a
    /// packed-weights file.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            // SAFETY: `Line` is `repr(C)` over `[u8; 64]` without padding, the
            // vector holds at least `self.bytes` bytes, and `u8` has no invalid
            // values or alignment needs.
            Storage::Owned(lines) => unsafe {
                std::slice::from_raw_parts(lines.as_ptr().cast::<u8>(), self.bytes)
            },
            // `from_mapped` checked the range.
            Storage::Mapped { map, offset } => &map[*offset..*offset + self.bytes],
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.data {
            // SAFETY: as in `bytes`, with unique access through `&mut self`.
            Storage::Owned(lines) => unsafe {
                std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), self.bytes)
            },
            Storage::Mapped { .. } => unreachable!("only freshly built matrices are written"),
        }
    }

    /// A matrix whose packed bytes (as [`Self::bytes`] gave them for the same
    /// format and shape) start at `offset` of a read-only map: no copy, no
    /// repacking. The offset must be 64-byte aligned (the kernels' loads assume
    /// cache-line aligned group blocks; maps are page aligned).
    pub fn from_mapped(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        map: std::sync::Arc<memmap2::Mmap>,
        offset: usize,
    ) -> Result<Self> {
        let nb = cols / format.block_values();
        let bytes = rows.div_ceil(ROWS_PER_GROUP) * nb * format.group_block_bytes();
        if !cols.is_multiple_of(format.block_values()) || !offset.is_multiple_of(64) {
            return Err(KernelError::Shape {
                what: "mapped matrix: cols a multiple of the block, offset of 64",
                expected: 0,
                got: offset,
            });
        }
        if offset.checked_add(bytes).is_none_or(|end| end > map.len()) {
            return Err(KernelError::Shape {
                what: "mapped matrix end within the map",
                expected: map.len(),
                got: offset.saturating_add(bytes),
            });
        }
        Ok(QuantMatrix {
            format,
            rows,
            cols,
            bytes,
            data: Storage::Mapped { map, offset },
        })
    }

    /// The packed bytes of group `g`, block 0 (for the SIMD kernels).
    pub(crate) fn group_ptr(&self, g: usize) -> *const u8 {
        debug_assert!(g < self.groups());
        self.bytes()[g * self.group_bytes()..].as_ptr()
    }

    /// Value `e` (0..32) of row `lane` in group block `gb` as (q, d, m):
    /// the weight is `d·q + m`. Reference decoding for the scalar kernel.
    #[inline]
    pub(crate) fn decode(gb: &[u8], format: QuantFormat, lane: usize, e: usize) -> i32 {
        match format {
            QuantFormat::Q4_1 => {
                let (c, i) = (e / 8, e % 8);
                let byte = gb[64 * c + 4 * lane + i % 4];
                i32::from(if i < 4 { byte & 0x0f } else { byte >> 4 })
            }
            QuantFormat::Q8_0 => i32::from(gb[64 * (e / 4) + 4 * lane + e % 4] as i8),
            _ => unreachable!("plane formats decode in planes.rs"),
        }
    }

    /// Row `lane`'s (d, m) in group block `gb` (`m = 0` for `Q8_0`).
    #[inline]
    pub(crate) fn scales(gb: &[u8], format: QuantFormat, lane: usize) -> (f32, f32) {
        let d = read_f16(gb, format.d_offset() + 2 * lane);
        let m = match format {
            QuantFormat::Q4_1 => read_f16(gb, Q4_1_M_OFFSET + 2 * lane),
            _ => 0.0,
        };
        (d, m)
    }

    /// Dequantizes to a dense row-major `rows × cols` f32 matrix (tests and
    /// debugging; equals candle's `QTensor::dequantize` exactly).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Row `r` as f32 into `row` (`cols` long), exactly as [`Self::dequantize`]
    /// gives it: an embedding lookup straight from a mapped packed matrix.
    pub fn dequantize_row(&self, r: usize, row: &mut [f32]) {
        debug_assert!(r < self.rows && row.len() == self.cols);
        let (nb, gbb) = (self.blocks_per_row(), self.format.group_block_bytes());
        let bytes = self.bytes();
        let (g, lane) = (r / ROWS_PER_GROUP, r % ROWS_PER_GROUP);
        if let Some(p) = self.format.plane() {
            let group = &bytes[g * self.group_bytes()..][..self.group_bytes()];
            let units = planes::geometry(p).units;
            for (b, vals) in row.chunks_exact_mut(BLOCK).enumerate() {
                let sb = &group[b / units * gbb..][..gbb];
                let prm = planes::params(p, sb, b % units, lane);
                for (e, v) in vals.iter_mut().enumerate() {
                    let q = planes::q(p, sb, b % units, lane, e) - prm.offset;
                    *v = prm.d[e / 16] * q as f32 + prm.min;
                }
            }
            return;
        }
        for (b, vals) in row.chunks_exact_mut(BLOCK).enumerate() {
            let gb = &bytes[(g * nb + b) * gbb..][..gbb];
            let (d, m) = Self::scales(gb, self.format, lane);
            for (e, v) in vals.iter_mut().enumerate() {
                *v = d * Self::decode(gb, self.format, lane, e) as f32 + m;
            }
        }
    }
}
