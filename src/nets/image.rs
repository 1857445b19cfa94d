//! The image network: `velocity` and `velocity_vjp` (the flow-matching velocity field and its
//! vector-Jacobian product) and `decoder` (latents to RGB8).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::ArrayD;

use super::{feed, Grads, VjpPorts};
use crate::cancel::CancelToken;
use crate::error::Result;
use crate::image::RgbImage;
use crate::package::ParamSet;
use crate::runtime::{Constant, Graph, Tensor, TensorView};

/// How many parameter sets keep a session of their own (`velocity_constant`): the reference
/// model's and the policy's of the current rollout.
const CONSTANT_SESSIONS: usize = 2;

/// Sessions with one parameter set built in (the velocity graph, or its two parts), and that
/// set's values.
struct ConstantSession<T> {
    values: Vec<ArrayD<f32>>,
    built: Arc<T>,
}

/// `velocity` cut at `x` and `t` (`Graph::split_at`): the first part computes what depends on
/// the conditioning and the parameters alone (the text encoder, the cross-attention's keys and
/// values), once for a denoising loop; the second, every step, takes the saved values.
pub struct ContextParts {
    first: Graph,
    second: Graph,
    saved: Vec<String>,
}

/// The first part's values for one batch of conditioning rows (`ImageNet::prepare`), to run
/// every step of a denoising loop from (`ImageNet::velocity_prepared`).
pub struct Prepared {
    parts: Arc<ContextParts>,
    saved: crate::runtime::Saved,
}

pub struct ImageNet {
    /// [C, H, W] of one latent.
    pub latent_shape: Vec<usize>,
    velocity: Graph,
    velocity_vjp: Graph,
    decoder: Graph,
    vjp: VjpPorts,
    /// Sessions with built-in parameters, most recently used first; None: never built
    /// (`ModelOptions::plain_weights`).
    constant: Option<Mutex<Vec<ConstantSession<Graph>>>>,
    /// The same for the two parts of the velocity graph (`prepare`), most recent first.
    constant_parts: Mutex<Vec<ConstantSession<ContextParts>>>,
    /// The velocity graph's two parts with the weights as inputs, made on first use; None
    /// inside: every step runs the whole graph (`ModelOptions::recompute_context`, or a graph
    /// that cannot be cut).
    parts: Option<Mutex<Option<CutState<ContextParts>>>>,
    /// Sessions with built-in parameters built so far, and the time spent building them and
    /// running them (for benchmarks).
    constant_builds: AtomicU64,
    constant_build_nanos: AtomicU64,
    constant_run_nanos: AtomicU64,
    constant_runs: AtomicU64,
    /// `velocity_vjp` cut at its cotangent into a forward that keeps what the backward reads and
    /// that backward (`velocity_saving`), built on first use; None inside: the model recomputes
    /// (`ModelOptions::recompute_activations`).
    split: Option<Mutex<Option<CutState<VjpSplit>>>>,
}

/// A cut of a graph once tried (`cut_once`): its sessions, or why the whole graph runs.
type CutState<T> = std::result::Result<Arc<T>, String>;

/// The sessions of `graph` cut at `cut` (`Graph::split_at`), made by `make` on first use and
/// kept in `slot`; a graph that cannot be cut (or whose parts do not load) logs why once, then
/// `fallback` (what runs instead) applies: None.
fn cut_once<T>(
    slot: &Mutex<Option<CutState<T>>>,
    graph: &Graph,
    cut: &[&str],
    fallback: &str,
    make: impl FnOnce(Graph, Graph, Vec<String>) -> T,
) -> Option<Arc<T>> {
    let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = &*s {
        return v.as_ref().ok().cloned();
    }
    let built = graph
        .split_at(cut)
        .map(|(first, second, saved)| Arc::new(make(first, second, saved)))
        .map_err(|e| {
            log::warn!("{}: {fallback}: {e}", graph.path.display());
            e.to_string()
        });
    let out = built.as_ref().ok().cloned();
    *s = Some(built);
    out
}

/// `velocity_vjp` in two sessions (`Graph::split_at`).
struct VjpSplit {
    forward: Graph,
    backward: Graph,
    saved: Vec<String>,
    grads: Vec<String>,
}

