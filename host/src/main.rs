//! `tdxlab`: the command line of the emulated-TDX host (see the library for the roles).

fn main() -> std::process::ExitCode {
    tdxlab::cmd::main()
}
