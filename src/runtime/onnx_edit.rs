//! One edit of a serialised ONNX model: graph inputs turned into constant initializers.
//!
//! A graph whose weights are inputs can take new values on every run, so ONNX Runtime can neither
//! pre-pack them nor rewrite the convolutions into its blocked NCHWc layout (both need constant
//! weights). For runs that share one parameter set (the steps of a denoising loop, the reference
//! model's forwards) the runtime builds a second session from a copy of the graph in which those
//! inputs are initializers holding the current values (`Graph::with_constants`).
//!
//! The edit works on the protobuf wire format directly and copies every other byte unchanged:
//! `ModelProto.graph` (field 7) is rewritten, inside it the `GraphProto.input` entries (field 11,
//! a `ValueInfoProto` named by its field 1) of the frozen names are dropped and one
//! `GraphProto.initializer` (field 5, a `TensorProto`: dims 1, data_type 2, name 8, raw_data 9)
//! is appended per name. Only what this edit needs of the format is read.

use crate::error::{Error, Result};

/// One value to freeze: the graph input's name, its shape and its f32 data (row-major).
#[derive(Clone, Copy)]
pub struct Constant<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

const MODEL_GRAPH: u32 = 7;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const VALUE_INFO_NAME: u32 = 1;
const TENSOR_DIMS: u32 = 1;
const TENSOR_DATA_TYPE: u32 = 2;
const TENSOR_NAME: u32 = 8;
const TENSOR_RAW_DATA: u32 = 9;
const ONNX_FLOAT: u64 = 1;
const WIRE_VARINT: u8 = 0;
const WIRE_LEN: u8 = 2;

/// One field of a message: its number, wire type, the whole field's bytes (key included) and,
/// for a length-delimited field, its payload.
struct Field<'a> {
    num: u32,
    wire: u8,
    whole: &'a [u8],
    payload: &'a [u8],
}

fn bad(what: &str) -> Error {
    Error::format(format!("ONNX graph: malformed protobuf ({what})"))
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at).ok_or_else(|| bad("truncated varint"))?;
        *at += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint longer than 10 bytes"))
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let key = varint(buf, &mut at)?;
        let (num, wire) = ((key >> 3) as u32, (key & 7) as u8);
        let mut payload: &[u8] = &[];
        match wire {
            WIRE_VARINT => {
                varint(buf, &mut at)?;
            }
            1 => at += 8,
            WIRE_LEN => {
                let n = varint(buf, &mut at)? as usize;
                let end = at.checked_add(n).ok_or_else(|| bad("length overflow"))?;
                payload = buf.get(at..end).ok_or_else(|| bad("truncated field"))?;
                at = end;
            }
            5 => at += 4,
            w => return Err(bad(&format!("wire type {w} of field {num}"))),
        }
        if at > buf.len() {
            return Err(bad("truncated field"));
        }
        out.push(Field {
            num,
            wire,
            whole: &buf[start..at],
            payload,
        });
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, num: u32, wire: u8) {
    put_varint(out, ((num as u64) << 3) | wire as u64);
}

