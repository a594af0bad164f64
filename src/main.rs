//! The `rwkvdb` command-line tool: a thin layer over the library (see `src/cli/`).

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
