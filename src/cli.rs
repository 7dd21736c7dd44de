//! The command line: global flags plus one subcommand per phase.
//!
//! Help texts are part of the product: each subcommand says what it does, what it needs and
//! shows an example. `tests/it/cli.rs` snapshots them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::OutputMode;
use crate::phase::PhaseName;

#[derive(Debug, Parser)]
#[command(
    name = "neonctl-aws",
    version,
    about = "From an empty AWS account to a SQL-serving, branchable self-hosted Neon on EKS, and back to zero",
    long_about = "neonctl-aws builds Neon from source, packages it into images, creates the AWS \
infrastructure (VPC, EKS, S3, ECR, IAM), pushes the images and deploys every Neon component \
with a small control plane. Each phase can run on its own; `up` runs them all, in parallel \
where possible, and resumes where a previous run stopped. `teardown` removes everything again.\n\n\
All phases share one state file (default ./.neonctl-aws/state.json) that records what was \
created; it never contains secrets.",
    after_help = "Start here:\n  neonctl-aws init            write a commented neonctl-aws.yaml\n  \
neonctl-aws prereqs         check the tools the phases need\n  \
neonctl-aws up --plan       see everything `up` would do (no AWS account needed)\n  \
neonctl-aws up              do it\n\n\
Exit codes: 0 success, 1 an external call failed, 2 usage or config error, 3 state locked by \
another run, 4 resources left after teardown, 5 prerequisites missing, 130 interrupted."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Config file [default: ./neonctl-aws.yaml if present, else built-in defaults]
    #[arg(long, global = true, value_name = "FILE", env = "NEONCTL_AWS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding state.json and its lock
    #[arg(long = "state", global = true, value_name = "DIR", default_value = ".neonctl-aws", env = "NEONCTL_AWS_STATE")]
    pub state_dir: PathBuf,
    /// Name prefix of every resource (overrides the config)
    #[arg(long, global = true, value_name = "NAME")]
    pub prefix: Option<String>,
    /// AWS region (overrides the config)
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Answer yes to every confirmation (required for destructive actions without a TTY)
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,
    /// More detail; repeat for debug logs (-vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors and final results
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Output style: human (progress bars, TTY), plain (one line per event), json (NDJSON on stdout)
    #[arg(long, global = true, value_enum, default_value_t = OutputMode::Auto, env = "NEONCTL_AWS_OUTPUT")]
    pub output: OutputMode,
}

/// A command on one named object, planned or done.
#[derive(Debug, Args)]
pub struct Named {
    /// Its name
    pub name: String,
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args, Clone, Default)]
pub struct PlanFlag {
    /// Print the actions this would take and make no mutating call
    #[arg(long)]
    pub plan: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter config file with every setting explained
    #[command(after_help = "Example:\n  neonctl-aws init --prefix acme-neon --region eu-west-1\n  \
neonctl-aws init --file staging.yaml --force")]
    Init(InitArgs),

    /// Check the tools, libraries and access every phase needs; optionally install what is missing
    #[command(
        long_about = "Detects the operating system (Debian/Ubuntu, Fedora/RHEL, Arch, macOS) and \
checks every tool the requested phases need, with versions: rustc/cargo and Neon's pinned toolchain, \
protoc >= 3.15, clang, make, flex, bison, pkg-config, the C libraries (openssl, readline, zlib, \
libseccomp, libcurl, icu), git, mold (recommended), a reachable Docker Engine and resolvable AWS \
credentials. Exits 5 when something required is missing.",
        after_help = "Examples:\n  neonctl-aws prereqs\n  neonctl-aws prereqs --for build,images\n  \
neonctl-aws prereqs --install --plan     show the package-manager commands\n  \
neonctl-aws prereqs --install --yes      run them"
    )]
    Prereqs(PrereqsArgs),

    /// Build Neon's binaries and Postgres from source (cargo + make)
    #[command(after_help = "Needs: a Neon checkout (--neon-src or neon.source in the config) and \
