//! Option tables: every training option, generation setting and step statistic is declared once,
//! with its name, type, default, range, help, append-only ABI ordinal and legacy value. The Rust
//! structs (`TrainConfig`, `GenerateParams`, `StepStats`), their defaults, range checks, JSON
//! (checkpoints, run configs, metrics) and the command line's flags all come from these tables;
//! the C structs in `bindings/c` are written by hand (cbindgen reads source) and checked against
//! them by tests.

mod generate;
mod stats;
mod train;

pub use generate::{GenerateParams, GENERATE_OPTIONS};
pub use stats::{StepStats, STEP_STATS};
pub use train::{
    DynamicSampling, SdeType, TextAggregation, TrainConfig, MAX_LEARNING_RATE, TRAIN_OPTIONS,
};

use crate::error::{Error, Result};

/// The type of an option as the tables, the CLI and the C structs see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    U32,
    U64,
    F32,
    F64,
    Bool,
    /// One of the names; C passes the index as `uint32_t`.
    Choice(&'static [&'static str]),
}

impl Kind {
    /// The C type of the field.
    pub fn c_type(&self) -> &'static str {
        match self {
            Kind::U32 | Kind::Choice(_) => "uint32_t",
            Kind::U64 => "uint64_t",
            Kind::F32 => "float",
            Kind::F64 => "double",
            Kind::Bool => "bool",
        }
    }
    /// Size in bytes of the C field.
    pub fn c_size(&self) -> usize {
        match self {
            Kind::U32 | Kind::Choice(_) | Kind::F32 => 4,
            Kind::U64 | Kind::F64 => 8,
            Kind::Bool => 1,
        }
    }
}

/// A value of any option.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Choice(&'static str),
}

