//! A minimal pickle interpreter for `PyTorch` state dicts. It never executes code: the only
//! "callables" are a short whitelist of constructors a state dict needs (`OrderedDict`,
//! `_rebuild_tensor_v2`, `_rebuild_parameter`, storage types), evaluated as data. Anything else is
//! an [`CheckpointError::UnsupportedGlobal`]. Allocation is bounded by the input size.

use super::CheckpointError;

/// Element type of a `PyTorch` storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDType {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    BF16,
    /// float64.
    F64,
    /// int64.
    I64,
    /// int32.
    I32,
    /// int16.
    I16,
    /// int8.
    I8,
    /// uint8.
    U8,
    /// bool.
    Bool,
}

impl StorageDType {
    /// Bytes per element.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    fn from_storage_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" | "float32" | "float" => Self::F32,
            "HalfStorage" | "float16" | "half" => Self::F16,
            "BFloat16Storage" | "bfloat16" => Self::BF16,
            "DoubleStorage" | "float64" | "double" => Self::F64,
            "LongStorage" | "int64" | "long" => Self::I64,
            "IntStorage" | "int32" | "int" => Self::I32,
            "ShortStorage" | "int16" | "short" => Self::I16,
            "CharStorage" | "int8" => Self::I8,
            "ByteStorage" | "uint8" => Self::U8,
            "BoolStorage" | "bool" => Self::Bool,
            _ => return None,
        })
    }
}

/// A tensor described by the pickle; its bytes live in the zip entry `data/<key>`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// Storage key (zip entry name under `data/`).
    pub key: String,
    /// Element type.
    pub dtype: StorageDType,
    /// Elements in the storage.
    pub storage_len: u64,
    /// Offset of the first element, in elements.
    pub offset: u64,
    /// Shape.
    pub size: Vec<u64>,
    /// Strides, in elements.
    pub stride: Vec<u64>,
}

/// A pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int (arbitrary-size ints beyond i64 are rejected).
    Int(i64),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// bytes.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict (insertion order kept).
    Dict(Vec<(Value, Value)>),
    /// A reference to a whitelisted global (`module`, `name`).
    Global(String, String),
    /// A storage from `BINPERSID`: (key, dtype, elements).
    Storage(String, StorageDType, u64),
    /// A rebuilt tensor.
    Tensor(TensorRef),
}

const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 22;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Value>,
}

fn err(offset: usize, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Pickle { offset, message: message.into() }
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| err(self.pos, "truncated"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CheckpointError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CheckpointError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> Result<String, CheckpointError> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| err(self.pos, "unterminated line"))?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| err(self.pos, "invalid UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, CheckpointError> {
        let at = self.pos;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| err(at, "invalid UTF-8 string"))
    }
    fn push(&mut self, v: Value) -> Result<(), CheckpointError> {
        if self.stack.len() >= MAX_STACK {
            return Err(err(self.pos, "stack too deep"));
        }
        self.stack.push(v);
        Ok(())
    }
    fn pop(&mut self) -> Result<Value, CheckpointError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(err(self.pos, "pop across a mark"));
        }
        self.stack.pop().ok_or_else(|| err(self.pos, "stack underflow"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, CheckpointError> {
        let m = self.marks.pop().ok_or_else(|| err(self.pos, "no mark"))?;
        if m > self.stack.len() {
            return Err(err(self.pos, "bad mark"));
        }
        Ok(self.stack.split_off(m))
    }
    fn top(&mut self) -> Result<&mut Value, CheckpointError> {
        let pos = self.pos;
        self.stack.last_mut().ok_or_else(|| err(pos, "stack underflow"))
    }
    fn memoize(&mut self, idx: u32) -> Result<(), CheckpointError> {
        if self.memo.len() >= MAX_MEMO {
            return Err(err(self.pos, "memo too large"));
        }
        let v = self.stack.last().cloned().ok_or_else(|| err(self.pos, "memoize on empty stack"))?;
        self.memo.insert(idx, v);
        Ok(())
    }
    fn get(&mut self, idx: u32) -> Result<(), CheckpointError> {
        let v = self.memo.get(&idx).cloned().ok_or_else(|| err(self.pos, format!("memo {idx} unset")))?;
        self.push(v)
    }
}

fn global(module: &str, name: &str, at: usize) -> Result<Value, CheckpointError> {
    let allowed = matches!(
        (module, name),
        ("collections", "OrderedDict")
            | ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_parameter" | "_rebuild_parameter_with_state")
            | ("torch._tensor", "_rebuild_from_type_v2")
            | ("torch", "Tensor" | "Size")
            | ("torch.nn.parameter", "Parameter")
            | ("builtins", "dict")
            | ("torch.storage", "UntypedStorage")
    ) || (module == "torch" && StorageDType::from_storage_name(name).is_some());
    if allowed {
        Ok(Value::Global(module.to_string(), name.to_string()))
    } else {
        let _ = at;
        Err(CheckpointError::UnsupportedGlobal { module: module.to_string(), name: name.to_string() })
    }
}

fn as_u64(v: &Value, what: &str, at: usize) -> Result<u64, CheckpointError> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        _ => Err(err(at, format!("{what}: expected a non-negative int"))),
    }
}

