//! The fields of the C structs as the library sees them (name, offset, size), for the
//! `struct_size` rules, and tests that the structs agree with the core's option tables.

/// One field of a C struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
    pub is_bool: bool,
}

/// Size of the field a projection returns (a helper for `fields!`).
pub(crate) fn size_of_field<S, T: 'static>(_: impl Fn(&S) -> &T) -> (usize, bool) {
    (
        std::mem::size_of::<T>(),
        std::any::TypeId::of::<T>() == std::any::TypeId::of::<bool>(),
    )
}

/// The listed fields of a struct, in order.
macro_rules! fields {
    ($t:ty: $($f:ident),+ $(,)?) => {{
        let v: ::std::vec::Vec<$crate::layout::Field> = ::std::vec![$({
            let (size, is_bool) = $crate::layout::size_of_field(|s: &$t| &s.$f);
            $crate::layout::Field { name: stringify!($f), offset: ::std::mem::offset_of!($t, $f), size, is_bool }
        }),+];
        v
    }};
}
pub(crate) use fields;

/// The size a struct had in the ABI version whose last field is `last`: its end rounded up to
/// the struct's alignment.
pub(crate) fn size_through<T>(fields: &[Field], last: &str) -> usize {
    let f = fields
        .iter()
        .find(|f| f.name == last)
        .expect("field listed");
    (f.offset + f.size).div_ceil(std::mem::align_of::<T>()) * std::mem::align_of::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use unigrpo::options::{OptionSpec, GENERATE_OPTIONS, STEP_STATS, TRAIN_OPTIONS};

    /// The struct's fields (after struct_size, without callback fields) are the table's rows in
    /// ordinal order, with the table's C types, and the listed fields cover the whole struct.
    fn agrees<T>(what: &str, fields: &[Field], table: &[OptionSpec], callbacks: &[&str]) {
        assert_eq!(fields[0].name, "struct_size", "{what}");
        // contiguous: each field starts where the previous ended (up to alignment padding)
        let mut end = 0;
        for f in fields {
            assert!(
                f.offset >= end && f.offset - end < 8,
                "{what}.{}: gap or overlap",
                f.name
            );
            end = f.offset + f.size;
        }
        assert!(
            std::mem::size_of::<T>() - end < 8,
            "{what}: fields missing from the list"
        );
        let mut rows: Vec<&OptionSpec> = table.iter().collect();
        rows.sort_by_key(|o| o.ordinal);
        for (pos, f) in fields.iter().enumerate().skip(1) {
            if callbacks.contains(&f.name) {
                continue;
            }
            let o = table
                .iter()
                .find(|o| o.name == f.name)
                .unwrap_or_else(|| panic!("{what}.{}: not in the option table", f.name));
            assert_eq!(o.ordinal as usize, pos, "{what}.{}: ordinal", f.name);
            assert_eq!(
                o.kind.c_size(),
                f.size,
                "{what}.{}: C type {}",
                f.name,
                o.kind.c_type()
            );
            assert_eq!(
                o.kind == unigrpo::options::Kind::Bool,
                f.is_bool,
                "{what}.{}",
                f.name
            );
        }
        for o in table {
            assert!(
                fields.iter().any(|f| f.name == o.name),
                "option {} has no field in {what}",
                o.name
            );
        }
    }

    #[test]
    fn train_params_agree_with_the_option_table() {
        agrees::<crate::unigrpo_train_params>(
            "unigrpo_train_params",
            &crate::train_params::train_fields(),
            TRAIN_OPTIONS,
            &["progress", "progress_user_data"],
        );
    }

    #[test]
    fn generate_params_agree_with_the_option_table() {
        agrees::<crate::unigrpo_generate_params>(
            "unigrpo_generate_params",
            &crate::generate::generate_fields(),
            GENERATE_OPTIONS,
            &["progress", "progress_user_data"],
        );
    }

    #[test]
    fn step_stats_agree_with_the_stats_table() {
        agrees::<crate::unigrpo_step_stats>(
            "unigrpo_step_stats",
            &crate::stats::stats_fields(),
            STEP_STATS,
            &[],
        );
    }

    #[test]
    fn version_1_sizes_are_frozen() {
        // the layouts version 1 hosts were compiled against (x86-64 / aarch64 LP64)
        assert_eq!(
            size_through::<crate::unigrpo_train_params>(
                &crate::train_params::train_fields(),
                "progress_user_data"
            ),
            104
        );
        assert_eq!(
            size_through::<crate::unigrpo_model_options>(
                &crate::model::options_fields(),
                "onnxruntime_path"
            ),
            32
        );
        assert_eq!(std::mem::size_of::<crate::unigrpo_generate_params>(), 64);
        assert_eq!(
            size_through::<crate::unigrpo_step_stats>(&crate::stats::stats_fields(), "seconds"),
            80
        );
    }
}