the tools `prereqs --for build` checks.\nThe full log is <state>/logs/build.log; results are staged in \
<state>/build with manifest.json. Unchanged sources are not rebuilt.\n\nExamples:\n  \
neonctl-aws build --neon-src ~/src/neon\n  neonctl-aws build --toolchain stable --jobs 4")]
    Build(BuildArgs),

    /// Package the built binaries into container images (FROM scratch, through the Docker Engine)
    #[command(after_help = "Needs: a finished `build` and a reachable Docker Engine (DOCKER_HOST).\n\n\
Example:\n  neonctl-aws images")]
    Images(PhaseArgs),

    /// Create the AWS infrastructure: VPC, EKS cluster and nodes, IAM, S3 bucket, ECR repositories
    #[command(after_help = "Needs: AWS credentials (the usual environment, profile or SSO chain).\n\
Every resource is tagged neonctl-aws/cluster=<prefix>; a re-run adopts what exists.\n\
--plan lists every change: + create, = adopt, ~ update (field: before → after, upgrade steps one \
Kubernetes minor version at a time) and ! what cannot change in place, which infra refuses before \
changing anything.\n\n\
Examples:\n  neonctl-aws infra --plan\n  neonctl-aws infra --region eu-west-1")]
    Infra(PhaseArgs),

    /// Push the images to ECR (or the registry from the config) and record their digests
    #[command(after_help = "Needs: `images`, and `infra` for ECR (or `images.registry` in the config).\n\n\
Example:\n  neonctl-aws push")]
    Push(PhaseArgs),

    /// Deploy every Neon component and the control plane to Kubernetes, then bootstrap a database
    #[command(
        long_about = "Creates the Secrets the manifests read (JWT key pair and tokens, \
pageserver configs, the storage controller database password, the proxy certificate, the \
database owner's password), generating only what the cluster does not have yet; applies the \
manifests `render` writes up to the control plane; creates the branch `main` (a tenant and \
timeline, role neondb_owner, database neondb) and the endpoint `main`, and waits until the \
control plane reports the branch Ready; applies compute and proxy; removes what an earlier \
deploy applied and this one does not; then runs `select version()` through the proxy and \
prints the connection string.\n\n\
The cluster is the EKS cluster from `infra`, or --kubeconfig/--context for your own. Secret \
values never appear in the output, the state file or `--plan`; --show-password puts the \
password in the printed connection string.",
        after_help = "Needs: `infra` (or --kubeconfig for your own cluster) and `push`.\n\n\
Examples:\n  neonctl-aws deploy --plan\n  neonctl-aws deploy\n  neonctl-aws deploy --show-password --output json\n  \
neonctl-aws deploy --kubeconfig ~/.kube/config --context staging \\\n    \
--bucket acme-neon --zones eu-west-1a,eu-west-1b \\\n    \
--image pageserver=registry.example.com/neon/pageserver@sha256:<digest> ...\n  \
kubectl port-forward -n neon svc/neon-proxy 5432 &\n  \
neonctl-aws deploy --proxy-address 127.0.0.1:5432      check SQL through the port-forward"
    )]
    Deploy(DeployArgs),

    /// Write the Kubernetes manifests `deploy` applies, without touching any cluster
    #[command(
        long_about = "Renders every Kubernetes object of the deployment (namespace, storage \
class, storage broker, storage controller and its database, pageservers, safekeepers, control \
plane, compute, proxy, with their services, service accounts, disruption budgets and network \
policies) into one YAML file per component. Needs no AWS account and no cluster: values only \
the infra and push phases know (bucket, zones, IRSA roles, image digests) come from the state \
file when those phases ran, and flags override them; whatever is still guessed is listed as a \
warning. Secrets are referenced by name, \
never rendered; the list of Secrets the manifests expect is printed.",
        after_help = "Examples:\n  neonctl-aws render --out manifests\n  \
neonctl-aws render --out manifests --bucket acme-neon-data --zones eu-west-1a,eu-west-1b,eu-west-1c \\\n    \
--image pageserver=registry.example.com/neon/pageserver@sha256:<digest> --external-storcon-db"
    )]
    Render(RenderArgs),

    /// Run every phase: build ∥ infra, then images, push, deploy. Resumes where a run stopped
    #[command(after_help = "`up --plan` needs no AWS account and no network: lookups it cannot make \