fn int_tuple(v: &Value, what: &str, at: usize) -> Result<Vec<u64>, CheckpointError> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(|x| as_u64(x, what, at)).collect(),
        _ => Err(err(at, format!("{what}: expected a tuple"))),
    }
}

/// Applies a whitelisted callable to its arguments.
fn reduce(callable: Value, args: Value, at: usize) -> Result<Value, CheckpointError> {
    let Value::Global(module, name) = callable else { return Err(err(at, "REDUCE on a non-callable")) };
    let Value::Tuple(args) = args else { return Err(err(at, "REDUCE arguments are not a tuple")) };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") | ("builtins", "dict") => Ok(Value::Dict(Vec::new())),
        ("torch", "Size") => Ok(args.into_iter().next().unwrap_or(Value::Tuple(Vec::new()))),
        ("torch._utils", "_rebuild_tensor_v2") => {
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err(err(at, "_rebuild_tensor_v2: too few arguments"));
            };
            let Value::Storage(key, dtype, storage_len) = storage else {
                return Err(err(at, "_rebuild_tensor_v2: first argument is not a storage"));
            };
            Ok(Value::Tensor(TensorRef {
                key: key.clone(),
                dtype: *dtype,
                storage_len: *storage_len,
                offset: as_u64(offset, "storage offset", at)?,
                size: int_tuple(size, "size", at)?,
                stride: int_tuple(stride, "stride", at)?,
            }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            args.into_iter().next().ok_or_else(|| err(at, "_rebuild_parameter: no tensor"))
        }
        ("torch._tensor", "_rebuild_from_type_v2") => {
            // (func, type, args, state): rebuild with `func(*args)` and drop the subclass type.
            let mut it = args.into_iter();
            let (Some(func), Some(_ty), Some(inner)) = (it.next(), it.next(), it.next()) else {
                return Err(err(at, "_rebuild_from_type_v2: too few arguments"));
            };
            reduce(func, inner, at)
        }
        _ => Err(CheckpointError::UnsupportedGlobal { module, name }),
    }
}

