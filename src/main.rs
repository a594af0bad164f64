//! The `rwkvdb` command-line tool: a thin layer over the library (see `src/cli/`).

#![warn(clippy::pedantic)]
// The pedantic lints that do not fit this code base:
#![allow(
    // Numeric code: sizes, token ids and counts convert between usize, u32, i64 and f32 on
    // purpose; each conversion is bounded by a documented limit where it matters.
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    // Kernels and model math use the paper's short names (r, k, v, w, a, b...).
    clippy::many_single_char_names,
    clippy::similar_names,
    // Every error is a typed enum whose variants document themselves.
    clippy::missing_errors_doc,
    // Parsers and graph builders read best as one function per format.
    clippy::too_many_lines,
    // Pickle opcodes with equal handling stay separate arms, one per opcode.
    clippy::match_same_arms,
    // `Default::default()` in struct literals whose field types are spelled out above.
    clippy::default_trait_access,
    // Handles (`Arc`s, CLI argument structs) are passed by value where the callee owns the call.
    clippy::needless_pass_by_value
)]

mod cli;

fn main() -> std::process::ExitCode {
    // A closed stdout (`rwkvdb query ... | head -1`) ends the command quietly with success, as
    // other Unix tools do, instead of a panic message about a broken pipe.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or_default();
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    cli::main()
}
