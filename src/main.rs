//! The `tokengate` binary: everything lives in the library (its `cli`
//! module).

/// mimalloc: a proxy allocates and frees small buffers on every request,
/// which it serves faster than the system allocator (docs/design/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tokengate::cli_main()
}