/// Runs a pickle and returns the top value at STOP.
pub fn load(data: &[u8]) -> Result<Value, CheckpointError> {
    let mut m = Machine { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: Default::default() };
    loop {
        let at = m.pos;
        let op = m.u8()?;
        match op {
            0x80 => {
                m.u8()?;
            } // PROTO
            0x95 => {
                m.u64()?;
            } // FRAME
            b'.' => return m.pop(), // STOP
            b'(' => {
                if m.marks.len() >= MAX_STACK {
                    return Err(err(at, "too many marks"));
                }
                m.marks.push(m.stack.len());
            }
            b'}' => m.push(Value::Dict(Vec::new()))?,
            b']' => m.push(Value::List(Vec::new()))?,
            b')' => m.push(Value::Tuple(Vec::new()))?,
            b'N' => m.push(Value::None)?,
            0x88 => m.push(Value::Bool(true))?,
            0x89 => m.push(Value::Bool(false))?,
            b'J' => {
                let v = m.u32()? as i32;
                m.push(Value::Int(i64::from(v)))?;
            }
            b'K' => {
                let v = m.u8()?;
                m.push(Value::Int(i64::from(v)))?;
            }
            b'M' => {
                let v = m.u16()?;
                m.push(Value::Int(i64::from(v)))?;
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a { m.u8()? as usize } else { m.u32()? as usize };
                if n > 8 {
                    return Err(err(at, "integer wider than 64 bits"));
                }
                let b = m.take(n)?;
                let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                buf[..n].copy_from_slice(b);
                m.push(Value::Int(i64::from_le_bytes(buf)))?;
            }
            b'G' => {
                let b = m.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                m.push(Value::Float(f64::from_be_bytes(a)))?;
            }
            b'X' => {
                let n = m.u32()? as usize;
                let s = m.string(n)?;
                m.push(Value::Str(s))?;
            }
            0x8c => {
                let n = m.u8()? as usize;
                let s = m.string(n)?;
                m.push(Value::Str(s))?;
            }
            0x8d => {
                let n = usize::try_from(m.u64()?).map_err(|_| err(at, "string too long"))?;
                let s = m.string(n)?;
                m.push(Value::Str(s))?;
            }
            b'C' | b'B' | 0x8e => {
                let n = match op {
                    b'C' => m.u8()? as usize,
                    b'B' => m.u32()? as usize,
                    _ => usize::try_from(m.u64()?).map_err(|_| err(at, "bytes too long"))?,
                };
                let b = m.take(n)?.to_vec();
                m.push(Value::Bytes(b))?;
            }
            b'U' => {
                let n = m.u8()? as usize;
                let s = m.string(n)?;
                m.push(Value::Str(s))?;
            }
            b'T' => {
                let n = m.u32()? as usize;
                let s = m.string(n)?;
                m.push(Value::Str(s))?;
            }
            b'q' => {
                let i = m.u8()?;
                m.memoize(u32::from(i))?;
            }
            b'r' => {
                let i = m.u32()?;
                m.memoize(i)?;
            }
            0x94 => {
                let i = m.memo.len() as u32;
                m.memoize(i)?;
            }
            b'h' => {
                let i = m.u8()?;
                m.get(u32::from(i))?;
            }
            b'j' => {
                let i = m.u32()?;
                m.get(i)?;
            }
            b'c' => {
                let module = m.line()?;
                let name = m.line()?;
                m.push(global(&module, &name, at)?)?;
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err(err(at, "STACK_GLOBAL needs two strings"));
                };
                m.push(global(&module, &name, at)?)?;
            }
            b't' => {
                let items = m.pop_mark()?;
                m.push(Value::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if m.stack.len() < n || m.marks.last().is_some_and(|&mk| mk > m.stack.len() - n) {
                    return Err(err(at, "stack underflow"));
                }
                let items = m.stack.split_off(m.stack.len() - n);
                m.push(Value::Tuple(items))?;
            }
            b'l' => {
                let items = m.pop_mark()?;
                m.push(Value::List(items))?;
            }
            b'd' => {
                let items = m.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(err(at, "odd number of dict items"));
                }
                let mut it = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                m.push(Value::Dict(pairs))?;
            }
            b'a' => {
                let v = m.pop()?;
                match m.top()? {
                    Value::List(l) => l.push(v),
                    _ => return Err(err(at, "APPEND to a non-list")),
                }
            }
            b'e' => {
                let items = m.pop_mark()?;
                match m.top()? {
                    Value::List(l) => l.extend(items),
                    _ => return Err(err(at, "APPENDS to a non-list")),
                }
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                match m.top()? {
                    Value::Dict(d) => d.push((k, v)),
                    _ => return Err(err(at, "SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = m.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(err(at, "odd number of SETITEMS values"));
                }
                let top = m.top()?;
                let Value::Dict(d) = top else { return Err(err(at, "SETITEMS on a non-dict")) };
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b'R' => {
                let args = m.pop()?;
                let callable = m.pop()?;
                m.push(reduce(callable, args, at)?)?;
            }
            0x81 => {
                let args = m.pop()?;
                let cls = m.pop()?;
                m.push(reduce(cls, args, at)?)?;
            }
            b'b' => {
                // BUILD sets attributes (e.g. an OrderedDict's `_metadata`); state dicts need none.
                m.pop()?;
                m.top()?;
            }
            b'Q' => {
                let pid = m.pop()?;
                let Value::Tuple(items) = pid else { return Err(err(at, "persistent id is not a tuple")) };
                let [Value::Str(kind), ty, Value::Str(key), _location, numel, ..] = items.as_slice() else {
                    return Err(err(at, "unexpected persistent id"));
                };
                if kind != "storage" {
                    return Err(err(at, format!("unsupported persistent id kind {kind:?}")));
                }
                let Value::Global(_, tname) = ty else { return Err(err(at, "storage type is not a global")) };
                let dtype = StorageDType::from_storage_name(tname)
                    .ok_or_else(|| CheckpointError::UnsupportedDType(tname.clone()))?;
                let numel = as_u64(numel, "storage size", at)?;
                m.push(Value::Storage(key.clone(), dtype, numel))?;
            }
            b'0' => {
                m.pop()?;
            }
            b'2' => {
                let v = m.top()?.clone();
                m.push(v)?;
            }
            b'1' => {
                m.pop_mark()?;
            }
            other => return Err(err(at, format!("unsupported pickle opcode 0x{other:02x}"))),
        }
    }
}
