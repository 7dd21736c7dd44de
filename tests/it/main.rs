//! The one integration test binary: the real `neonctl-aws` binary against real stand-ins.

mod cli;
mod controlplane;
mod prereqs;
mod render;
mod support;
