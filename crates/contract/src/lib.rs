//! What the `neonctl-aws` CLI and its in-cluster control plane agree on, so that drift between
//! them is a compile error: Neon's configuration and API shapes ([`neon`]), the custom
//! resources ([`resources`]) and the compute objects the operator makes of them ([`computes`]), how the control plane is started and what it reports
//! ([`service`]), and the tokens and verifiers both sides make or check ([`jwt`], [`scram`]).
//! It knows nothing of AWS, Docker or Kubernetes clients.

pub mod computes;
pub mod jwt;
pub mod neon;
pub mod resources;
pub mod scram;
pub mod service;
