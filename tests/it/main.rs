//! The one integration test binary: the real `neonctl-aws` binary against real stand-ins.

mod build;
mod cli;
mod ecr;
mod images;
mod neon_fixture;
mod stand_ins;
mod support;