are listed and the plan assumes nothing exists yet.\n\nExamples:\n  neonctl-aws up --plan\n  \
neonctl-aws up --neon-src ~/src/neon --output plain")]
    Up(UpArgs),

    /// Show what the state file records for each phase, and check what is running
    #[command(
        long_about = "Shows what the state file records for each phase, then checks what is running when a \
cluster is reachable: the EKS cluster is ACTIVE, its nodes are Ready, each Neon component's pods are ready, \
the storage controller sees its pageservers (as the control plane last reported), and `select version()` \
answers through the proxy as the role deploy created. The cluster is the one the last deploy used (or the EKS \
cluster of `infra`, or --kubeconfig/--context). Exits 1 when a live check fails, so scripts can wait on it.",
        after_help = "Examples:\n  neonctl-aws status\n  neonctl-aws status --offline --output json\n  \
neonctl-aws status --kubeconfig ./kubeconfig --context my-cluster"
    )]
    Status(StatusArgs),

    /// Create, list, inspect and delete branches: copy-on-write children of a branch's data
    #[command(
        long_about = "A branch is a NeonBranch object in the deployment's namespace: a copy-on-write child \
of its parent's timeline (at its last record, at an LSN, or as of a time) with the parent's roles and databases. The \
control plane creates its timeline in Neon's storage and reports Ready; deleting the object deletes the \
timeline (never while another branch branches from it). `kubectl apply -f branch.yaml` does the same as \
these commands. The cluster is the one the last deploy used (or the EKS cluster of `infra`, or \
--kubeconfig/--context).",
        after_help = "Examples:\n  neonctl-aws branches list\n  neonctl-aws branches create dev\n  \
neonctl-aws branches create before-migration --parent main --at 0/16B5A50\n  \
neonctl-aws branches create yesterday --at 2026-11-25T09:00:00Z --read-only\n  \
neonctl-aws branches get dev --output json\n  neonctl-aws branches reset dev\n  \
neonctl-aws branches restore dev --at 2026-11-26T08:00:00Z\n  neonctl-aws branches rename dev feature\n  \
neonctl-aws branches delete dev"
    )]
    Branches(BranchesArgs),

    /// Endpoints (a branch's computes): list, create (read-only ones too), delete, suspend, start,
    /// and set when idle ones scale to zero
    #[command(
        long_about = "An endpoint is a NeonEndpoint object: the compute serving a branch, reached through the proxy as `<endpoint>.<domain>`. Scale to zero: the control plane asks each active compute's compute_ctl for its last activity (a running query, an open transaction, replication, autovacuum) and, once it has been idle for the endpoint's suspend timeout (300 s unless set; 0 = never), stops Postgres and scales the compute to zero. The next connection through the proxy starts it again (a cold start: the pod's start plus Postgres'), and the proxy holds the connection until it runs. `suspend` and `start` do it now.",
        after_help = "Examples:
  neonctl-aws endpoints list
  neonctl-aws endpoints update dev --suspend-timeout 60
  neonctl-aws endpoints update main --suspend-timeout 0
  neonctl-aws endpoints suspend dev
  neonctl-aws endpoints start dev"
    )]
    Endpoints(EndpointsArgs),

    /// A branch's roles: list, create (with a generated password kept in a Secret), delete
    #[command(
        after_help = "Examples:\n  neonctl-aws roles list --branch dev\n  neonctl-aws roles create app --branch dev --show-password\n  \
neonctl-aws roles delete app --branch dev"
    )]
    Roles(RolesArgs),

    /// A branch's databases: list, create, delete
    #[command(
        after_help = "Examples:\n  neonctl-aws databases list --branch dev\n  neonctl-aws databases create shop --owner app --branch dev\n  \
neonctl-aws databases delete shop --branch dev"
    )]
    Databases(DatabasesArgs),

    /// Print how to connect to a branch's endpoint through the proxy
    #[command(
        long_about = "The connection string of a branch's endpoint: `<endpoint>.<domain>` once `*.<domain>` points at the \
proxy, and the same through the proxy's own address with the endpoint in the options (no DNS needed). The \
password stays out unless --show-password (it is read from the deployment's Secret).",
        after_help = "Examples:\n  neonctl-aws connection-string\n  neonctl-aws connection-string dev --psql\n  \
psql \"$(neonctl-aws connection-string dev --show-password --output plain)\""
    )]
    ConnectionString(ConnectionStringArgs),

    /// Write or merge a kubectl context for the EKS cluster; kubectl then needs no aws CLI
    #[command(after_help = "The context's user runs `neonctl-aws token` as its exec plugin.\n\n\
