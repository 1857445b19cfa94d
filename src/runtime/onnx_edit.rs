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
        put_bytes(&mut out, GRAPH_INITIALIZER, &tensor_proto(c));
    }
    Ok(out)
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
        put_bytes(&mut graph, 1, b"node-bytes");
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
    }
}
