//! The graph contract of format version 1: which inputs and outputs each graph must declare.

use std::collections::BTreeMap;

use super::manifest::Manifest;
use crate::error::{Error, Result};
use crate::runtime::{DType, Graph, Port};

/// An expected port: `None` dims are dynamic (batch, sequence, past, context).
#[derive(Debug, Clone)]
pub struct ExpectedPort {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Option<i64>>,
}

fn p(name: impl Into<String>, dtype: DType, shape: Vec<Option<i64>>) -> ExpectedPort {
    ExpectedPort {
        name: name.into(),
        dtype,
        shape,
    }
}

const D: Option<i64> = None;

fn s(n: usize) -> Option<i64> {
    Some(n as i64)
}

/// (inputs, outputs) every graph of role `role` must declare, parameters included.
pub fn expected_ports(m: &Manifest, role: &str) -> (Vec<ExpectedPort>, Vec<ExpectedPort>) {
    use DType::*;
    let mut ins: Vec<ExpectedPort> = m
        .params
        .tensors
        .iter()
        .filter(|t| t.graphs.iter().any(|g| g == role))
        .map(|t| p(&t.name, F32, t.shape.iter().map(|&d| s(d)).collect()))
        .collect();
    let params: Vec<String> = ins.iter().map(|e| e.name.clone()).collect();
    let (h, dh, v) = (m.text.num_heads, m.text.head_dim, m.text.vocab_size);
    let lat = &m.image.latent_shape;
    let latent = || vec![D, s(lat[0]), s(lat[1]), s(lat[2])];
    let mut outs = Vec::new();
    let kv = |prefix: &str| -> Vec<ExpectedPort> {
        (0..m.text.num_layers)
            .flat_map(|l| {
                ["key", "value"]
                    .map(|k| p(format!("{prefix}_{k}.{l}"), F32, vec![D, s(h), D, s(dh)]))
            })
            .collect()
    };
    match role {
        "text_decode" => {
            ins.push(p("input_ids", I64, vec![D, D]));
            ins.push(p("past_attention_mask", I64, vec![D, D]));
            ins.push(p("attention_mask", I64, vec![D, D]));
            ins.push(p("position_ids", I64, vec![D, D]));
            ins.extend(kv("past"));
            outs.push(p("logits", F32, vec![D, D, s(v)]));
            outs.extend(kv("present"));
        }
        "text_logprob" | "text_logprob_vjp" => {
            for n in ["input_ids", "attention_mask", "position_ids", "targets"] {
                ins.push(p(n, I64, vec![D, D]));
            }
            ins.push(p("temperature", F32, vec![]));
            outs.push(p("token_logprobs", F32, vec![D, D]));
            if role == "text_logprob_vjp" {
                ins.push(p("d_token_logprobs", F32, vec![D, D]));
                outs.extend(params.iter().map(|n| {
                    let shape = ins
                        .iter()
                        .find(|e| &e.name == n)
                        .map(|e| e.shape.clone())
                        .unwrap_or_default();
                    p(format!("grad.{n}"), F32, shape)
                }));
            }
        }
        "velocity" | "velocity_vjp" => {
            ins.push(p("x", F32, latent()));
            ins.push(p("t", F32, vec![D]));
            for c in &m.image.conditioning {
                let e = match c.source.as_str() {
                    "context_ids" | "context_mask" => p(&c.input, I64, vec![D, D]),
                    // text_decode outputs: the declared shape is checked on the text side
                    _ => p(&c.input, F32, vec![D, s(h), D, s(dh)]),
                };
                ins.push(e);
            }
            outs.push(p("velocity", F32, latent()));
            if role == "velocity_vjp" {
                ins.push(p("d_velocity", F32, latent()));
                outs.extend(params.iter().map(|n| {
                    let shape = ins
                        .iter()
                        .find(|e| &e.name == n)
                        .map(|e| e.shape.clone())
                        .unwrap_or_default();
                    p(format!("grad.{n}"), F32, shape)
                }));
            }
        }
        "decoder" => {
            ins.push(p("latent", F32, latent()));
            let sz = &m.image.image_size;
            outs.push(p("image", U8, vec![D, s(sz[0]), s(sz[1]), Some(3)]));
        }
        _ => {}
    }
    (ins, outs)
}

fn compare(kind: &str, e: &ExpectedPort, found: Option<&Port>, problems: &mut Vec<String>) {
    let Some(f) = found else {
        problems.push(format!(
            "{kind} {:?}: expected, not declared by the graph",
            e.name
        ));
        return;
    };
    let shape_ok = f.shape.len() == e.shape.len()
        && f.shape.iter().zip(&e.shape).all(|(&g, &w)| match w {
            None => true,
            Some(w) => g == w || g < 0,
        });
    if f.dtype != e.dtype || !shape_ok {
        let want: Vec<String> = e
            .shape
            .iter()
            .map(|d| d.map(|x| x.to_string()).unwrap_or("?".into()))
            .collect();
        problems.push(format!(
            "{kind} {:?}: expected {} [{}], found {} {:?}",
            e.name,
            e.dtype.name(),
            want.join(", "),
            f.dtype.name(),
            f.shape
        ));
    }
}

/// Check every loaded graph against the contract; report every mismatch with file and tensor.
pub fn validate_graphs(m: &Manifest, graphs: &BTreeMap<String, Graph>) -> Result<()> {
    let mut problems = Vec::new();
    for (role, g) in graphs {
        let (ins, outs) = expected_ports(m, role);
        let mut local = Vec::new();
        for e in &ins {
            compare("input", e, g.input(&e.name), &mut local);
        }
        for e in &outs {
            compare("output", e, g.output(&e.name), &mut local);
        }
        for f in &g.inputs {
            if !ins.iter().any(|e| e.name == f.name) {
                local.push(format!(
                    "input {:?}: declared by the graph, but nothing in the manifest feeds it",
                    f.name
                ));
            }
        }
        problems.extend(
            local
                .into_iter()
                .map(|l| format!("{}: {l}", g.path.display())),
        );
    }
    for c in &m.image.conditioning {
        if let Some(out) = c.source.strip_prefix("text_decode:") {
            if let Some(g) = graphs.get("text_decode") {
                if g.output(out).is_none() {
                    problems.push(format!(
                        "{}: conditioning source {:?} names an output the graph does not declare",
                        g.path.display(),
                        c.source
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::format(format!(
            "model package does not match its manifest: {}",
            problems.join("; ")
        )))
    }
}