impl Value {
    /// As a number, for range checks (choices and bools are never range-checked).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::U32(v) => Some(v as f64),
            Value::U64(v) => Some(v as f64),
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            Value::Bool(_) | Value::Choice(_) => None,
        }
    }
    pub fn to_json(&self) -> serde_json::Value {
        match *self {
            Value::U32(v) => v.into(),
            Value::U64(v) => v.into(),
            // through the shortest decimal form, so 1e-4 is written as 0.0001, not 9.99999974e-5
            Value::F32(v) => {
                serde_json::Number::from_f64(v.to_string().parse::<f64>().unwrap_or(v as f64))
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::F64(v) => serde_json::Number::from_f64(v)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Bool(v) => v.into(),
            Value::Choice(v) => v.into(),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::U32(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Choice(v) => write!(f, "{v}"),
        }
    }
}

/// Rust types an option can have.
pub trait OptionType: Sized + Copy {
    const KIND: Kind;
    fn to_value(self) -> Value;
    fn from_value(v: Value) -> Option<Self>;
}

macro_rules! option_type {
    ($t:ty, $k:ident) => {
        impl OptionType for $t {
            const KIND: Kind = Kind::$k;
            fn to_value(self) -> Value {
                Value::$k(self)
            }
            fn from_value(v: Value) -> Option<Self> {
                match v {
                    Value::$k(x) => Some(x),
                    _ => None,
                }
            }
        }
    };
}
/// A choice option: a C-like enum with its names (C passes the index as `uint32_t`), the
/// first variant its `Default`.
macro_rules! choice_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub enum $name {
            #[default]
            $($(#[$vm])* $v,)+
        }
        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($s),+];
            const ALL: &'static [$name] = &[$($name::$v),+];
            pub fn name(self) -> &'static str {
                Self::NAMES[self as usize]
            }
            /// By C value (the index in `NAMES`).
            pub fn from_index(i: u32) -> Option<$name> {
                Self::ALL.get(i as usize).copied()
            }
            /// By name (one of `NAMES`).
            pub fn from_name(s: &str) -> Option<$name> {
                Self::NAMES
                    .iter()
                    .position(|n| *n == s)
                    .and_then(|i| Self::from_index(i as u32))
            }
        }
        impl $crate::options::OptionType for $name {
            const KIND: $crate::options::Kind = $crate::options::Kind::Choice($name::NAMES);
            fn to_value(self) -> $crate::options::Value {
                $crate::options::Value::Choice(self.name())
            }
            fn from_value(v: $crate::options::Value) -> Option<Self> {
                match v {
                    $crate::options::Value::Choice(s) => Self::from_name(s),
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use choice_enum;

option_type!(u32, U32);
option_type!(u64, U64);
option_type!(f32, F32);
option_type!(f64, F64);
option_type!(bool, Bool);

/// Parse a value of `kind` from text (command line flags).
pub fn parse_value(kind: Kind, s: &str) -> std::result::Result<Value, String> {
    let s = s.trim();
    match kind {
        Kind::U32 => s.parse().map(Value::U32).map_err(|e| format!("{s:?}: {e}")),
        Kind::U64 => s.parse().map(Value::U64).map_err(|e| format!("{s:?}: {e}")),
        Kind::F32 => s.parse().map(Value::F32).map_err(|e| format!("{s:?}: {e}")),
        Kind::F64 => s.parse().map(Value::F64).map_err(|e| format!("{s:?}: {e}")),
        Kind::Bool => match s {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("{s:?} is not a boolean (true or false)")),
        },
        Kind::Choice(names) => names
            .iter()
            .find(|n| **n == s)
            .map(|n| Value::Choice(n))
            .ok_or_else(|| format!("{s:?} is not one of {}", names.join(", "))),
    }
}

/// A value of `kind` from JSON (checkpoints and run configs).
pub fn json_value(kind: Kind, v: &serde_json::Value) -> Option<Value> {
    match kind {
        Kind::U32 => v
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .map(Value::U32),
        Kind::U64 => v.as_u64().map(Value::U64),
        Kind::F32 => v.as_f64().map(|x| Value::F32(x as f32)),
        Kind::F64 => v.as_f64().map(Value::F64),
        Kind::Bool => v.as_bool().map(Value::Bool),
        Kind::Choice(names) => v
            .as_str()
            .and_then(|s| names.iter().find(|n| **n == s))
            .map(|n| Value::Choice(n)),
    }
}

/// An interval a numeric option must lie in (always finite as well).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f64,
    pub min_open: bool,
    pub max: f64,
    pub max_open: bool,
}

impl Range {
    pub const fn any() -> Range {
        Range {
            min: f64::NEG_INFINITY,
            min_open: true,
            max: f64::INFINITY,
            max_open: true,
        }
    }
    /// [min, inf)
    pub const fn at_least(min: f64) -> Range {
        Range {
            min,
            min_open: false,
            max: f64::INFINITY,
            max_open: true,
        }
    }
    /// (min, inf)
    pub const fn above(min: f64) -> Range {
        Range {
            min,
            min_open: true,
            max: f64::INFINITY,
            max_open: true,
        }
    }
    /// [min, max]
    pub const fn closed(min: f64, max: f64) -> Range {
        Range {
            min,
            min_open: false,
            max,
            max_open: false,
        }
    }
    /// (min, max]
    pub const fn open_closed(min: f64, max: f64) -> Range {
        Range {
            min,
            min_open: true,
            max,
            max_open: false,
        }
    }
    pub fn contains(&self, v: f64) -> bool {
        v.is_finite()
            && (if self.min_open {
                v > self.min
            } else {
                v >= self.min
            })
            && (if self.max_open {
                v < self.max
            } else {
                v <= self.max
            })
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lo = if self.min.is_infinite() {
            "-inf".to_string()
        } else {
            self.min.to_string()
        };
        let hi = if self.max.is_infinite() {
            "inf".to_string()
        } else {
            self.max.to_string()
        };
        write!(
            f,
            "{}{lo}, {hi}{}",
            if self.min_open { "(" } else { "[" },
            if self.max_open { ")" } else { "]" }
        )
    }
}

/// One row of an option table.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The Rust field, the JSON key (checkpoints, run configs) and the C field.
    pub name: &'static str,
    /// The command line flag (`--flag`).
    pub flag: &'static str,
    pub kind: Kind,
    pub range: Range,
    pub help: &'static str,
    /// Position of the field in the C struct (1 = the first field after `struct_size`); append-only.
    pub ordinal: u32,
    /// What a checkpoint or config written before the option existed means (None: every
    /// checkpoint has it).
    pub legacy: Option<Value>,
}

/// Check every numeric value against its range; the first violation names the option.
pub(crate) fn check_ranges(
    table: &[OptionSpec],
    get: impl Fn(&str) -> Option<Value>,
    what: &str,
) -> Result<()> {
    for o in table {
        let Some(v) = get(o.name).and_then(|v| v.as_f64()) else {
            continue;
        };
        if !o.range.contains(v) {
            return Err(Error::invalid(format!(
                "{what} {} must be finite and in {}, got {v}",
                o.name, o.range
            )));
        }
    }
    Ok(())
}

/// The defaults source of tables without defaults (statistics).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDefaults;

impl AsRef<NoDefaults> for NoDefaults {
    fn as_ref(&self) -> &NoDefaults {
        self
    }
}

