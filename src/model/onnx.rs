//! A minimal writer for ONNX model protobufs.
//!
//! rwkvdb emits its inference graphs itself instead of depending on a protobuf code generator:
//! only the handful of messages a graph needs are written (model, graph, node, attribute,
//! tensor, value info), with field numbers from `onnx.proto`. Repeated scalars are written
//! unpacked, which every protobuf parser accepts.

/// ONNX element types used by rwkvdb (values of `TensorProto.DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// 32-bit float.
    F32 = 1,
    /// Unsigned byte (4-bit packed weights).
    U8 = 2,
    /// Signed byte (8-bit weights).
    I8 = 3,
    /// 64-bit signed integer.
    I64 = 7,
    /// bfloat16.
    Bf16 = 16,
}

/// One dimension of a graph input or output: fixed, or named and dynamic.
#[derive(Debug, Clone)]
pub enum Dim {
    /// A known size.
    Fixed(i64),
    /// A symbolic size, e.g. `"batch"`.
    Named(&'static str),
}

/// An operator attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// `AttributeProto.i`.
    Int(i64),
    /// `AttributeProto.f`.
    Float(f32),
    /// `AttributeProto.ints`.
    Ints(Vec<i64>),
}

/// The file name external initializers claim to live in. It is never read: every external
/// initializer is handed to ONNX Runtime from memory before the graph is loaded.
pub const EXTERNAL_LOCATION: &str = "rwkvdb-prepared-weights";

/// Low-level protobuf encoding into a byte vector.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from((field << 3) | wire));
    }
    fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }
    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn msg(&mut self, field: u32, m: Pb) {
        self.bytes(field, &m.0);
    }
}

/// An ONNX graph under construction: nodes, initializers, inputs and outputs.
///
/// Node outputs get unique names from [`Graph::node`], so a builder reads like straight-line code.
pub struct Graph {
    nodes: Vec<Pb>,
    initializers: Vec<Pb>,
    inputs: Vec<Pb>,
    outputs: Vec<Pb>,
    counter: usize,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self { nodes: Vec::new(), initializers: Vec::new(), inputs: Vec::new(), outputs: Vec::new(), counter: 0 }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    fn value_info(name: &str, elem: ElemType, dims: &[Dim]) -> Pb {
        let mut shape = Pb::default();
        for d in dims {
            let mut dim = Pb::default();
            match d {
                Dim::Fixed(v) => dim.int(1, *v),
                Dim::Named(s) => dim.bytes(2, s.as_bytes()),
            }
            shape.msg(1, dim);
        }
        let mut tensor = Pb::default();
        tensor.int(1, elem as i64);
        tensor.msg(2, shape);
        let mut ty = Pb::default();
        ty.msg(1, tensor);
        let mut vi = Pb::default();
        vi.bytes(1, name.as_bytes());
        vi.msg(2, ty);
        vi
    }

    /// Declares a graph input and returns its name.
    pub fn input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> String {
        self.inputs.push(Self::value_info(name, elem, dims));
        name.to_string()
    }

    /// Declares `value` (an existing node output) as a graph output named `name`.
    pub fn output(&mut self, value: &str, name: &str, elem: ElemType, dims: &[Dim]) {
        let value = value.to_string();
        if value != name {
            self.node_named("Identity", &[&value], &[], name, "");
        }
        self.outputs.push(Self::value_info(name, elem, dims));
    }

    /// Adds an `f32` initializer (a constant weight) and returns its name.
    pub fn weight(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(hint);
        let mut t = Pb::default();
        for &d in dims {
            t.int(1, d as i64);
        }
        t.int(2, ElemType::F32 as i64);
        t.bytes(8, name.as_bytes());
        let mut raw = Vec::with_capacity(data.len() * 4);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        t.bytes(9, &raw);
        self.initializers.push(t);
        name
    }

    /// Declares an initializer whose data lives outside the protobuf, under `name`. The runtime
    /// supplies the tensor at session creation (ONNX Runtime's `AddExternalInitializers`), so a
    /// graph stays a few hundred kilobytes whatever the model size.
    pub fn external(&mut self, name: &str, elem: ElemType, dims: &[usize], offset: usize, byte_len: usize) -> String {
        let mut t = Pb::default();
        for &d in dims {
            t.int(1, d as i64);
        }
        t.int(2, elem as i64);
        t.bytes(8, name.as_bytes());
        for (key, value) in [
            ("location", EXTERNAL_LOCATION.to_string()),
            ("offset", offset.to_string()),
            ("length", byte_len.to_string()),
        ] {
            let mut entry = Pb::default();
            entry.bytes(1, key.as_bytes());
            entry.bytes(2, value.as_bytes());
            t.msg(13, entry);
        }
        t.int(14, 1); // data_location = EXTERNAL
        self.initializers.push(t);
        name.to_string()
    }

