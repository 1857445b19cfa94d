//! ONNX Runtime's profile of a session, summarised: time per operator type and the arithmetic
//! of the matrix-product nodes (convolutions and matrix multiplications), so a benchmark can
//! print where a graph's time goes and the GFLOP/s it reaches (`Graph::with_profiling`).
//!
//! The profile is ONNX Runtime's Chrome-trace JSON: one event per executed node (category
//! `Node`, name `<node>_kernel_time`, duration in microseconds, `args.op_name` and the shapes of
//! its inputs and outputs) and one `model_run` event per run (category `Session`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// The floating-point operations of one executed node, counting a multiply-add as two; zero for
/// the operators that are not matrix products (their cost is memory traffic, not arithmetic).
///
/// - `Conv` / `FusedConv` (X [N, Ci, H, W], W [Co, Ci/g, kh, kw] -> Y [N, Co, Ho, Wo]):
///   2 x |Y| x (Ci/g) x kh x kw;
/// - `MatMul` / `FusedMatMul` / `Gemm` (A [..., M, K] or its transpose -> Y [..., M, N]):
///   2 x |Y| x K, with K = A's last two dimensions' product over M (whichever way A is
///   transposed).
pub fn node_flops(op: &str, inputs: &[Vec<i64>], outputs: &[Vec<i64>]) -> f64 {
    let prod = |s: &[i64]| s.iter().map(|&d| d.max(0) as f64).product::<f64>();
    let (Some(y), Some(a)) = (outputs.first(), inputs.first()) else {
        return 0.0;
    };
    match op {
        "Conv" | "FusedConv" => match inputs.get(1) {
            Some(w) if w.len() >= 3 => 2.0 * prod(y) * prod(&w[1..]),
            _ => 0.0,
        },
        "MatMul" | "FusedMatMul" | "Gemm" => {
            if a.len() < 2 || y.len() < 2 || y[y.len() - 2] <= 0 {
                return 0.0;
            }
            let m = y[y.len() - 2] as f64;
            let k = prod(&a[a.len() - 2..]) / m;
            2.0 * prod(y) * k
        }
        _ => 0.0,
    }
}

/// Time and arithmetic of one operator type over the profiled runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpTime {
    pub op: String,
    /// Microseconds inside this type's kernels, all runs together.
    pub micros: f64,
    /// Kernel calls, all runs together.
    pub calls: u64,
    pub flops: f64,
}

/// The summary of a profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// `model_run` events (session runs).
    pub runs: u64,
    /// Microseconds of the runs, all together.
    pub run_micros: f64,
    /// Microseconds inside node kernels, all runs together (the rest is the executor's).
    pub node_micros: f64,
    /// Floating-point operations of the matrix-product nodes, all runs together.
    pub flops: f64,
    /// Per operator type, the most time first.
    pub ops: Vec<OpTime>,
}

impl Profile {
    /// Floating-point operations per run.
    pub fn flops_per_run(&self) -> f64 {
        self.flops / self.runs.max(1) as f64
    }
    /// Milliseconds per run.
    pub fn ms_per_run(&self) -> f64 {
        self.run_micros / self.runs.max(1) as f64 * 1e-3
    }

    /// Parse ONNX Runtime's profile JSON (`what` names it in errors).
    pub fn parse(json: &str, what: &str) -> Result<Profile> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| Error::format(format!("{what}: not an ONNX Runtime profile: {e}")))?;
        let events = v.as_array().ok_or_else(|| {
            Error::format(format!(
                "{what}: not an ONNX Runtime profile (no event list)"
            ))
        })?;
        let mut p = Profile::default();
        let mut by_op: BTreeMap<String, OpTime> = BTreeMap::new();
        for e in events {
            let dur = e.get("dur").and_then(Value::as_f64).unwrap_or(0.0);
            let name = e.get("name").and_then(Value::as_str).unwrap_or("");
            match e.get("cat").and_then(Value::as_str) {
                Some("Session") if name == "model_run" => {
                    p.runs += 1;
                    p.run_micros += dur;
                }
                Some("Node") if name.ends_with("_kernel_time") => {
                    let args = e.get("args");
                    let op = args
                        .and_then(|a| a.get("op_name"))
                        .and_then(Value::as_str)
                        .unwrap_or("?");
                    let shapes = |key: &str| -> Vec<Vec<i64>> {
                        args.and_then(|a| a.get(key))
                            .and_then(Value::as_array)
                            .map(|l| l.iter().map(shape_of).collect())
                            .unwrap_or_default()
                    };
                    let f = node_flops(
                        op,
                        &shapes("input_type_shape"),
                        &shapes("output_type_shape"),
                    );
                    let t = by_op.entry(op.to_string()).or_insert_with(|| OpTime {
                        op: op.to_string(),
                        ..Default::default()
                    });
                    t.micros += dur;
                    t.calls += 1;
                    t.flops += f;
                    p.node_micros += dur;
                    p.flops += f;
                }
                _ => {}
            }
        }
        p.ops = by_op.into_values().collect();
        p.ops.sort_by(|a, b| b.micros.total_cmp(&a.micros));
        Ok(p)
    }

    /// Read and parse the profile file ONNX Runtime wrote.
    pub fn read(path: &Path) -> Result<Profile> {
        let s = std::fs::read_to_string(path).map_err(|e| Error::io("read profile", path, e))?;
        Self::parse(&s, &path.display().to_string())
    }
}