/// Declares a struct whose fields are the rows of an option table, with `get`/`set` by name.
macro_rules! option_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident, table $table:ident, defaults from $dty:ty {
            $(
                $(#[doc = $doc:literal])+
                $field:ident: $ty:ty {
                    ord: $ord:literal, flag: $flag:literal, default: $default:expr,
                    range: $range:expr, legacy: $legacy:expr
                }
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        /// The option table of this struct, in ABI ordinal order.
        pub static $table: &[$crate::options::OptionSpec] = &[
            $( $crate::options::OptionSpec {
                name: stringify!($field),
                flag: $flag,
                kind: <$ty as $crate::options::OptionType>::KIND,
                range: $range,
                help: concat!($($doc),+),
                ordinal: $ord,
                legacy: $legacy,
            }, )*
        ];

        impl $name {
            /// Every option's default (from the model's manifest where it has one).
            #[allow(clippy::redundant_closure_call)]
            pub fn defaults(d: &impl AsRef<$dty>) -> $name {
                let d: &$dty = d.as_ref();
                $name { $( $field: ($default)(d), )* }
            }
            /// The value of the option `name`.
            pub fn get(&self, name: &str) -> Option<$crate::options::Value> {
                match name {
                    $( stringify!($field) => Some($crate::options::OptionType::to_value(self.$field)), )*
                    _ => None,
                }
            }
            /// Set the option `name` (unknown names and values of the wrong type are errors).
            pub fn set(&mut self, name: &str, v: $crate::options::Value) -> $crate::Result<()> {
                match name {
                    $( stringify!($field) => {
                        self.$field = $crate::options::OptionType::from_value(v).ok_or_else(|| {
                            $crate::Error::invalid(format!("option {name}: {v:?} has the wrong type"))
                        })?;
                        Ok(())
                    } )*
                    _ => Err($crate::Error::invalid(format!("unknown option {name:?}"))),
                }
            }
            /// Every option as a JSON object (keys are the table's names).
            pub fn to_json(&self) -> serde_json::Value {
                let mut m = serde_json::Map::new();
                $( m.insert(stringify!($field).to_string(),
                    $crate::options::OptionType::to_value(self.$field).to_json()); )*
                serde_json::Value::Object(m)
            }
            /// Read a JSON object written by `to_json` over `base`: a missing key takes the
            /// option's legacy value (an error when it has none); unknown keys are errors.
            pub fn from_json(obj: &serde_json::Value, mut base: $name, what: &str) -> $crate::Result<$name> {
                let map = obj.as_object().ok_or_else(|| {
                    $crate::Error::format(format!("{what}: not a JSON object"))
                })?;
                for k in map.keys() {
                    if !$table.iter().any(|o| o.name == k) {
                        return Err($crate::Error::format(format!(
                            "{what}: unknown option {k:?} (written by a newer unigrpo?)"
                        )));
                    }
                }
                for o in $table {
                    let v = match map.get(o.name) {
                        Some(j) => $crate::options::json_value(o.kind, j).ok_or_else(|| {
                            $crate::Error::format(format!("{what}: option {}: {j} is not a valid {:?}", o.name, o.kind))
                        })?,
                        None => o.legacy.ok_or_else(|| {
                            $crate::Error::format(format!("{what}: option {} is missing", o.name))
                        })?,
                    };
                    base.set(o.name, v)?;
                }
                Ok(base)
            }
        }
    };
}
pub(crate) use option_struct;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_hand() {
        assert!(Range::above(0.0).contains(1e-30) && !Range::above(0.0).contains(0.0));
        assert!(Range::at_least(0.0).contains(0.0) && !Range::at_least(0.0).contains(-1e-30));
        assert!(
            Range::open_closed(0.0, 1.0).contains(1.0)
                && !Range::open_closed(0.0, 1.0).contains(0.0)
        );
        assert!(!Range::any().contains(f64::NAN) && !Range::any().contains(f64::INFINITY));
        assert_eq!(Range::open_closed(0.0, 1.0).to_string(), "(0, 1]");
        assert_eq!(Range::at_least(2.0).to_string(), "[2, inf)");
    }

    #[test]
    fn parse_and_json_round_trip() {
        for (k, s) in [
            (Kind::U32, "7"),
            (Kind::F32, "0.0001"),
            (Kind::Bool, "false"),
            (Kind::U64, "18446744073709551615"),
        ] {
            let v = parse_value(k, s).unwrap();
            assert_eq!(json_value(k, &v.to_json()), Some(v), "{s}");
        }
        assert_eq!(Value::F32(1e-4).to_json().to_string(), "0.0001");
        assert!(parse_value(Kind::U32, "-1").is_err());
        assert!(parse_value(Kind::Choice(&["a", "b"]), "c")
            .unwrap_err()
            .contains("a, b"));
    }
}
