//! The `tokengate` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    tokengate::cli::main()
}