/// What one `velocity_saving` run keeps for its `velocity_backward`: ONNX Runtime's buffers of
/// the values the backward reads.
pub struct SavedForward {
    split: Arc<VjpSplit>,
    saved: crate::runtime::Saved,
}

impl SavedForward {
    /// Bytes the saved values hold.
    pub fn bytes(&self) -> usize {
        self.saved.bytes()
    }
}

impl ImageNet {
    pub(crate) fn new(
        latent_shape: Vec<usize>,
        velocity: Graph,
        velocity_vjp: Graph,
        decoder: Graph,
        plain_weights: bool,
        recompute_activations: bool,
        recompute_context: bool,
    ) -> ImageNet {
        let vjp = VjpPorts::of(&velocity_vjp, "velocity");
        ImageNet {
            latent_shape,
            velocity,
            velocity_vjp,
            decoder,
            vjp,
            constant: (!plain_weights).then(|| Mutex::new(Vec::new())),
            constant_builds: AtomicU64::new(0),
            constant_build_nanos: AtomicU64::new(0),
            constant_run_nanos: AtomicU64::new(0),
            constant_runs: AtomicU64::new(0),
            split: (!recompute_activations).then(|| Mutex::new(None)),
            constant_parts: Mutex::new(Vec::new()),
            parts: (!recompute_context).then(|| Mutex::new(None)),
        }
    }

    fn context_parts(&self) -> Option<Arc<ContextParts>> {
        cut_once(
            self.parts.as_ref()?,
            &self.velocity,
            &["x", "t"],
            "every denoising step runs the whole velocity graph",
            |first, second, saved| ContextParts {
                first,
                second,
                saved,
            },
        )
    }

