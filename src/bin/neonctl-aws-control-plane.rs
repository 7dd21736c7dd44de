//! The control plane as its image runs it: nothing of the CLI is linked in.

fn main() -> std::process::ExitCode {
    neonctl_control_plane::main()
}