Examples:\n  neonctl-aws kubeconfig\n  neonctl-aws kubeconfig --file ./kubeconfig --context neon-staging")]
    Kubeconfig(KubeconfigArgs),

    /// Print an EKS bearer token as kubectl ExecCredential JSON (the exec plugin `kubeconfig` sets up)
    #[command(after_help = "Example:\n  neonctl-aws token --cluster neon --region us-east-1")]
    Token(TokenArgs),
    /// Print a least-privilege IAM policy for the AWS phases of this prefix and region
    #[command(after_help = "Every write is scoped to the prefix's names, IAM path or tags; no action is a wildcard.\n\n\
Examples:\n  neonctl-aws iam-policy > neon-policy.json\n  neonctl-aws iam-policy --for push --prefix acme")]
    IamPolicy(IamPolicyArgs),

    /// Run the control plane Neon's components call (inside the cluster, as a Deployment)
    #[command(subcommand)]
    ControlPlane(neonctl_control_plane::Command),

    /// Print a shell completion script
    #[command(after_help = "Examples:\n  neonctl-aws completions bash > /etc/bash_completion.d/neonctl-aws\n  \
neonctl-aws completions zsh > \"${fpath[1]}/_neonctl-aws\"\n  neonctl-aws completions fish > ~/.config/fish/completions/neonctl-aws.fish\n  \
neonctl-aws completions powershell >> $PROFILE")]
    Completions(CompletionsArgs),

    /// Print the man page (roff); `cargo xtask man` writes it to target/man/neonctl-aws.1
    #[command(hide = true)]
    Man,

    /// Delete everything this prefix created, found from the state file and by tag lookup
    #[command(after_help = "Works without a state file: `neonctl-aws teardown --prefix X --region R` \
finds everything tagged neonctl-aws/cluster=X.\nDeleting the bucket's data needs --yes (or a prompt \
on a TTY); --keep-data keeps the bucket.\n\nExamples:\n  neonctl-aws teardown --plan\n  \
neonctl-aws teardown --yes")]
    Teardown(TeardownArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the config
    #[arg(long, default_value = "neonctl-aws.yaml", value_name = "FILE")]
    pub file: PathBuf,
    /// Overwrite an existing file
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PrereqsArgs {
    /// Only check what these phases need [default: all]
    #[arg(long = "for", value_enum, value_delimiter = ',', value_name = "PHASES")]
    pub for_phases: Vec<PhaseName>,
    /// Install what is missing with the system package manager (asks first unless --yes)
    #[arg(long)]
    pub install: bool,
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args, Clone, Default)]
pub struct PhaseArgs {
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args, Clone, Default)]
pub struct BuildArgs {
    #[command(flatten)]
    pub build: BuildOptions,
    #[command(flatten)]
    pub plan: PlanFlag,
}

