//! The command line of the control plane: `neonctl-aws control-plane serve` and, in the
//! control plane's image, `neonctl-aws-control-plane serve`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the storage controller's compute hooks, compute specs and the proxy's cplane-v1 API
    #[command(
        long_about = "Serves, on one HTTP port: the storage controller's compute hooks \
(PUT /storage/notify-attach and /storage/notify-safekeepers; affected computes get their new \
spec through compute_ctl's POST /configure), compute_ctl's spec \
(GET /compute/api/v2/computes/<id>/spec), the proxy's cplane-v1 API under /proxy \
(get_endpoint_access_control, wake_compute, endpoints/<id>/jwks) and GET /healthz.\n\n\
Where the storage nodes and computes are comes from the topology file `render` writes. \
Branches, endpoints, roles and placements are kept in memory, in a JSON file (--store FILE), or \
in the NeonBranch and NeonEndpoint custom resources of the namespace (--store kubernetes, the \
in-cluster way). An operator registers the safekeepers with the storage controller and, with \
--store kubernetes, watches the NeonBranch objects: it creates each branch's tenant and timeline, \
reports Ready or why not in the branch's status, deletes the timeline of a deleted branch (a \
finalizer holds the object until then), and every 5 s writes the storage controller's view of \
its pageservers to the status ConfigMap.\n\n\
Callers' bearer JWTs are checked against the Ed25519 public key in $NEONCTL_JWT_PUBLIC_KEY (PEM); \
tokens for computes are signed with the private key in $NEONCTL_JWT_PRIVATE_KEY (PEM, PKCS#8), as \
are the tokens it calls the storage controller with. Without both it refuses to start, unless \
--insecure-no-auth says to trust every caller. Roles are stored as SCRAM-SHA-256 verifiers only. \
Stops gracefully on SIGTERM or Ctrl-C.",
        after_help = "Example:\n  NEONCTL_CONTROL_PLANE_CONFIG=/etc/neonctl-aws/topology.json \\\n    \
neonctl-aws control-plane serve --listen 0.0.0.0:8080 --store /data/control-plane.json\n\n\
In the cluster the image runs the same command as `neonctl-aws-control-plane serve --store kubernetes`."
    )]
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The topology file (topology.json from `render`)
    #[arg(long, env = "NEONCTL_CONTROL_PLANE_CONFIG", value_name = "FILE")]
    pub topology: PathBuf,
    /// Address to listen on [default: `listen` from the topology]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Keep branches, endpoints, roles and placements in this JSON file, or, with
    /// `kubernetes`, in the namespace's NeonBranch and NeonEndpoint objects [default: in memory]
    #[arg(long, env = "NEONCTL_CONTROL_PLANE_STORE", value_name = "FILE|kubernetes", value_parser = parse_store)]
    pub store: Option<StoreArg>,
    /// With --store kubernetes: the namespace of the custom resources
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// With --store kubernetes: the ConfigMap the storage status is written to
    #[arg(long, env = "NEONCTL_STATUS_CONFIG_MAP", value_name = "NAME")]
    pub status_config_map: Option<String>,
    /// With --store kubernetes: elect the operator's leader among the replicas through this
    /// coordination.k8s.io Lease; every replica serves the APIs [default: run the operator, no election]
    #[arg(long, env = "NEONCTL_LEASE", value_name = "NAME")]
    pub lease: Option<String>,
    /// This replica's identity in the Lease
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,
    /// Run without $NEONCTL_JWT_PUBLIC_KEY and $NEONCTL_JWT_PRIVATE_KEY: every caller is trusted
    /// and no token is minted. Only for a network nobody else reaches; `status` warns about it
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// Where `control-plane serve` keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreArg {
    /// The NeonBranch and NeonEndpoint custom resources.
    Kubernetes,
    File(PathBuf),
}

fn parse_store(value: &str) -> Result<StoreArg, String> {
    match value {
        "" => Err("give a file, or `kubernetes`".into()),
        "kubernetes" => Ok(StoreArg::Kubernetes),
        path => Ok(StoreArg::File(path.into())),
    }
}
