//! The `outpost` binary; see `proxy::cli`.

fn main() -> std::process::ExitCode {
    proxy::cli::main()
}