/// How Neon is built; shared by `build` and `up`.
#[derive(Debug, Args, Clone, Default)]
pub struct BuildOptions {
    /// Path of a Neon checkout (overrides neon.source in the config)
    #[arg(long, value_name = "PATH")]
    pub neon_src: Option<PathBuf>,
    /// Build with this installed Rust toolchain (`cargo +NAME`) instead of the one Neon's
    /// rust-toolchain.toml pins
    #[arg(long, value_name = "NAME")]
    pub toolchain: Option<String>,
    /// Parallel compile jobs [default: the smaller of the CPU count and GiB of memory / 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub build: BuildOptions,
    #[command(flatten)]
    pub deploy: DeployOptions,
    #[command(flatten)]
    pub overrides: RenderOverrideArgs,
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only what the state file records: no AWS or Kubernetes calls
    #[arg(long)]
    pub offline: bool,
    /// Check the cluster of this kubeconfig instead of the EKS cluster in the state
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context to check [default: its current context]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Check SQL through this address instead of the one deploy reached the proxy at (e.g. the
    /// local end of `kubectl port-forward svc/<prefix>-proxy 5432`)
    #[arg(long, value_name = "HOST:PORT")]
    pub proxy_address: Option<String>,
}

/// Which cluster a command talks to.
#[derive(Debug, Args, Clone, Default)]
pub struct ClusterArgs {
    /// Use the cluster of this kubeconfig instead of the one the state records
    #[arg(long, value_name = "FILE", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context [default: its current context]
    #[arg(long, value_name = "NAME", global = true)]
    pub context: Option<String>,
}

#[derive(Debug, Args)]
pub struct BranchesArgs {
    #[command(subcommand)]
    pub command: BranchesCommand,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How long to wait for the control plane, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 300, global = true)]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum BranchesCommand {
    /// Every branch: parent, branch point, phase, readiness, creation time
    List,
    /// One branch, with its tenant and timeline ids
    Get {
        /// The branch's name
        name: String,
    },
    /// Branch from a parent's data, copy-on-write, with an endpoint of its own; wait until its
    /// compute runs and print its connection string
    Create(BranchCreateArgs),
    /// Give a branch its parent's current data again: a new timeline from the parent's head,
    /// same endpoint and connection string; the old timeline is deleted
    Reset(BranchResetArgs),
    /// Give a branch its own data as of a time or LSN: same endpoint and connection string; the
    /// data it has now is kept as the branch `<name>-old-<time>` until you delete it
    Restore(BranchRestoreArgs),
    /// Delete a branch: its computes stop, then its timeline goes (never `main`, never a branch
    /// others branch from)
    Delete(BranchDeleteArgs),
    /// Give a branch another name: the same timeline, endpoints and connection strings (never
    /// `main`)
    Rename(BranchRenameArgs),
}

#[derive(Debug, Args)]
pub struct BranchCreateArgs {
    /// The new branch's name: a DNS label (lowercase letters, digits, '-'; at most 63)
    pub name: String,
    /// The branch to branch from
    #[arg(long, default_value = "main")]
    pub parent: String,
    /// Branch from the parent as of this LSN (e.g. 0/16B5A50) or RFC 3339 time (e.g.
    /// 2026-11-26T09:30:00Z, within the pageserver's history: 7 days by default) instead of its
    /// last record
    #[arg(long, value_name = "LSN|TIME")]
    pub at: Option<String>,
    /// Put the password in the printed connection string
    #[arg(long)]
    pub show_password: bool,
    /// Scale its compute to zero after this many idle seconds (0: never) [default: 300]
    #[arg(long, value_name = "SECONDS")]
    pub suspend_timeout: Option<u32>,
    /// Give it a read-only endpoint: a hot standby following the branch (Neon's replica
    /// compute), which refuses writes
    #[arg(long)]
    pub read_only: bool,
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args)]
pub struct EndpointsArgs {
    #[command(subcommand)]
    pub command: EndpointsCommand,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How long to wait for the control plane, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 300, global = true)]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum EndpointsCommand {
    /// Every endpoint: its branch, type, state (Active, Suspended, Starting, Pending), last
    /// activity and suspend timeout
    List,
    /// Another endpoint of a branch (a read-only one: a hot standby following its writes); wait
    /// until its compute runs and print its connection string
    Create {
        /// The endpoint's name: a DNS label, the first label of its host name
        name: String,
        /// The branch it serves
        #[arg(long)]
        branch: String,
        /// A hot standby of the branch (Neon's replica compute), which refuses writes
        #[arg(long)]
        read_only: bool,
        /// Scale its compute to zero after this many idle seconds (0: never) [default: 300]
        #[arg(long, value_name = "SECONDS")]
        suspend_timeout: Option<u32>,
        /// Put the password in the printed connection string
        #[arg(long)]
        show_password: bool,
        #[command(flatten)]
        plan: PlanFlag,
    },
    /// Remove an endpoint: its compute stops (the branch and its data stay)
    Delete(Named),
    /// Change an endpoint's settings
    Update {
        /// The endpoint's name
        name: String,
        /// Scale its compute to zero after this many idle seconds (0: never)
        #[arg(long, value_name = "SECONDS")]
        suspend_timeout: u32,
        #[command(flatten)]
        plan: PlanFlag,
    },
    /// Stop an endpoint's compute now (Postgres shut down cleanly, then scaled to zero); the
    /// next connection starts it again
    Suspend(Named),
    /// Start a suspended endpoint's compute and wait until it runs
    Start(Named),
}

