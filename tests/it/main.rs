//! The one integration test binary: the real `neonctl-aws` binary against real stand-ins.

mod build;
mod cli;
mod computes;
mod controlplane;
mod deploy;
mod ecr;
mod fake_kube;
mod images;
mod infra;
mod kubeconfig;
mod moto;
mod neon_fixture;
mod nodes;
mod prereqs;
mod reconcile;
mod render;
mod stand_ins;
mod status;
mod support;
mod teardown;
