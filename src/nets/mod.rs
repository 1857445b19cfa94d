//! The package's graphs as typed networks. `Model::load` builds them once; a missing or
//! mismatching graph is a load error, and no code after loading looks a graph up by name.
//!
//! - `TextNet`: KV-cache decoding, the hand-off to the image side, token log-probs and their VJP.
//! - `ImageNet`: the velocity field and its VJP, and the decoder to RGB.

mod image;
mod text;

pub use image::{ContextParts, ImageNet, Prepared, SavedForward};
pub use text::{LogprobBatch, TextNet, Tokens};

use std::collections::BTreeMap;

use ndarray::ArrayD;

use crate::error::Result;
use crate::package::ParamSet;
use crate::runtime::{Graph, Tensor, TensorView};

/// Parameter gradients by name, in f64 (summed over micro-batches and graphs).
pub type Grads = BTreeMap<String, ArrayD<f64>>;

/// The parameter gradients a VJP graph returned (its `grad.NAME` outputs), added into `acc`.
pub fn add_grads(acc: &mut Grads, names: &[String], outs: Vec<Tensor>) -> Result<()> {
    for (n, t) in names.iter().zip(outs) {
        let g = t.into_f32()?;
        match acc.get_mut(n) {
            Some(a) => a.zip_mut_with(&g, |a, &b| *a += b as f64),
            None => {
                acc.insert(n.clone(), g.mapv(|x| x as f64));
            }
        }
    }
    Ok(())
}

/// What a VJP graph returns: the parameters it has gradients for (outputs `grad.NAME`) and the
/// outputs a run asks for (the recomputed forward output, then every gradient), built once.
struct VjpPorts {
    grads: Vec<String>,
    want: Vec<String>,
}

impl VjpPorts {
    fn of(g: &Graph, forward_output: &str) -> VjpPorts {
        let grads: Vec<String> = g
            .outputs
            .iter()
            .filter_map(|p| p.name.strip_prefix("grad.").map(str::to_string))
            .collect();
        let want = std::iter::once(forward_output.to_string())
            .chain(grads.iter().map(|n| format!("grad.{n}")))
            .collect();
        VjpPorts { grads, want }
    }

    /// Run `g` with `inputs`: the recomputed forward output, the gradients added into `acc`.
    fn run(
        &self,
        g: &Graph,
        inputs: &[(&str, TensorView<'_>)],
        acc: &mut Grads,
        cancel: Option<&crate::cancel::CancelToken>,
    ) -> Result<ArrayD<f32>> {
        let want: Vec<&str> = self.want.iter().map(String::as_str).collect();
        let mut outs = g.run(inputs, &want, cancel)?;
        let recomputed = outs.remove(0).into_f32()?;
        add_grads(acc, &self.grads, outs)?;
        Ok(recomputed)
    }
}

/// The parameters `g` takes, as borrowed views, followed by `rest`.
fn feed<'a>(
    g: &Graph,
    params: &'a ParamSet,
    rest: impl IntoIterator<Item = (&'a str, TensorView<'a>)>,
) -> Vec<(&'a str, TensorView<'a>)> {
    let mut v = params.inputs_for(g);
    v.extend(rest);
    v
}