#[derive(Debug, Args)]
pub struct BranchResetArgs {
    /// The branch to reset to its parent's head
    pub name: String,
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args)]
pub struct BranchRestoreArgs {
    /// The branch to restore
    pub name: String,
    /// Its data as of this LSN (e.g. 0/16B5A50) or RFC 3339 time (within the pageserver's
    /// history: 7 days by default)
    #[arg(long, value_name = "LSN|TIME")]
    pub at: String,
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args)]
pub struct RolesArgs {
    #[command(subcommand)]
    pub command: RolesCommand,
    #[command(flatten)]
    pub on: OnBranch,
}

/// The branch a `roles` or `databases` command works on, and how to reach its cluster.
#[derive(Debug, Args)]
pub struct OnBranch {
    /// The branch
    #[arg(long, default_value = "main", global = true)]
    pub branch: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How long to wait for the control plane, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 300, global = true)]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// The branch's roles, and where each one's password is kept
    List,
    /// A login role with a generated password (kept only in a Secret and as a SCRAM verifier)
    Create {
        /// Lowercase letters, digits and '_', starting with a letter or '_' (at most 40)
        name: String,
        /// Print its password in the connection string
        #[arg(long)]
        show_password: bool,
        #[command(flatten)]
        plan: PlanFlag,
    },
    /// Remove a role: the proxy lets it in no more (never one that owns a database)
    Delete(Named),
}

#[derive(Debug, Args)]
pub struct DatabasesArgs {
    #[command(subcommand)]
    pub command: DatabasesCommand,
    #[command(flatten)]
    pub on: OnBranch,
}

#[derive(Debug, Subcommand)]
pub enum DatabasesCommand {
    /// The branch's databases and their owners
    List,
    /// A database the branch's computes create, owned by a role of the branch
    Create {
        /// Lowercase letters, digits and '_', starting with a letter or '_' (at most 40)
        name: String,
        /// Its owner [default: the branch's first role]
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        plan: PlanFlag,
    },
    /// Drop a database from the branch's computes (its data on this branch goes; other branches
    /// keep theirs)
    Delete(Named),
}