    /// Adds an initializer of raw little-endian bytes of type `elem` and returns its name.
    pub fn bytes_initializer(&mut self, hint: &str, elem: ElemType, dims: &[usize], raw: &[u8]) -> String {
        let name = self.fresh(hint);
        let mut t = Pb::default();
        for &d in dims {
            t.int(1, d as i64);
        }
        t.int(2, elem as i64);
        t.bytes(8, name.as_bytes());
        t.bytes(9, raw);
        self.initializers.push(t);
        name
    }

    /// Adds an `i64` initializer and returns its name.
    pub fn ints(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        let mut t = Pb::default();
        t.int(1, data.len() as i64);
        t.int(2, ElemType::I64 as i64);
        t.bytes(8, name.as_bytes());
        let mut raw = Vec::with_capacity(data.len() * 8);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        t.bytes(9, &raw);
        self.initializers.push(t);
        name
    }

    /// Adds a scalar `f32` constant and returns its name.
    pub fn scalar(&mut self, hint: &str, v: f32) -> String {
        self.weight(hint, &[], &[v])
    }

    /// Adds a standard-domain node with one output and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(op, inputs, attrs, &out, "");
        out
    }

    /// Adds a node with one output in `domain` (empty for the standard one) and returns the output.
    pub fn node_in(&mut self, domain: &str, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(op, inputs, attrs, &out, domain);
        out
    }

    /// Adds a node with several outputs in `domain` (empty for the standard one) and returns them.
    pub fn node_multi(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        n_out: usize,
        attrs: &[(&str, Attr)],
    ) -> Vec<String> {
        let outs: Vec<String> = (0..n_out).map(|_| self.fresh(&op.to_lowercase())).collect();
        self.node_outputs(op, inputs, attrs, &outs, domain);
        outs
    }

    fn node_named(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], out: &str, domain: &str) {
        self.node_outputs(op, inputs, attrs, &[out.to_string()], domain);
    }

    fn node_outputs(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], outs: &[String], domain: &str) {
        let mut n = Pb::default();
        for i in inputs {
            n.bytes(1, i.as_bytes());
        }
        for o in outs {
            n.bytes(2, o.as_bytes());
        }
        let name = self.fresh("n");
        n.bytes(3, name.as_bytes());
        n.bytes(4, op.as_bytes());
        for (k, v) in attrs {
            let mut a = Pb::default();
            a.bytes(1, k.as_bytes());
            match v {
                Attr::Int(i) => {
                    a.int(3, *i);
                    a.int(20, 2);
                }
                Attr::Float(f) => {
                    a.float(2, *f);
                    a.int(20, 1);
                }
                Attr::Ints(list) => {
                    for &i in list {
                        a.int(8, i);
                    }
                    a.int(20, 7);
                }
            }
            n.msg(5, a);
        }
        if !domain.is_empty() {
            n.bytes(7, domain.as_bytes());
        }
        self.nodes.push(n);
    }

    /// Serialises the graph as a `ModelProto` using opset `opset` of the standard domain plus
    /// version 1 of each custom domain in `custom_domains`.
    pub fn into_model(self, opset: i64, custom_domains: &[&str]) -> Vec<u8> {
        let mut g = Pb::default();
        for n in self.nodes {
            g.msg(1, n);
        }
        g.bytes(2, b"rwkvdb");
        for t in self.initializers {
            g.msg(5, t);
        }
        for i in self.inputs {
            g.msg(11, i);
        }
        for o in self.outputs {
            g.msg(12, o);
        }
        let mut m = Pb::default();
        m.int(1, 8); // IR version 8 (ONNX 1.10+), accepted by every ORT 1.1x+
        m.bytes(2, b"rwkvdb");
        let mut op = Pb::default();
        op.bytes(1, b"");
        op.int(2, opset);
        m.msg(8, op);
        for d in custom_domains {
            let mut op = Pb::default();
            op.bytes(1, d.as_bytes());
            op.int(2, 1);
            m.msg(8, op);
        }
        m.msg(7, g);
        m.0
    }
}