/// One `{"float": [dims]}` entry of a node event's shapes.
fn shape_of(v: &Value) -> Vec<i64> {
    v.as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_array)
        .map(|d| d.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_of_convolutions_and_matrix_products_by_hand() {
        // 3x3 convolution, 2 images, 4 -> 8 channels, 5x5 output: 2 * (2*8*5*5) * 4*3*3 = 28800
        let conv = node_flops(
            "Conv",
            &[vec![2, 4, 5, 5], vec![8, 4, 3, 3], vec![8]],
            &[vec![2, 8, 5, 5]],
        );
        assert_eq!(conv, 28800.0);
        // grouped (g = 2): the weight holds Ci/g = 2 input channels per filter: half the work
        let grouped = node_flops(
            "FusedConv",
            &[vec![2, 4, 5, 5], vec![8, 2, 3, 3]],
            &[vec![2, 8, 5, 5]],
        );
        assert_eq!(grouped, 14400.0);
        // batched matmul [3, 4, 6] x [3, 6, 5] -> [3, 4, 5]: 2 * 60 * 6 = 720
        let mm = node_flops("MatMul", &[vec![3, 4, 6], vec![3, 6, 5]], &[vec![3, 4, 5]]);
        assert_eq!(mm, 720.0);
        // the same with A transposed ([3, 6, 4], transA): K is still 6
        let fm = node_flops(
            "FusedMatMul",
            &[vec![3, 6, 4], vec![3, 6, 5]],
            &[vec![3, 4, 5]],
        );
        assert_eq!(fm, 720.0);
        // Gemm [7, 3] x [3, 2]: 2 * 14 * 3 = 84; elementwise ops count nothing
        assert_eq!(
            node_flops("Gemm", &[vec![7, 3], vec![3, 2]], &[vec![7, 2]]),
            84.0
        );
        assert_eq!(
            node_flops("Add", &[vec![7, 3], vec![7, 3]], &[vec![7, 3]]),
            0.0
        );
        assert_eq!(node_flops("MatMul", &[], &[]), 0.0);
    }

    #[test]
    fn a_profile_is_summarised_by_operator_type() {
        let json = r#"[
          {"cat":"Session","name":"session_initialization","dur":900},
          {"cat":"Session","name":"model_run","dur":1000},
          {"cat":"Node","name":"c1_fence_before","dur":0,"args":{"op_name":"Conv"}},
          {"cat":"Node","name":"c1_kernel_time","dur":400,"args":{"op_name":"Conv",
            "input_type_shape":[{"float":[2,4,5,5]},{"float":[8,4,3,3]}],
            "output_type_shape":[{"float":[2,8,5,5]}]}},
          {"cat":"Node","name":"a1_kernel_time","dur":100,"args":{"op_name":"Add",
            "input_type_shape":[{"float":[2,8,5,5]},{"float":[2,8,5,5]}],
            "output_type_shape":[{"float":[2,8,5,5]}]}},
          {"cat":"Session","name":"model_run","dur":1200},
          {"cat":"Node","name":"c1_kernel_time","dur":500,"args":{"op_name":"Conv",
            "input_type_shape":[{"float":[2,4,5,5]},{"float":[8,4,3,3]}],
            "output_type_shape":[{"float":[2,8,5,5]}]}},
          {"cat":"Node","name":"m1_kernel_time","dur":50,"args":{"op_name":"MatMul",
            "input_type_shape":[{"float":[3,4,6]},{"float":[3,6,5]}],
            "output_type_shape":[{"float":[3,4,5]}]}}
        ]"#;
        let p = Profile::parse(json, "test").unwrap();
        assert_eq!(p.runs, 2);
        assert_eq!(p.run_micros, 2200.0);
        assert_eq!(p.node_micros, 1050.0);
        assert_eq!(p.flops, 2.0 * 28800.0 + 720.0);
        assert_eq!(p.flops_per_run(), 28800.0 + 360.0);
        assert!((p.ms_per_run() - 1.1).abs() < 1e-12);
        let ops: Vec<(&str, f64, u64)> = p
            .ops
            .iter()
            .map(|o| (o.op.as_str(), o.micros, o.calls))
            .collect();
        assert_eq!(
            ops,
            [("Conv", 900.0, 2), ("Add", 100.0, 1), ("MatMul", 50.0, 1)]
        );
        let e = Profile::parse("{\"a\": 1}", "prof.json").unwrap_err();
        assert!(e.to_string().contains("prof.json"), "{e}");
    }
}