#[derive(Debug, Args)]
pub struct ConnectionStringArgs {
    /// The branch whose endpoint to connect to
    #[arg(default_value = "main")]
    pub branch: String,
    /// Log in as this role [default: the branch's first role, the owner]
    #[arg(long)]
    pub role: Option<String>,
    /// Connect to this database [default: the branch's first database]
    #[arg(long)]
    pub database: Option<String>,
    /// Print a psql command line instead of a URL
    #[arg(long)]
    pub psql: bool,
    /// Put the password in the connection string (read from the deployment's Secret)
    #[arg(long)]
    pub show_password: bool,
    /// The proxy's address for the form without DNS [default: the one deploy reached]
    #[arg(long, value_name = "HOST:PORT")]
    pub proxy_address: Option<String>,
    /// Connect to this endpoint of the branch (a read-only one, say) [default: the one named
    /// like the branch]
    #[arg(long)]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct BranchRenameArgs {
    /// The branch to rename
    pub name: String,
    /// Its new name: a DNS label
    pub new_name: String,
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args)]
pub struct BranchDeleteArgs {
    /// The branch to delete
    pub name: String,
    /// Also delete the branches made from it, and theirs (their data hangs on its timeline);
    /// without it, a branch with children is refused
    #[arg(long)]
    pub with_children: bool,
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// kubeconfig to merge into [default: first path of $KUBECONFIG, else ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Name of the context [default: the prefix]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// EKS cluster name [default: the prefix]
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Directory to write the manifests into (created if missing; files a previous render
    /// wrote and this one does not are removed)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub overrides: RenderOverrideArgs,
}

/// What the manifests would otherwise take from the config and the infra and push state;
/// shared by `render` and `deploy`.
#[derive(Debug, Args, Clone, Default)]
pub struct RenderOverrideArgs {
    /// Kubernetes namespace [default: the prefix]
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// S3 bucket of pageserver and safekeeper data [default: bucket.name, else guessed]
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,
    /// S3-compatible endpoint of the bucket (MinIO, Ceph, R2, ...) instead of AWS S3; its
    /// credentials come from Secret <prefix>-s3-credentials [default: bucket.endpoint]
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Availability zones to place pageservers and safekeepers in, round-robin
    #[arg(long, value_delimiter = ',', value_name = "ZONES")]
    pub zones: Vec<String>,
    /// An image reference, by digest or tag; repeat per image
    #[arg(long = "image", value_name = "IMAGE=REFERENCE")]
    pub images: Vec<String>,
    /// IAM role (IRSA) the pageserver's service account assumes for S3
    #[arg(long, value_name = "ARN")]
    pub pageserver_role_arn: Option<String>,
    /// IAM role (IRSA) the safekeeper's service account assumes for S3
    #[arg(long, value_name = "ARN")]
    pub safekeeper_role_arn: Option<String>,
    /// Use your own storage controller database (its URL in the Secret <prefix>-storcon-db,
    /// key database-url) instead of an in-cluster Postgres
    #[arg(long)]
    pub external_storcon_db: bool,
    /// Clients connect to <endpoint>.<DOMAIN> [default: proxy.domain, else <prefix>.neon.internal]
    #[arg(long, value_name = "DOMAIN")]
    pub proxy_domain: Option<String>,
    /// Use this existing StorageClass instead of creating an encrypted gp3 one
    #[arg(long, value_name = "NAME")]
    pub storage_class: Option<String>,
}

/// `deploy`'s own options; `up` deploys with the defaults (the EKS cluster from `infra`).
#[derive(Debug, Args, Clone)]
pub struct DeployOptions {
    /// Deploy to the cluster of this kubeconfig instead of the EKS cluster from `infra`
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use [default: its current context]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The proxy's TLS certificate (PEM; subject CN *.<proxy domain>) [default: proxy.tls_cert,
    /// else a generated self-signed one]
    #[arg(long, value_name = "FILE", requires = "proxy_tls_key")]
    pub proxy_tls_cert: Option<PathBuf>,
    /// The key of --proxy-tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "proxy_tls_cert")]
    pub proxy_tls_key: Option<PathBuf>,
    /// Check SQL through this address instead of the proxy's load balancer (e.g. the local end
    /// of `kubectl port-forward svc/<prefix>-proxy 5432`)
    #[arg(long, value_name = "HOST:PORT")]
    pub proxy_address: Option<String>,
    /// Print the database password in the connection string (default: a command that reads it)
    #[arg(long)]
    pub show_password: bool,
    /// How long to wait for each step: workloads, the branch, the load balancer, the SQL check
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DEPLOY_TIMEOUT)]
    pub timeout: u64,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            proxy_tls_cert: None,
            proxy_tls_key: None,
            proxy_address: None,
            show_password: false,
            timeout: DEFAULT_DEPLOY_TIMEOUT,
        }
    }
}

/// Seconds `deploy` waits for each step by default.
pub const DEFAULT_DEPLOY_TIMEOUT: u64 = 900;

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub deploy: DeployOptions,
    #[command(flatten)]
    pub overrides: RenderOverrideArgs,
    #[command(flatten)]
    pub plan: PlanFlag,
}

#[derive(Debug, Args)]
pub struct IamPolicyArgs {
    /// Only what these commands need [default: all]
    #[arg(long = "for", value_enum, value_delimiter = ',', value_name = "COMMANDS")]
    pub for_phases: Vec<PolicyFor>,
}

/// The commands that call AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyFor {
    Infra,
    Push,
    Deploy,
    Teardown,
}

impl PolicyFor {
    pub const ALL: &[PolicyFor] = &[PolicyFor::Infra, PolicyFor::Push, PolicyFor::Deploy, PolicyFor::Teardown];
}

#[derive(Debug, Args)]
pub struct TeardownArgs {
    /// Keep the S3 bucket and its data
    #[arg(long)]
    pub keep_data: bool,
    /// List what would be deleted and delete nothing (same as --plan)
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub plan: PlanFlag,
}
