//! Trainable parameters: `params.safetensors`, checked against the manifest.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::ArrayD;
use safetensors::{Dtype, SafeTensors};

use super::manifest::ParamSpec;
use crate::error::{Error, Result};
use crate::runtime::TensorView;

/// Named f32 tensors in manifest order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamSet {
    pub names: Vec<String>,
    pub values: BTreeMap<String, ArrayD<f32>>,
}

/// Equal shapes and bit-identical values.
pub fn same_bits(a: &ArrayD<f32>, b: &ArrayD<f32>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

impl ParamSet {
    /// Whether `other` holds the same parameters with bit-identical values (a policy that has
    /// not moved from its reference).
    pub fn same_values(&self, other: &ParamSet) -> bool {
        self.values.len() == other.values.len()
            && self
                .values
                .iter()
                .all(|(n, v)| other.values.get(n).is_some_and(|o| same_bits(v, o)))
    }
    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.values.get(name)
    }
    pub fn count(&self) -> usize {
        self.values.values().map(|a| a.len()).sum()
    }
    /// The parameters `graph` takes as inputs, as borrowed views (no copy per run).
    pub fn inputs_for<'a>(
        &'a self,
        graph: &crate::runtime::Graph,
    ) -> Vec<(&'a str, TensorView<'a>)> {
        self.names
            .iter()
            .filter(|n| graph.input(n).is_some())
            .map(|n| (n.as_str(), TensorView::F32(self.values[n].view())))
            .collect()
    }
}

/// Read `path` and check every manifest tensor: present, dtype F32, the declared shape. Every
/// mismatch is reported at once, each with file, tensor name, expected and found.
pub fn load_params(path: &Path, specs: &[ParamSpec]) -> Result<ParamSet> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read parameters", path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::format(format!(
            "{}: not a valid safetensors file: {e}",
            path.display()
        ))
    })?;
    let mut problems = Vec::new();
    let mut out = ParamSet::default();
    for spec in specs {
        let t = match st.tensor(&spec.name) {
            Ok(t) => t,
            Err(_) => {
                problems.push(format!(
                    "tensor {:?}: expected by the manifest, not in the file",
                    spec.name
                ));
                continue;
            }
        };
        if t.dtype() != Dtype::F32 {
            problems.push(format!(
                "tensor {:?}: expected dtype F32, found {:?}",
                spec.name,
                t.dtype()
            ));
            continue;
        }
        if t.shape() != spec.shape.as_slice() {
            problems.push(format!(
                "tensor {:?}: expected shape {:?}, found {:?}",
                spec.name,
                spec.shape,
                t.shape()
            ));
            continue;
        }
        let data: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(k) = data.iter().position(|x| !x.is_finite()) {
            let n = data.iter().filter(|x| !x.is_finite()).count();
            problems.push(format!(
                "tensor {:?}: {n} non-finite values (the first, {}, at flat index {k})",
                spec.name, data[k]
            ));
            continue;
        }
        let arr = ArrayD::from_shape_vec(spec.shape.clone(), data).map_err(|e| {
            Error::format(format!("{}: tensor {:?}: {e}", path.display(), spec.name))
        })?;
        out.names.push(spec.name.clone());
        out.values.insert(spec.name.clone(), arr);
    }
    let known: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for name in st.names() {
        if !known.contains(name) {
            problems.push(format!("tensor {name:?}: in the file, not in the manifest"));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Error::format(format!(
            "{}: {}",
            path.display(),
            problems.join("; ")
        )))
    }
}