fn put_bytes(out: &mut Vec<u8>, num: u32, bytes: &[u8]) {
    put_key(out, num, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A `TensorProto` holding `c` as FLOAT raw data.
fn tensor_proto(c: &Constant<'_>) -> Vec<u8> {
    let mut t = Vec::with_capacity(c.data.len() * 4 + c.name.len() + 32);
    let mut dims = Vec::new();
    for &d in c.shape {
        put_varint(&mut dims, d as u64);
    }
    put_bytes(&mut t, TENSOR_DIMS, &dims);
    put_key(&mut t, TENSOR_DATA_TYPE, WIRE_VARINT);
    put_varint(&mut t, ONNX_FLOAT);
    put_bytes(&mut t, TENSOR_NAME, c.name.as_bytes());
    put_key(&mut t, TENSOR_RAW_DATA, WIRE_LEN);
    put_varint(&mut t, (c.data.len() * 4) as u64);
    for x in c.data {
        t.extend_from_slice(&x.to_le_bytes());
    }
    t
}

fn value_info_name(v: &[u8]) -> Result<&str> {
    for f in fields(v)? {
        if f.num == VALUE_INFO_NAME && f.wire == WIRE_LEN {
            return std::str::from_utf8(f.payload).map_err(|_| bad("input name is not UTF-8"));
        }
    }
    Err(bad("graph input without a name"))
}

fn freeze_graph(graph: &[u8], constants: &[Constant<'_>]) -> Result<Vec<u8>> {
    let mut out =
        Vec::with_capacity(graph.len() + constants.iter().map(|c| c.data.len() * 4).sum::<usize>());
    let mut found = vec![false; constants.len()];
    let read = read_names(graph)?;
    for f in fields(graph)? {
        if f.num == GRAPH_INPUT && f.wire == WIRE_LEN {
            let name = value_info_name(f.payload)?;
            if let Some(k) = constants.iter().position(|c| c.name == name) {
                found[k] = true;
                continue;
            }
        }
        out.extend_from_slice(f.whole);
    }
    if let Some(k) = found.iter().position(|f| !f) {
        return Err(Error::invalid(format!(
            "ONNX graph has no input named {} to freeze",
            constants[k].name
        )));
    }
    for c in constants {
        let expected: usize = c.shape.iter().product();
        if expected != c.data.len() {
            return Err(Error::invalid(format!(
                "constant {}: shape {:?} holds {expected} values, {} given",
                c.name,
                c.shape,
                c.data.len()
            )));
        }
        // an input no node reads (a part of a split graph takes every original input) leaves
        // the graph instead: as an initializer ONNX Runtime would drop it again, with a warning
        if read.as_ref().is_some_and(|r| !r.contains(c.name)) {
            continue;
        }
        put_bytes(&mut out, GRAPH_INITIALIZER, &tensor_proto(c));
    }
    Ok(out)
}

/// The names a graph's nodes read and its outputs return; None when a node has a subgraph (If,
/// Loop, Scan), whose nodes may read any outer name.
fn read_names(graph: &[u8]) -> Result<Option<std::collections::HashSet<&str>>> {
    let mut read = std::collections::HashSet::new();
    for f in fields(graph)? {
        match (f.num, f.wire) {
            (GRAPH_NODE, WIRE_LEN) => {
                for g in fields(f.payload)? {
                    match (g.num, g.wire) {
                        (NODE_INPUT, WIRE_LEN) => {
                            read.insert(utf8(g.payload, "node input")?);
                        }
                        (NODE_OP_TYPE, WIRE_LEN)
                            if matches!(utf8(g.payload, "op type")?, "If" | "Loop" | "Scan") =>
                        {
                            return Ok(None)
                        }
                        _ => {}
                    }
                }
            }
            (GRAPH_OUTPUT, WIRE_LEN) => {
                read.insert(value_info_name(f.payload)?);
            }
            _ => {}
        }
    }
    Ok(Some(read))
}

/// The serialised model `model` with the graph inputs named in `constants` replaced by
/// initializers holding their values; everything else byte for byte as it was.
pub fn freeze_inputs(model: &[u8], constants: &[Constant<'_>]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(
        model.len()
            + constants
                .iter()
                .map(|c| c.data.len() * 4 + 64)
                .sum::<usize>(),
    );
    let mut graphs = 0;
    for f in fields(model)? {
        if f.num == MODEL_GRAPH && f.wire == WIRE_LEN {
            graphs += 1;
            put_bytes(&mut out, MODEL_GRAPH, &freeze_graph(f.payload, constants)?);
        } else {
            out.extend_from_slice(f.whole);
        }
    }
    if graphs != 1 {
        return Err(bad(&format!("{graphs} graphs in the model")));
    }
    Ok(out)
}

const GRAPH_NODE: u32 = 1;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_OP_TYPE: u32 = 4;

/// A graph cut in two at the nodes that depend on some of its inputs (a VJP graph at its
/// cotangents): `forward` runs the rest and also returns the `saved` values the second part
/// reads; `backward` takes every original input plus the saved values and returns the outputs
/// that depend on the cut inputs. `forward` returns the original outputs that do not.
#[derive(Debug)]
pub struct Split {
    pub forward: Vec<u8>,
    pub backward: Vec<u8>,
    pub saved: Vec<String>,
}

struct Node<'a> {
    whole: &'a [u8],
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(b).map_err(|_| bad(&format!("{what} is not UTF-8")))
}

fn node<'a>(f: &Field<'a>) -> Result<Node<'a>> {
    let mut n = Node {
        whole: f.whole,
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    for g in fields(f.payload)? {
        match (g.num, g.wire) {
            (NODE_INPUT, WIRE_LEN) => n.inputs.push(utf8(g.payload, "node input")?),
            (NODE_OUTPUT, WIRE_LEN) => n.outputs.push(utf8(g.payload, "node output")?),
            (NODE_OP_TYPE, WIRE_LEN) => {
                let op = utf8(g.payload, "op type")?;
                if matches!(op, "If" | "Loop" | "Scan") {
                    return Err(Error::format(format!(
                        "ONNX graph: a {op} node's subgraph may read outer values; such a graph is not split"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(n)
}

fn tensor_name(t: &[u8]) -> Result<&str> {
    for f in fields(t)? {
        if f.num == TENSOR_NAME && f.wire == WIRE_LEN {
            return utf8(f.payload, "initializer name");
        }
    }
    Err(bad("initializer without a name"))
}

/// Split the serialised model `model` at the graph inputs `cut` (see `Split`). Every saved value
/// must be typed in the graph's value_info (exporters write it for every intermediate).
pub fn split_at(model: &[u8], cut: &[&str]) -> Result<Split> {
    let top = fields(model)?;
    let graphs: Vec<&Field<'_>> = top
        .iter()
        .filter(|f| f.num == MODEL_GRAPH && f.wire == WIRE_LEN)
        .collect();
    let [graph] = graphs[..] else {
        return Err(bad(&format!("{} graphs in the model", graphs.len())));
    };
    let gf = fields(graph.payload)?;
    let mut nodes = Vec::new();
    let mut inits: Vec<(&str, &[u8])> = Vec::new();
    let mut inputs: Vec<(&str, &[u8])> = Vec::new();
    let mut outputs: Vec<(&str, &[u8])> = Vec::new();
    let mut infos: std::collections::HashMap<&str, &[u8]> = Default::default();
    let mut other: Vec<&[u8]> = Vec::new();
    for f in &gf {
        match (f.num, f.wire) {
            (GRAPH_NODE, WIRE_LEN) => nodes.push(node(f)?),
            (GRAPH_INITIALIZER, WIRE_LEN) => inits.push((tensor_name(f.payload)?, f.whole)),
            (GRAPH_INPUT, WIRE_LEN) => inputs.push((value_info_name(f.payload)?, f.payload)),
            (GRAPH_OUTPUT, WIRE_LEN) => outputs.push((value_info_name(f.payload)?, f.payload)),
            (GRAPH_VALUE_INFO, WIRE_LEN) => {
                infos.insert(value_info_name(f.payload)?, f.payload);
            }
            _ => other.push(f.whole),
        }
    }
    for c in cut {
        if !inputs.iter().any(|(n, _)| n == c) {
            return Err(Error::invalid(format!(
                "ONNX graph has no input named {c} to split at"
            )));
        }
    }
    // the nodes that depend on a cut input, in the graph's (topological) order
    let mut tainted: std::collections::HashSet<&str> = cut.iter().copied().collect();
    let mut second = vec![false; nodes.len()];
    for (k, n) in nodes.iter().enumerate() {
        if n.inputs.iter().any(|i| tainted.contains(i)) {
            second[k] = true;
            tainted.extend(n.outputs.iter().copied());
        }
    }
    let made_first: std::collections::HashSet<&str> = nodes
        .iter()
        .zip(&second)
        .filter(|(_, s)| !**s)
        .flat_map(|(n, _)| n.outputs.iter().copied())
        .collect();
    let mut saved: Vec<&str> = Vec::new();
    for (n, _) in nodes.iter().zip(&second).filter(|(_, s)| **s) {
        for i in &n.inputs {
            if made_first.contains(i) && !saved.contains(i) {
                saved.push(i);
            }
        }
    }
    let mut saved_infos = Vec::with_capacity(saved.len());
    for s in &saved {
        saved_infos.push(*infos.get(s).ok_or_else(|| {
            Error::format(format!(
                "ONNX graph: value {s} crosses the split but has no type in value_info"
            ))
        })?);
    }
    // an output no node makes (an initializer or an input passed through, as a zero gradient
    // can be) goes with the second part
    let second_output = |o: &str| tainted.contains(o) || !made_first.contains(o);
    let build = |part: bool, graph_inputs: Vec<&[u8]>, graph_outputs: Vec<&[u8]>| -> Vec<u8> {
        let mine: Vec<&Node<'_>> = nodes
            .iter()
            .zip(&second)
            .filter(|(_, s)| **s == part)
            .map(|(n, _)| n)
            .collect();
        let mut used: std::collections::HashSet<&str> =
            mine.iter().flat_map(|n| n.inputs.iter().copied()).collect();
        used.extend(
            outputs
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| part == second_output(n)),
        );
        let made: std::collections::HashSet<&str> = mine
            .iter()
            .flat_map(|n| n.outputs.iter().copied())
            .collect();
        let mut g = Vec::with_capacity(graph.payload.len());
        for n in &mine {
            g.extend_from_slice(n.whole);
        }
        for (name, whole) in &inits {
            if used.contains(name) {
                g.extend_from_slice(whole);
            }
        }
        // value infos (payloads) as the graph's inputs and outputs
        for w in &graph_inputs {
            put_bytes(&mut g, GRAPH_INPUT, w);
        }
        for w in &graph_outputs {
            put_bytes(&mut g, GRAPH_OUTPUT, w);
        }
        let declared: std::collections::HashSet<&str> = outputs
            .iter()
            .map(|(n, _)| *n)
            .chain(saved.iter().copied())
            .collect();
        for f in &gf {
            if f.num == GRAPH_VALUE_INFO && f.wire == WIRE_LEN {
                if let Ok(n) = value_info_name(f.payload) {
                    if made.contains(n) && !declared.contains(n) {
                        g.extend_from_slice(f.whole);
                    }
                }
            }
        }
        for o in &other {
            g.extend_from_slice(o);
        }
        let mut m = Vec::with_capacity(g.len() + 256);
        for f in &top {
            if std::ptr::eq(f, graph) {
                put_bytes(&mut m, MODEL_GRAPH, &g);
            } else {
                m.extend_from_slice(f.whole);
            }
        }
        m
    };
    // both parts take every original input (the first all but the cut ones), so one feed fits
    let first_inputs: Vec<&[u8]> = inputs
        .iter()
        .filter(|(n, _)| !cut.contains(n))
        .map(|(_, w)| *w)
        .collect();
    let first_outputs: Vec<&[u8]> = outputs
        .iter()
        .filter(|(n, _)| made_first.contains(n))
        .map(|(_, w)| *w)
        .chain(saved_infos.iter().copied())
        .collect();
    let forward = build(false, first_inputs, first_outputs);
    let second_inputs: Vec<&[u8]> = inputs
        .iter()
        .map(|(_, w)| *w)
        .chain(saved_infos.iter().copied())
        .collect();
    let second_outputs: Vec<&[u8]> = outputs
        .iter()
        .filter(|(n, _)| second_output(n))
        .map(|(_, w)| *w)
        .collect();
    let backward = build(true, second_inputs, second_outputs);
    Ok(Split {
        forward,
        backward,
        saved: saved.iter().map(|s| s.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut at = 0;
            assert_eq!(varint(&b, &mut at).unwrap(), v);
            assert_eq!(at, b.len());
        }
        // 300 = 0b1_0010_1100: the protobuf documentation's example bytes
        let mut b = Vec::new();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
    }

    /// A hand-built model: graph { input "w" (field 11), input "x", node bytes } plus an
    /// ir_version field before it, frozen on "w".
    #[test]
    fn an_input_becomes_an_initializer_and_the_rest_is_kept() {
        let mut vi_w = Vec::new();
        put_bytes(&mut vi_w, VALUE_INFO_NAME, b"w");
        let mut vi_x = Vec::new();
        put_bytes(&mut vi_x, VALUE_INFO_NAME, b"x");
        let mut graph = Vec::new();
        let node = node_bytes("Add", &["w", "x"], &["y"]);
        put_bytes(&mut graph, 1, &node);
        put_bytes(&mut graph, GRAPH_INPUT, &vi_w);
        put_bytes(&mut graph, GRAPH_INPUT, &vi_x);
        let mut model = Vec::new();
        put_key(&mut model, 1, WIRE_VARINT);
        put_varint(&mut model, 8);
        put_bytes(&mut model, MODEL_GRAPH, &graph);
        let data = [1.5f32, -2.0];
        let out = freeze_inputs(
            &model,
            &[Constant {
                name: "w",
                shape: &[2, 1],
                data: &data,
            }],
        )
        .unwrap();
        let top = fields(&out).unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].whole, &model[..2]);
        let g = fields(top[1].payload).unwrap();
        let nums: Vec<u32> = g.iter().map(|f| f.num).collect();
        assert_eq!(nums, [1, GRAPH_INPUT, GRAPH_INITIALIZER]);
        assert_eq!(value_info_name(g[1].payload).unwrap(), "x");
        let t = fields(g[2].payload).unwrap();
        assert_eq!(t[0].payload, [2, 1]); // packed dims
        assert_eq!(t[2].payload, b"w");
        let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(t[3].payload, &raw[..]);
        // a name the graph does not take, a wrong size and garbage are errors
        let missing = freeze_inputs(
            &model,
            &[Constant {
                name: "v",
                shape: &[1],
                data: &data[..1],
            }],
        );
        assert!(missing.unwrap_err().message().contains("no input named v"));
        let size = freeze_inputs(
            &model,
            &[Constant {
                name: "w",
                shape: &[3],
                data: &data,
            }],
        );
        assert!(size.unwrap_err().message().contains("holds 3 values"));
        assert!(freeze_inputs(&model[..model.len() - 3], &[]).is_err());
        // an input no node reads leaves the graph instead of becoming an unused initializer
        let mut vi_u = Vec::new();
        put_bytes(&mut vi_u, VALUE_INFO_NAME, b"u");
        let mut graph_u = graph.clone();
        put_bytes(&mut graph_u, GRAPH_INPUT, &vi_u);
        let mut model_u = Vec::new();
        put_bytes(&mut model_u, MODEL_GRAPH, &graph_u);
        let both = [
            Constant {
                name: "u",
                shape: &[2],
                data: &data,
            },
            Constant {
                name: "w",
                shape: &[2, 1],
                data: &data,
            },
        ];
        let out = freeze_inputs(&model_u, &both).unwrap();
        let g = fields(fields(&out).unwrap()[0].payload).unwrap();
        let nums: Vec<u32> = g.iter().map(|f| f.num).collect();
        assert_eq!(nums, [1, GRAPH_INPUT, GRAPH_INITIALIZER]);
        assert_eq!(tensor_name(g[2].payload).unwrap(), "w");
        // with a subgraph node (If) every frozen input stays, as an initializer
        let mut graph_if = graph_u.clone();
        put_bytes(&mut graph_if, 1, &node_bytes("If", &["x"], &["z"]));
        let mut model_if = Vec::new();
        put_bytes(&mut model_if, MODEL_GRAPH, &graph_if);
        let out = freeze_inputs(&model_if, &both).unwrap();
        let g = fields(fields(&out).unwrap()[0].payload).unwrap();
        assert_eq!(g.iter().filter(|f| f.num == GRAPH_INITIALIZER).count(), 2);
    }

    fn node_bytes(op: &str, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            put_bytes(&mut n, NODE_INPUT, i.as_bytes());
        }
        for o in outputs {
            put_bytes(&mut n, NODE_OUTPUT, o.as_bytes());
        }
        put_bytes(&mut n, NODE_OP_TYPE, op.as_bytes());
        n
    }

    fn info(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        put_bytes(&mut v, VALUE_INFO_NAME, name.as_bytes());
        v
    }

    /// (node op types, input names, output names) of a serialised model's graph.
    fn parts(model: &[u8]) -> (Vec<String>, Vec<String>, Vec<String>) {
        let top = fields(model).unwrap();
        let g = top.iter().find(|f| f.num == MODEL_GRAPH).unwrap();
        let (mut ops, mut ins, mut outs) = (Vec::new(), Vec::new(), Vec::new());
        for f in fields(g.payload).unwrap() {
            match f.num {
                GRAPH_NODE => {
                    let n = node(&f).unwrap();
                    ops.push(format!("{}->{}", n.inputs.join(","), n.outputs.join(",")));
                }
                GRAPH_INPUT => ins.push(value_info_name(f.payload).unwrap().to_string()),
                GRAPH_OUTPUT => outs.push(value_info_name(f.payload).unwrap().to_string()),
                _ => {}
            }
        }
        (ops, ins, outs)
    }

    /// y = sin(x) * x with its "VJP" g = d_y * sin(x): cut at d_y, the forward keeps s = sin(x).
    #[test]
    fn a_graph_is_split_at_its_cotangent_with_the_values_that_cross() {
        let mut g = Vec::new();
        put_bytes(&mut g, GRAPH_NODE, &node_bytes("Sin", &["x"], &["s"]));
        put_bytes(&mut g, GRAPH_NODE, &node_bytes("Mul", &["s", "x"], &["y"]));
        put_bytes(
            &mut g,
            GRAPH_NODE,
            &node_bytes("Mul", &["d_y", "s"], &["g"]),
        );
        put_bytes(&mut g, GRAPH_INPUT, &info("x"));
        put_bytes(&mut g, GRAPH_INPUT, &info("d_y"));
        put_bytes(&mut g, GRAPH_OUTPUT, &info("y"));
        put_bytes(&mut g, GRAPH_OUTPUT, &info("g"));
        // a zero gradient that is an initializer passed through: it goes with the second part
        let z = tensor_proto(&Constant {
            name: "z",
            shape: &[1],
            data: &[0.0],
        });
        put_bytes(&mut g, GRAPH_INITIALIZER, &z);
        put_bytes(&mut g, GRAPH_OUTPUT, &info("z"));
        put_bytes(&mut g, GRAPH_VALUE_INFO, &info("s"));
        let mut m = Vec::new();
        put_key(&mut m, 1, WIRE_VARINT); // ir_version, kept in both parts
        put_varint(&mut m, 8);
        put_bytes(&mut m, MODEL_GRAPH, &g);
        let s = split_at(&m, &["d_y"]).unwrap();
        assert_eq!(s.saved, ["s"]);
        let (ops, ins, outs) = parts(&s.forward);
        assert_eq!(ops, ["x->s", "s,x->y"]);
        assert_eq!(
            (ins, outs),
            (
                vec!["x".to_string()],
                vec!["y".to_string(), "s".to_string()]
            )
        );
        let (ops, ins, outs) = parts(&s.backward);
        assert_eq!(ops, ["d_y,s->g"]);
        assert_eq!(ins, ["x", "d_y", "s"]);
        assert_eq!(outs, ["g", "z"]);
        let inits = |m: &[u8]| {
            let top = fields(m).unwrap();
            let g = top.iter().find(|f| f.num == MODEL_GRAPH).unwrap();
            fields(g.payload)
                .unwrap()
                .iter()
                .filter(|f| f.num == GRAPH_INITIALIZER)
                .map(|f| tensor_name(f.payload).unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(inits(&s.backward), ["z"]);
        assert!(inits(&s.forward).is_empty());
        assert!(s.forward.starts_with(&[0x08, 8]) && s.backward.starts_with(&[0x08, 8]));
        // a cut input the graph does not have, and a crossing value without a type, are named
        let e = split_at(&m, &["d_z"]).unwrap_err();
        assert!(e.to_string().contains("d_z"), "{e}");
        let untyped: Vec<u8> = {
            let mut g2 = Vec::new();
            for f in fields(&g).unwrap() {
                if f.num != GRAPH_VALUE_INFO {
                    g2.extend_from_slice(f.whole);
                }
            }
            let mut m2 = Vec::new();
            put_bytes(&mut m2, MODEL_GRAPH, &g2);
            m2
        };
        let e = split_at(&untyped, &["d_y"]).unwrap_err();
        assert!(e.to_string().contains("value s crosses the split"), "{e}");
    }
}
