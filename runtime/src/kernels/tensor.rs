//! candle glue: [`QuantMatrix::forward`], a drop-in for `QMatMul::forward` on
//! CPU f32 tensors, so a `Linear` wrapper can switch implementations without
//! touching the model code.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use super::{matmul, QuantMatrix};

impl QuantMatrix {
    /// `xs · wᵀ` for `xs` of shape `[.., cols]` (f32 or convertible, on the
    /// CPU), returning `[.., rows]` f32 — the contract of candle's
    /// `QMatMul::forward`. A contiguous f32 input is read in place.
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let dims = xs.dims();
        let Some((&k, lead)) = dims.split_last() else {
            candle_core::bail!("QuantMatrix::forward: scalar input");
        };
        if k != self.cols() {
            candle_core::bail!(
                "QuantMatrix::forward: input has {k} columns, weight has {}",
                self.cols()
            );
        }
        if !xs.device().is_cpu() {
            candle_core::bail!("QuantMatrix::forward: kernels run on the CPU only");
        }
        let n: usize = lead.iter().product();
        let mut out = vec![0f32; n * self.rows()];
        let xs = if xs.dtype() == DType::F32 {
            xs.clone()
        } else {
            xs.to_dtype(DType::F32)?
        };
        {
            let (storage, layout) = xs.storage_and_layout();
            match (&*storage, layout.contiguous_offsets()) {
                (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => {
                    matmul(self, &v[start..end], n, &mut out)?;
                }
                _ => {
                    drop(storage);
                    let flat = xs.flatten_all()?.to_vec1::<f32>()?;
                    matmul(self, &flat, n, &mut out)?;
                }
            }
        }
        let mut shape = lead.to_vec();
        shape.push(self.rows());
        Tensor::from_vec(out, shape, &Device::Cpu)
    }
}
