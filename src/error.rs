//! The crate's error type: a kind (mapped 1:1 to the C API's `unigrpo_code`) and a message that
//! says what was expected, what was found, and where.

use std::fmt;
use std::path::Path;

/// What went wrong, as a category a caller can act on. Values match `unigrpo_code` in the C API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorKind {
    NullArgument = 1,
    InvalidArgument = 2,
    Io = 3,
    ModelFormat = 4,
    Runtime = 5,
    DeviceUnavailable = 6,
    Cancelled = 7,
    Callback = 8,
    NonFinite = 9,
    Panic = 10,
}

impl ErrorKind {
    /// The kind of a `unigrpo_code` value (None for 0 = success and unknown values).
    pub fn from_code(code: u32) -> Option<ErrorKind> {
        use ErrorKind::*;
        [
            NullArgument,
            InvalidArgument,
            Io,
            ModelFormat,
            Runtime,
            DeviceUnavailable,
            Cancelled,
            Callback,
            NonFinite,
            Panic,
        ]
        .into_iter()
        .find(|k| *k as u32 == code)
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn format(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ModelFormat, message)
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Runtime, message)
    }
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "cancelled")
    }
    /// An I/O error on `path`, naming the path and the operation.
    pub fn io(op: &str, path: &Path, err: std::io::Error) -> Self {
        Self::new(
            ErrorKind::Io,
            format!("cannot {op} {}: {err}", path.display()),
        )
    }
    /// Prefix the message with where it happened.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl<T> From<ort::Error<T>> for Error {
    fn from(e: ort::Error<T>) -> Self {
        let msg = e.to_string();
        if msg.contains("Exiting due to terminate flag") {
            return Error::cancelled();
        }
        Error::runtime(format!("ONNX Runtime: {msg}"))
    }
}
