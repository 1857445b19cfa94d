//! The image network: `velocity` and `velocity_vjp` (the flow-matching velocity field and its
//! vector-Jacobian product) and `decoder` (latents to RGB8).

use ndarray::ArrayD;

use super::{feed, Grads, VjpPorts};
use crate::cancel::CancelToken;
use crate::error::Result;
use crate::image::RgbImage;
use crate::package::ParamSet;
use crate::runtime::{Graph, Tensor, TensorView};

pub struct ImageNet {
    /// [C, H, W] of one latent.
    pub latent_shape: Vec<usize>,
    velocity: Graph,
    velocity_vjp: Graph,
    decoder: Graph,
    vjp: VjpPorts,
}

impl ImageNet {
    pub(crate) fn new(
        latent_shape: Vec<usize>,
        velocity: Graph,
        velocity_vjp: Graph,
        decoder: Graph,
    ) -> ImageNet {
        let vjp = VjpPorts::of(&velocity_vjp, "velocity");
        ImageNet {
            latent_shape,
            velocity,
            velocity_vjp,
            decoder,
            vjp,
        }
    }

    pub(crate) fn graphs(&self) -> [(&'static str, &Graph); 3] {
        [
            ("velocity", &self.velocity),
            ("velocity_vjp", &self.velocity_vjp),
            ("decoder", &self.decoder),
        ]
    }

    /// Whether an image graph takes the parameter `name`.
    pub fn consumes(&self, name: &str) -> bool {
        self.graphs().iter().any(|(_, g)| g.input(name).is_some())
    }

    /// Elements of one latent.
    pub fn latent_len(&self) -> usize {
        self.latent_shape.iter().product()
    }

    fn inputs<'a>(
        g: &Graph,
        params: &'a ParamSet,
        x: &'a ArrayD<f32>,
        t: &'a ArrayD<f32>,
        cond: &'a [(String, Tensor)],
    ) -> Vec<(&'a str, TensorView<'a>)> {
        let mut v = feed(
            g,
            params,
            [
                ("x", TensorView::F32(x.view())),
                ("t", TensorView::F32(t.view())),
            ],
        );
        v.extend(cond.iter().map(|(n, t)| (n.as_str(), t.view())));
        v
    }

    /// The velocity at latents `x` [B, C, H, W] and times `t` [B] under the conditioning rows.
    pub fn velocity(
        &self,
        params: &ParamSet,
        x: &ArrayD<f32>,
        t: &ArrayD<f32>,
        cond: &[(String, Tensor)],
        cancel: Option<&CancelToken>,
    ) -> Result<ArrayD<f32>> {
        let inputs = Self::inputs(&self.velocity, params, x, t, cond);
        self.velocity
            .run(&inputs, &["velocity"], cancel)?
            .remove(0)
            .into_f32()
    }

    /// The velocity recomputed, and the parameter gradients of `sum(cotangent * v)` added into
    /// `grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn velocity_vjp(
        &self,
        params: &ParamSet,
        x: &ArrayD<f32>,
        t: &ArrayD<f32>,
        cond: &[(String, Tensor)],
        cotangent: &ArrayD<f32>,
        grads: &mut Grads,
        cancel: Option<&CancelToken>,
    ) -> Result<ArrayD<f32>> {
        let mut inputs = Self::inputs(&self.velocity_vjp, params, x, t, cond);
        inputs.push(("d_velocity", TensorView::F32(cotangent.view())));
        self.vjp.run(&self.velocity_vjp, &inputs, grads, cancel)
    }

    /// Decode latents [B, C, H, W] to RGB8 images.
    pub fn decode(
        &self,
        latents: &ArrayD<f32>,
        cancel: Option<&CancelToken>,
    ) -> Result<Vec<RgbImage>> {
        let img = self
            .decoder
            .run(
                &[("latent", TensorView::F32(latents.view()))],
                &["image"],
                cancel,
            )?
            .remove(0)
            .into_u8()?;
        let sh = img.shape().to_vec();
        let (b, h, w) = (sh[0], sh[1], sh[2]);
        let flat = img.as_slice().expect("contiguous");
        Ok((0..b)
            .map(|i| {
                RgbImage::new(
                    w as u32,
                    h as u32,
                    flat[i * h * w * 3..(i + 1) * h * w * 3].to_vec(),
                )
            })
            .collect())
    }
}