    /// What the velocity graph computes from `cond` and `params` alone, for a denoising loop
    /// that runs every step with them (`velocity_prepared`): through sessions with `params`
    /// built in unless the model runs with plain weights. None: the model runs the whole graph
    /// every step (`ModelOptions::recompute_context`).
    pub fn prepare(
        &self,
        params: &ParamSet,
        cond: &[(String, Tensor)],
        cancel: Option<&CancelToken>,
    ) -> Result<Option<Prepared>> {
        let Some(plain) = self.context_parts() else {
            return Ok(None);
        };
        let parts = if self.constant.is_some() {
            let names = self.velocity_param_names(params);
            Self::constant_cached(
                &self.constant_parts,
                params,
                &names,
                &self.constant_builds,
                &self.constant_build_nanos,
                |constants| {
                    let only = |g: &Graph| -> Vec<Constant<'_>> {
                        constants
                            .iter()
                            .filter(|c| g.input(c.name).is_some())
                            .copied()
                            .collect()
                    };
                    Ok(ContextParts {
                        first: plain.first.with_constants(&only(&plain.first))?,
                        second: plain.second.with_constants(&only(&plain.second))?,
                        saved: plain.saved.clone(),
                    })
                },
            )?
        } else {
            plain
        };
        let mut inputs = feed(&parts.first, params, []);
        inputs.extend(cond.iter().map(|(n, t)| (n.as_str(), t.view())));
        let (_, saved) = parts.first.run_saving(&inputs, &[], &parts.saved, cancel)?;
        Ok(Some(Prepared { parts, saved }))
    }

    /// `velocity` at `x`, `t` for the conditioning rows and parameters `prepared` was made
    /// with (the same `params` and `cond` are given again), to rounding: only the part that
    /// depends on `x` and `t` runs.
    pub fn velocity_prepared(
        &self,
        prepared: &Prepared,
        params: &ParamSet,
        x: &ArrayD<f32>,
        t: &ArrayD<f32>,
        cond: &[(String, Tensor)],
        cancel: Option<&CancelToken>,
    ) -> Result<ArrayD<f32>> {
        let g = &prepared.parts.second;
        let inputs = Self::inputs(g, params, x, t, cond);
        let started = std::time::Instant::now();
        let out = g.run_with_saved(&inputs, &prepared.saved, &["velocity"], cancel);
        self.constant_run_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.constant_runs.fetch_add(1, Ordering::Relaxed);
        out?.remove(0).into_f32()
    }

    /// Whether off-policy gradients run as one forward that keeps its values and one backward
    /// (`velocity_saving`, `velocity_backward`) rather than a forward and a recomputing VJP.
    pub fn saves_activations(&self) -> bool {
        self.split.is_some()
    }

    fn vjp_split(&self) -> Option<Arc<VjpSplit>> {
        cut_once(
            self.split.as_ref()?,
            &self.velocity_vjp,
            &["d_velocity"],
            "recomputing the forward in later updates",
            |forward, backward, saved| {
                let grads = backward
                    .outputs
                    .iter()
                    .filter_map(|p| p.name.strip_prefix("grad.").map(str::to_string))
                    .collect();
                VjpSplit {
                    forward,
                    backward,
                    saved,
                    grads,
                }
            },
        )
    }

    /// The velocity at `x`, `t` under `params` (as `velocity`, to rounding: another session),
    /// keeping what `velocity_backward` needs for the gradients at the same point; None when the
    /// model recomputes (`ModelOptions::recompute_activations`).
    pub fn velocity_saving(
        &self,
        params: &ParamSet,
        x: &ArrayD<f32>,
        t: &ArrayD<f32>,
        cond: &[(String, Tensor)],
        cancel: Option<&CancelToken>,
    ) -> Result<Option<(ArrayD<f32>, SavedForward)>> {
        let Some(split) = self.vjp_split() else {
            return Ok(None);
        };
        let inputs = Self::inputs(&split.forward, params, x, t, cond);
        let (mut out, saved) =
            split
                .forward
                .run_saving(&inputs, &["velocity"], &split.saved, cancel)?;
        let v = out.remove(0).into_f32()?;
        Ok(Some((v, SavedForward { split, saved })))
    }

    /// The parameter gradients of `sum(cotangent * v)` at the point of `saved`'s forward (the
    /// same `params`, `x`, `t` and conditioning), added into `grads`: `velocity_vjp` without
    /// recomputing the forward.
    #[allow(clippy::too_many_arguments)]
    pub fn velocity_backward(
        &self,
        saved: &SavedForward,
        params: &ParamSet,
        x: &ArrayD<f32>,
        t: &ArrayD<f32>,
        cond: &[(String, Tensor)],
        cotangent: &ArrayD<f32>,
        grads: &mut Grads,
        cancel: Option<&CancelToken>,
    ) -> Result<()> {
        let split = &saved.split;
        let mut inputs = Self::inputs(&split.backward, params, x, t, cond);
        inputs.push(("d_velocity", TensorView::F32(cotangent.view())));
        let want: Vec<String> = split.grads.iter().map(|g| format!("grad.{g}")).collect();
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        let outs = split
            .backward
            .run_with_saved(&inputs, &saved.saved, &want, cancel)?;
        super::add_grads(grads, &split.grads, outs)
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

    /// `velocity` for a parameter set that many runs share (the steps of a denoising loop, the
    /// reference model): through a session with those values built in as constants, so that
    /// ONNX Runtime pre-packs the weights and runs its blocked convolutions. The session is
    /// built on the first call with values it has not seen (about two forwards' time) and kept
    /// for the last `CONSTANT_SESSIONS` sets; values are compared exactly. The result agrees with
    /// `velocity` to rounding (the kernels sum in another order).
    pub fn velocity_constant(
        &self,
        params: &ParamSet,
        x: &ArrayD<f32>,
        t: &ArrayD<f32>,
        cond: &[(String, Tensor)],
        cancel: Option<&CancelToken>,
    ) -> Result<ArrayD<f32>> {
        let session = self.constant_velocity(params)?;
        self.velocity_with(session.as_deref(), params, x, t, cond, cancel)
    }

    /// The session with `params` built in (built now when new), for `velocity_with`; None when
    /// the model runs with plain weights.
    pub fn constant_velocity(&self, params: &ParamSet) -> Result<Option<Arc<Graph>>> {
        match &self.constant {
            Some(cache) => self.constant_session(cache, params).map(Some),
            None => Ok(None),
        }
    }

    /// `velocity` through `session` (from `constant_velocity` for the same `params`) when given.
    pub fn velocity_with(
        &self,
        session: Option<&Graph>,
        params: &ParamSet,
        x: &ArrayD<f32>,
        t: &ArrayD<f32>,
        cond: &[(String, Tensor)],
        cancel: Option<&CancelToken>,
    ) -> Result<ArrayD<f32>> {
        let Some(graph) = session else {
            return self.velocity(params, x, t, cond, cancel);
        };
        let inputs = Self::inputs(graph, params, x, t, cond);
        let started = std::time::Instant::now();
        let out = graph.run(&inputs, &["velocity"], cancel);
        self.constant_run_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.constant_runs.fetch_add(1, Ordering::Relaxed);
        out?.remove(0).into_f32()
    }

    /// The parameters the velocity graph takes.
    fn velocity_param_names<'p>(&self, params: &'p ParamSet) -> Vec<&'p str> {
        params
            .names
            .iter()
            .filter(|n| self.velocity.input(n).is_some())
            .map(String::as_str)
            .collect()
    }

    fn constant_session(
        &self,
        cache: &Mutex<Vec<ConstantSession<Graph>>>,
        params: &ParamSet,
    ) -> Result<Arc<Graph>> {
        let names = self.velocity_param_names(params);
        Self::constant_cached(
            cache,
            params,
            &names,
            &self.constant_builds,
            &self.constant_build_nanos,
            |constants| self.velocity.with_constants(constants),
        )
    }

    /// The sessions `build` makes with the values of `names` built in, from `cache` when the
    /// values are the same bit for bit (the last `CONSTANT_SESSIONS` sets are kept).
    fn constant_cached<T>(
        cache: &Mutex<Vec<ConstantSession<T>>>,
        params: &ParamSet,
        names: &[&str],
        builds: &AtomicU64,
        build_nanos: &AtomicU64,
        build: impl FnOnce(&[Constant<'_>]) -> Result<T>,
    ) -> Result<Arc<T>> {
        let same = |s: &ConstantSession<T>| {
            s.values.len() == names.len()
                && names
                    .iter()
                    .zip(&s.values)
                    .all(|(n, v)| crate::package::same_bits(&params.values[*n], v))
        };
        {
            let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = c.iter().position(same) {
                let s = c.remove(k);
                let g = s.built.clone();
                c.insert(0, s);
                return Ok(g);
            }
        }
        // built outside the lock: another thread may use the sessions meanwhile
        let values: Vec<ArrayD<f32>> = names
            .iter()
            .map(|n| params.values[*n].as_standard_layout().into_owned())
            .collect();
        let constants: Vec<Constant<'_>> = names
            .iter()
            .zip(&values)
            .map(|(n, v)| Constant {
                name: n,
                shape: v.shape(),
                data: v.as_slice().expect("standard layout"),
            })
            .collect();
        let started = std::time::Instant::now();
        let built = Arc::new(build(&constants)?);
        builds.fetch_add(1, Ordering::Relaxed);
        build_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        c.insert(
            0,
            ConstantSession {
                values,
                built: built.clone(),
            },
        );
        c.truncate(CONSTANT_SESSIONS);
        Ok(built)
    }

    /// How many sessions with built-in parameters this network has built.
    pub fn constant_session_builds(&self) -> u64 {
        self.constant_builds.load(Ordering::Relaxed)
    }

    /// The sessions with built-in parameters so far: (runs, seconds running, seconds building),
    /// over every session this network has built.
    pub fn constant_stats(&self) -> (u64, f64, f64) {
        (
            self.constant_runs.load(Ordering::Relaxed),
            self.constant_run_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
            self.constant_build_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        )
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
        self.velocity_vjp_with(None, params, x, t, cond, cotangent, grads, cancel)
    }

    /// `velocity_vjp` through `session`, a second session of the VJP graph (one that records
    /// ONNX Runtime's profile, say: `Graph::with_profiling`), when given.
    #[allow(clippy::too_many_arguments)]
    pub fn velocity_vjp_with(
        &self,
        session: Option<&Graph>,
        params: &ParamSet,
        x: &ArrayD<f32>,
        t: &ArrayD<f32>,
        cond: &[(String, Tensor)],
        cotangent: &ArrayD<f32>,
        grads: &mut Grads,
        cancel: Option<&CancelToken>,
    ) -> Result<ArrayD<f32>> {
        let graph = session.unwrap_or(&self.velocity_vjp);
        let mut inputs = Self::inputs(graph, params, x, t, cond);
        inputs.push(("d_velocity", TensorView::F32(cotangent.view())));
        self.vjp.run(graph, &inputs, grads, cancel)
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
