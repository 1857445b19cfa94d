//! Owned tensors and borrowed views crossing the ONNX Runtime boundary.

use ndarray::{ArrayD, ArrayViewD};
use ort::value::{DynValue, TensorElementType};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I64,
    U8,
}

impl DType {
    pub fn from_ort(t: TensorElementType) -> Option<DType> {
        match t {
            TensorElementType::Float32 => Some(DType::F32),
            TensorElementType::Int64 => Some(DType::I64),
            TensorElementType::Uint8 => Some(DType::U8),
            _ => None,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }
}

/// An owned tensor read back from a graph.
#[derive(Debug, Clone)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    U8(ArrayD<u8>),
}

/// A borrowed tensor fed to a graph.
#[derive(Debug, Clone)]
pub enum TensorView<'a> {
    F32(ArrayViewD<'a, f32>),
    I64(ArrayViewD<'a, i64>),
    U8(ArrayViewD<'a, u8>),
}

impl Tensor {
    pub fn from_value(v: &DynValue) -> Result<Tensor> {
        if let Ok(a) = v.try_extract_array::<f32>() {
            return Ok(Tensor::F32(a.as_standard_layout().into_owned()));
        }
        if let Ok(a) = v.try_extract_array::<i64>() {
            return Ok(Tensor::I64(a.as_standard_layout().into_owned()));
        }
        if let Ok(a) = v.try_extract_array::<u8>() {
            return Ok(Tensor::U8(a.as_standard_layout().into_owned()));
        }
        Err(Error::runtime("unsupported output element type"))
    }
    pub fn view(&self) -> TensorView<'_> {
        match self {
            Tensor::F32(a) => TensorView::F32(a.view()),
            Tensor::I64(a) => TensorView::I64(a.view()),
            Tensor::U8(a) => TensorView::U8(a.view()),
        }
    }
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::I64(a) => a.shape(),
            Tensor::U8(a) => a.shape(),
        }
    }
    pub fn into_f32(self) -> Result<ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Ok(a),
            _ => Err(Error::runtime("expected an f32 tensor")),
        }
    }
    pub fn into_u8(self) -> Result<ArrayD<u8>> {
        match self {
            Tensor::U8(a) => Ok(a),
            _ => Err(Error::runtime("expected a u8 tensor")),
        }
    }
}

impl<'a> TensorView<'a> {
    /// The same view with a shorter lifetime.
    pub fn reborrow(&self) -> TensorView<'_> {
        match self {
            TensorView::F32(a) => TensorView::F32(a.view()),
            TensorView::I64(a) => TensorView::I64(a.view()),
            TensorView::U8(a) => TensorView::U8(a.view()),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            TensorView::F32(_) => DType::F32,
            TensorView::I64(_) => DType::I64,
            TensorView::U8(_) => DType::U8,
        }
    }
}
