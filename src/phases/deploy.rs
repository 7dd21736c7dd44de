//! `deploy`: the rendered manifests onto a cluster, a first database, and the proof that it
//! answers SQL through the proxy.
//!
//! ```text
//! read Secrets ─► namespace ─► Secrets ─► CRDs … control plane ─► branch + endpoint ─► wait Ready
//!   ─► proxy ─► prune ─► proxy address ─► select version() ─► connection string
//! ```
//! The control plane makes endpoint `main`'s compute (as every endpoint's) once the branch is
//! Ready; the proxy is rolled out after that, and the first query waits for the compute. The
//! prune runs once, over everything both roll-outs applied; it never touches the computes,
//! which carry the control plane's `managed-by`.
//!
//! The cluster is the EKS cluster `infra` created, or the one `--kubeconfig`/`--context` name.
//! Secrets are generated once and kept ([`secrets`]); the branch keeps its tenant and timeline
//! ([`bootstrap`]). The state records names, ids and addresses, never a value.

pub(crate) mod bootstrap;
pub mod connect;
pub mod secrets;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::core::v1::{Secret as SecretObject, Service};
use kube::api::{Api, DynamicObject};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use self::bootstrap::Progress;
use self::connect::{Address, Connection};
use self::secrets::{SecretError, SecretsPlan};
use crate::cli::{DeployOptions, RenderOverrideArgs};
use crate::engine::{Context, PhaseName, PhasePlan};
use crate::exit::{Coded, USAGE};
use crate::k8s::apply::{Applied, Applier, ApplyError, Change, Component, ObjectKey, parse_manifests};
use crate::neon::Secret;
use crate::output::{Level, PhaseReporter, PlannedAction, Printer, Style, Verb};
use crate::render::{RenderInputs, StorconDb};
use crate::state::{ClusterAccess, DeployRecord, State};
use crate::wait::{self, Check, Waited};

/// On every pod template: a digest of the Secret values the workloads read, so that a changed
/// Secret restarts them (it reveals nothing of the values).
const SECRETS_DIGEST: &str = "neonctl-aws/secrets-sha256";
/// Components rolled out after the bootstrap.
const AFTER_BOOTSTRAP: [&str; 1] = ["proxy"];
const NO_CLUSTER: &str = "no cluster to deploy to: the state records no EKS cluster. Run `neonctl-aws infra` first, or pass \
     --kubeconfig FILE [--context NAME] to deploy to your own cluster";

pub struct Deploy {
    pub options: DeployOptions,
    pub overrides: RenderOverrideArgs,
    /// Prints the connection string (a result, on stdout).
    pub printer: Arc<Printer>,
}

/// The manifests, split around the bootstrap.
#[derive(Clone)]
struct Manifests {
    inputs: RenderInputs,
    namespace: Vec<Component>,
    before: Vec<Component>,
    after: Vec<Component>,
}

impl Manifests {
    fn all(&self) -> impl Iterator<Item = &Component> {
        self.namespace.iter().chain(&self.before).chain(&self.after)
    }

    /// Stamps [`SECRETS_DIGEST`] on every Deployment's and StatefulSet's pod template.
    fn stamp(&mut self, digest: &str) {
        let components = self.namespace.iter_mut().chain(&mut self.before).chain(&mut self.after);
        for obj in components.flat_map(|c| c.objects.iter_mut()) {
            let workload = obj.types.as_ref().is_some_and(|t| matches!(t.kind.as_str(), "Deployment" | "StatefulSet"));
            if let Some(metadata) = obj.data.pointer_mut("/spec/template/metadata").and_then(Value::as_object_mut).filter(|_| workload) {
                let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
                if let Some(annotations) = annotations.as_object_mut() {
                    annotations.insert(SECRETS_DIGEST.into(), json!(digest));
                }
            }
        }
    }
}

/// `10-storage-broker.yaml` → `storage-broker`.
fn component_name(file: &str) -> String {
    let stem = file.strip_suffix(".yaml").unwrap_or(file);
    stem.split_once('-').map_or(stem, |(_, rest)| rest).to_string()
}

impl Deploy {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.options.timeout.max(1))
    }

    fn access(&self, state: &State) -> Option<ClusterAccess> {
        crate::k8s::cluster_access(self.options.kubeconfig.as_deref(), self.options.context.as_deref(), state)
    }

    async fn client(&self, cx: &Context, access: &ClusterAccess) -> anyhow::Result<Client> {
        crate::k8s::client_for(access, &cx.config, cx.calls.clone()).await
    }

    fn manifests(&self, cx: &Context) -> anyhow::Result<Manifests> {
        let inputs = super::render::inputs(&cx.config, &cx.state(), &self.overrides)?;
        let mut out = Manifests { inputs, namespace: vec![], before: vec![], after: vec![] };
        for manifest in crate::render::render(&out.inputs)? {
            let objects = parse_manifests(&manifest.yaml)
                .map_err(|e| anyhow!("{} does not parse back: {e}; this is a bug in neonctl-aws, please report it", manifest.file))?;
            let component = Component { name: component_name(&manifest.file), objects };
            match component.name.as_str() {
                "namespace" => out.namespace.push(component),
                name if AFTER_BOOTSTRAP.contains(&name) => out.after.push(component),
                _ => out.before.push(component),
            }
        }
        Ok(out)
    }

    fn user_tls(&self, cx: &Context) -> anyhow::Result<Option<secrets::UserTls>> {
        let cert = self.options.proxy_tls_cert.as_ref().or(cx.config.proxy.tls_cert.as_ref());
        let key = self.options.proxy_tls_key.as_ref().or(cx.config.proxy.tls_key.as_ref());
        match (cert, key) {
            (Some(cert), Some(key)) => {
                Ok(Some(tls::read_user_files(cert, key).map_err(|e| Coded { code: USAGE, message: e.to_string() })?))
            }
            _ => Ok(None),
        }
    }

    fn proxy_address(&self) -> anyhow::Result<Option<Address>> {
        self.options
            .proxy_address
            .as_deref()
            .map(|text| {
                Address::parse(text).ok_or_else(|| {
                    anyhow::Error::new(Coded {
                        code: USAGE,
                        message: format!("--proxy-address `{text}`: expected HOST:PORT, e.g. 127.0.0.1:5432"),
                    })
                })
            })
            .transpose()
    }

    /// The Secrets against what the cluster has. A user's Secret that is missing (external
    /// database, S3-compatible store) or a certificate for another domain is a usage error:
    /// nothing was changed.
    async fn secrets(&self, cx: &Context, client: &Client, inputs: &RenderInputs) -> anyhow::Result<SecretsPlan> {
        let tls = self.user_tls(cx)?;
        let live = live_secrets(client, &inputs.namespace, &secret_names(inputs)).await?;
        secrets::plan(inputs, &live, tls.as_ref(), &ring::rand::SystemRandom::new()).map_err(|e| match e {
            SecretError::ExternalDatabase { .. } | SecretError::S3Credentials { .. } | SecretError::CertificateName { .. } => {
                Coded { code: USAGE, message: e.to_string() }.into()
            }
            e => anyhow::Error::new(e),
        })
    }

    async fn plan_inner(&self, cx: &Context) -> anyhow::Result<PhasePlan> {
        let manifests = self.manifests(cx)?;
        let mut plan = PhasePlan { actions: vec![], notes: manifests.inputs.assumptions() };
        let state = cx.state();
        let Some(access) = self.access(&state) else {
            plan.notes.push(format!("{NO_CLUSTER}. Listed is everything deploy would apply"));
            unreachable_plan(&manifests, &mut plan);
            return Ok(plan);
        };
        let compared = async {
            let client = self.client(cx, &access).await.with_context(|| format!("cannot reach {}", describe(&access)))?;
            self.compare(cx, &client, manifests.clone(), &state).await
        };
        match compared.await {
            Ok(compared) => {
                plan.actions.extend(compared.actions);
                plan.notes.extend(compared.notes);
            }
            Err(e) => {
                plan.notes.push(format!("{e:#}; listed is everything deploy would apply"));
                unreachable_plan(&manifests, &mut plan);
            }
        }
        Ok(plan)
    }

    /// The plan against the live cluster: per object create / update / prune, unchanged ones
    /// counted; Secrets by name and key only.
    async fn compare(&self, cx: &Context, client: &Client, mut manifests: Manifests, state: &State) -> anyhow::Result<PhasePlan> {
        let inputs = manifests.inputs.clone();
        let (ns, prefix) = (inputs.namespace.as_str(), inputs.prefix.as_str());
        let applier = Applier::new(client.clone(), prefix);
        let mut plan = PhasePlan::default();
        // Every Secret deploy manages stays, even when planning them stopped early.
        let mut keep: BTreeSet<ObjectKey> = secret_keys(&inputs).collect();
        let mut kept_secrets = Vec::new();
        let secrets = match self.secrets(cx, client, &inputs).await {
            Ok(secrets) => Some(secrets),
            Err(e) if e.downcast_ref::<Coded>().is_some() => {
                plan.notes.push(format!("deploy will stop here: {e}"));
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(secrets) = &secrets {
            manifests.stamp(&secrets.fingerprint(&secrets::role_secret(prefix)));
            for secret in &secrets.secrets {
                let target = format!("Secret {ns}/{}", secret.name);
                match (secret.exists, secret.changed()) {
                    (false, _) => plan.actions.push(PlannedAction::new(Verb::Create, target).detail(secret.summary())),
                    (true, true) => plan.actions.push(PlannedAction::new(Verb::Update, target).detail(secret.summary())),
                    (true, false) => kept_secrets.push(secret.name.clone()),
                }
            }
        }

        let mut unchanged = 0;
        let components: Vec<Component> = manifests.all().cloned().collect();
        let mut changes = applier.diff(&components).await?;
        let mut branch_ready = false;
        if let Some(secrets) = &secrets {
            let live = applier.get(&bootstrap::branch_probe(ns, prefix)).await?;
            branch_ready = live.as_ref().is_some_and(|b| bootstrap::progress(b) == Progress::Ready);
            let spec = bootstrap::branch_spec(prefix, live.as_ref(), &secrets.role_password, &ring::rand::SystemRandom::new())?;
            let objects = vec![bootstrap::branch_object(ns, prefix, &spec), bootstrap::endpoint_object(ns, prefix)];
            changes.extend(applier.diff(&[Component { name: "bootstrap".into(), objects }]).await?);
        } else {
            plan.actions
                .push(PlannedAction::new(Verb::Create, format!("NeonBranch {ns}/{}", bootstrap::BRANCH)).detail("after the Secrets"));
        }
        for change in changes {
            keep.insert(change.key);
            match change.change {
                Change::Create => plan.actions.push(PlannedAction::new(Verb::Create, change.object)),
                Change::Update(paths) => plan.actions.push(PlannedAction::new(Verb::Update, change.object).detail(paths.join(", "))),
                Change::Unchanged => unchanged += 1,
            }
        }
        for stale in applier.prunable(&keep).await? {
            plan.actions.push(PlannedAction::new(Verb::Delete, stale).detail("prune: no longer rendered"));
        }
        let checked = state.deploy.as_ref().is_some_and(|d| d.checked_at.is_some());
        if !plan.actions.is_empty() || !branch_ready || !checked {
            plan.actions.push(PlannedAction::new(Verb::Wait, format!("NeonBranch {ns}/{} Ready", bootstrap::BRANCH)));
            let at = self
                .options
                .proxy_address
                .clone()
                .unwrap_or_else(|| format!("the load balancer of Service {ns}/{}", proxy_service(prefix)));
            plan.actions.push(PlannedAction::new(Verb::Run, "select version() through the proxy").detail(at));
        }
        plan.notes.push(format!("{unchanged} objects unchanged"));
        if !kept_secrets.is_empty() {
            plan.notes.push(format!("Secrets kept as they are: {}", kept_secrets.join(", ")));
        }
        Ok(plan)
    }

    async fn apply_inner(&self, cx: &Context) -> anyhow::Result<()> {
        let reporter = cx.reporter(PhaseName::Deploy);
        let mut manifests = self.manifests(cx)?;
        for assumption in manifests.inputs.assumptions() {
            reporter.warn(assumption);
        }
        let proxy_override = self.proxy_address()?;
        let access = self.access(&cx.state()).ok_or_else(|| anyhow!(NO_CLUSTER))?;
        reporter.info(format!("deploying to {}", describe(&access)));
        let client = self.client(cx, &access).await.with_context(|| format!("connecting to {}", describe(&access)))?;
        let inputs = manifests.inputs.clone();
        let (ns, prefix) = (inputs.namespace.as_str(), inputs.prefix.as_str());
        let mut applier = Applier::new(client.clone(), prefix);
        applier.timeout = self.timeout();

        let step = reporter.step("read Secrets");
        let secrets = self.secrets(cx, &client, &inputs).await?;
        step.finish();
        manifests.stamp(&secrets.fingerprint(&secrets::role_secret(prefix)));
        for secret in secrets.secrets.iter().filter(|s| s.changed()) {
            let verb = if secret.exists { "update" } else { "create" };
            reporter.info(format!("{verb} Secret {ns}/{}: {}", secret.name, secret.summary()));
        }
        let secret_objects = Component { name: "secrets".into(), objects: secrets.secrets.iter().map(|s| s.object(ns, prefix)).collect() };

        let mut applied = applier.apply_components(&manifests.namespace, &reporter).await?;
        applied.extend(applier.apply_components(std::slice::from_ref(&secret_objects), &reporter).await?);
        applied.extend(applier.apply_components(&manifests.before, &reporter).await?);
        let (record, bootstrapped) = self.bootstrap(cx, &applier, &access, &inputs, &secrets, &reporter).await?;
        applied.extend(bootstrapped);
        applied.extend(applier.apply_components(&manifests.after, &reporter).await?);
        let mut keep = applied.keys;
        // With them the user's Secret of an external database.
        keep.extend(secret_keys(&inputs));
        let step = reporter.step("prune what this deploy no longer renders");
        for pruned in applier.prune(&keep).await? {
            reporter.info(format!("pruned {pruned}"));
        }
        step.finish();

        let address = match proxy_override {
            Some(address) => address,
            None => self.load_balancer(&client, ns, prefix, &reporter).await?,
        };
        let connection = Connection {
            role: secrets::OWNER_ROLE.into(),
            database: secrets::DATABASE.into(),
            endpoint: bootstrap::ENDPOINT.into(),
            domain: inputs.proxy_domain.clone(),
            address,
        };
        let version = self.check(&connection, &secrets.role_password, &reporter).await?;
        reporter.info(format!("select version() through the proxy: {version}"));
        let (address, now) = (connection.address.to_string(), crate::engine::now_rfc3339());
        cx.update_state(|s| {
            s.deploy = Some(DeployRecord { proxy_address: Some(address), checked_at: Some(now), ..record });
        })?;
        self.print(&connection, &secrets.role_password, &access, ns, prefix);
        Ok(())
    }

    /// Branch and endpoint `main`; waits until the control plane reports the branch Ready.
    /// The ids are recorded as soon as the branch is applied.
    async fn bootstrap(
        &self,
        cx: &Context,
        applier: &Applier,
        access: &ClusterAccess,
        inputs: &RenderInputs,
        secrets: &SecretsPlan,
        reporter: &PhaseReporter,
    ) -> anyhow::Result<(DeployRecord, Applied)> {
        let (ns, prefix) = (inputs.namespace.as_str(), inputs.prefix.as_str());
        let step = reporter.step(format!("apply NeonBranch {ns}/{} and NeonEndpoint {ns}/{}", bootstrap::BRANCH, bootstrap::ENDPOINT));
        let live = applier.get(&bootstrap::branch_probe(ns, prefix)).await?;
        let spec = bootstrap::branch_spec(prefix, live.as_ref(), &secrets.role_password, &ring::rand::SystemRandom::new())?;
        if live.is_none() {
            reporter.info(format!("new branch {}: tenant {}, timeline {}", bootstrap::BRANCH, spec.tenant_id, spec.timeline_id));
        }
        let objects = [bootstrap::branch_object(ns, prefix, &spec), bootstrap::endpoint_object(ns, prefix)];
        let branch = applier.apply_object(&objects[0]).await?;
        crate::crash::point("deploy:branch-applied");
        let record = DeployRecord {
            cluster: access.clone(),
            namespace: ns.to_string(),
            project_id: spec.project_id.clone(),
            branch: bootstrap::BRANCH.into(),
            endpoint: bootstrap::ENDPOINT.into(),
            tenant_id: spec.tenant_id.clone(),
            timeline_id: spec.timeline_id.clone(),
            role: secrets::OWNER_ROLE.into(),
            database: secrets::DATABASE.into(),
            role_secret: secrets::role_secret(prefix),
            proxy_domain: inputs.proxy_domain.clone(),
            proxy_address: None,
            checked_at: None,
        };
        let recorded = record.clone();
        cx.update_state(|s| s.deploy = Some(recorded))?;
        applier.apply_object(&objects[1]).await?;
        step.finish();
        self.wait_ready(applier, &branch, prefix, reporter).await?;
        let mut applied = Applied::default();
        for obj in &objects {
            applied.keys.insert(ObjectKey::of(obj)?);
            applied.objects.push(format!("{} {ns}/{}", obj.types.as_ref().map(|t| t.kind.as_str()).unwrap_or_default(), obj.name_any()));
        }
        Ok((record, applied))
    }

    async fn wait_ready(&self, applier: &Applier, branch: &DynamicObject, prefix: &str, reporter: &PhaseReporter) -> anyhow::Result<()> {
        let ns = branch.namespace().unwrap_or_default();
        let name = format!("NeonBranch {ns}/{}", branch.name_any());
        let logs = format!("kubectl logs -n {ns} deployment/{}", crate::render::service_account(prefix, "control-plane").1);
        let step = reporter.step(format!("wait for {name} to be Ready (the control plane creates its tenant and timeline)"));
        let check = || async {
            let current = applier.get(branch).await?.ok_or_else(|| anyhow!("{name} disappeared while deploy waited for it"))?;
            match bootstrap::progress(&current) {
                Progress::Ready => Ok(Check::Done(())),
                Progress::Failed(message) => {
                    anyhow::bail!("{name} failed: {message}. See `{logs}`, fix the cause, and run deploy again")
                }
                Progress::Waiting(progress) => Ok(Check::Waiting(progress)),
            }
        };
        let mut said = String::new();
        let said_once = |progress: &String, _| {
            if *progress != said {
                reporter.info(format!("{name}: {progress}"));
                said.clone_from(progress);
            }
        };
        if let Waited::TimedOut(last) = wait::poll(self.timeout(), Duration::from_secs(1), check, said_once).await? {
            anyhow::bail!(
                "{name} was not Ready after {}s: {last}. Check the control plane: `{logs}`; then run deploy again",
                self.timeout().as_secs()
            );
        }
        step.finish();
        Ok(())
    }

    /// The proxy Service's load balancer address, once the cloud has made one.
    async fn load_balancer(&self, client: &Client, ns: &str, prefix: &str, reporter: &PhaseReporter) -> anyhow::Result<Address> {
        let name = proxy_service(prefix);
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        let step = reporter.step(format!("wait for the load balancer of Service {ns}/{name} (minutes on AWS)"));
        let check = || async {
            let service =
                api.get(&name).await.map_err(|source| ApplyError::Api { verb: "reading", name: format!("Service {ns}/{name}"), source })?;
            let port = service
                .spec
                .as_ref()
                .and_then(|spec| spec.ports.as_ref())
                .and_then(|ports| ports.iter().find(|p| p.port == i32::from(crate::neon::ports::PROXY_PG)).or(ports.first()))
                .and_then(|p| u16::try_from(p.port).ok())
                .unwrap_or(crate::neon::ports::PROXY_PG);
            let ingress = service.status.and_then(|s| s.load_balancer).and_then(|lb| lb.ingress).unwrap_or_default();
            let host = ingress.into_iter().find_map(|i| i.hostname.filter(|h| !h.is_empty()).or(i.ip.filter(|ip| !ip.is_empty())));
            Ok::<_, ApplyError>(host.map_or(Check::Waiting(()), |host| Check::Done(Address { host, port })))
        };
        match wait::poll(self.timeout(), Duration::from_secs(3), check, |(), _| {}).await? {
            Waited::Done(address) => {
                step.finish();
                Ok(address)
            }
            Waited::TimedOut(()) => anyhow::bail!(
                "Service {ns}/{name} has no load balancer address after {}s. See `kubectl describe service -n {ns} {name}` \
                 (on EKS the AWS Load Balancer Controller or the cloud provider makes it), or check through a port-forward: \
                 `kubectl port-forward -n {ns} service/{name} 5432` and `neonctl-aws deploy --proxy-address 127.0.0.1:5432`",
                self.timeout().as_secs()
            ),
        }
    }

    /// `select version()` through the proxy, retried until the timeout (a new load balancer
    /// takes minutes to route, and its DNS name to resolve).
    async fn check(&self, connection: &Connection, password: &Secret, reporter: &PhaseReporter) -> anyhow::Result<String> {
        let at = connection.address.to_string();
        let step = reporter.step(format!("select version() through the proxy at {at}"));
        let check = || async {
            Ok::<_, anyhow::Error>(match connection.select_version(password, Duration::from_secs(20)).await {
                Ok(version) => Check::Done(version),
                Err(e) => Check::Waiting(format!("{e:#}")),
            })
        };
        let mut attempts = 0u32;
        let retrying = |error: &String, _| {
            attempts += 1;
            let level = if attempts % 6 == 1 { Level::Info } else { Level::Debug };
            reporter.message(level, format!("attempt {attempts} through the proxy at {at} failed, retrying: {error}"));
        };
        match wait::poll(self.timeout(), Duration::from_secs(5), check, retrying).await? {
            Waited::Done(version) => {
                step.finish();
                Ok(version)
            }
            Waited::TimedOut(error) => anyhow::bail!(
                "select version() through the proxy at {at} did not succeed within {}s: {error}. Check the proxy, compute and \
                 control plane logs (`kubectl logs -n <namespace> deployment/<prefix>-proxy`), then run deploy again",
                self.timeout().as_secs()
            ),
        }
    }

    /// The result: connection strings (the password only with --show-password) and where DNS
    /// must point.
    fn print(&self, connection: &Connection, password: &Secret, access: &ClusterAccess, ns: &str, prefix: &str) {
        let shown = self.options.show_password.then_some(password);
        let kubectl = match access {
            ClusterAccess::Eks { cluster } => format!("kubectl --context {cluster}"),
            ClusterAccess::Kubeconfig { path, context } => {
                let mut command = "kubectl".to_string();
                if let Some(path) = path {
                    command.push_str(&format!(" --kubeconfig {}", path.display()));
                }
                if let Some(context) = context {
                    command.push_str(&format!(" --context {context}"));
                }
                command
            }
        };
        let password_command = format!(
            "{kubectl} get secret {} -n {ns} -o jsonpath='{{.data.{}}}' | base64 -d",
            secrets::role_secret(prefix),
            secrets::PASSWORD_KEY
        );
        let domain = &connection.domain;
        let record = if connection.address.is_ip() { "A" } else { "CNAME" };
        // (label, json key, value)
        let rows = [
            ("connection string", "connection_string", connection.url(shown)),
            ("dns", "dns", format!("{record} *.{domain} -> {}", connection.address.host)),
            ("without dns", "without_dns", connection.url_without_dns(shown)),
            ("password", "password", if shown.is_some() { "shown above (--show-password)".into() } else { password_command }),
        ];
        if self.printer.style() == Style::Json {
            let data: BTreeMap<&str, &String> = rows.iter().map(|(_, key, value)| (*key, value)).collect();
            self.printer.table("deploy", &crate::output::Table::default(), &data);
            return;
        }
        for (label, _, value) in rows {
            self.printer.result_line(&format!("{:<18} {value}", format!("{label}:")));
        }
        if let ClusterAccess::Eks { .. } = access {
            self.printer.result_line("(kubectl's context for the EKS cluster comes from `neonctl-aws kubeconfig`)");
        }
    }
}

crate::engine::phase_from_async_fns!(Deploy, PhaseName::Deploy);

/// Without a cluster: everything would be created.
fn unreachable_plan(manifests: &Manifests, plan: &mut PhasePlan) {
    let inputs = &manifests.inputs;
    let ns = &inputs.namespace;
    for secret in inputs.secrets() {
        if secret.keys.iter().any(|k| k == secrets::DATABASE_URL_KEY) && inputs.storcon_db == StorconDb::External {
            plan.notes.push(format!("Secret {ns}/{} with key database-url must exist before deploy (external database)", secret.name));
            continue;
        }
        if inputs.s3_credentials_secret().as_ref() == Some(&secret.name) {
            plan.notes.push(format!(
                "Secret {ns}/{} with keys {} must exist before deploy (S3-compatible endpoint)",
                secret.name,
                secret.keys.join(", ")
            ));
            continue;
        }
        plan.actions.push(
            PlannedAction::new(Verb::Create, format!("Secret {ns}/{}", secret.name)).detail(format!("keys {}", secret.keys.join(", "))),
        );
    }
    let owner = [secrets::USERNAME_KEY, secrets::PASSWORD_KEY, secrets::DATABASE_KEY].join(", ");
    plan.actions.push(
        PlannedAction::new(Verb::Create, format!("Secret {ns}/{}", secrets::role_secret(&inputs.prefix))).detail(format!("keys {owner}")),
    );
    for component in manifests.namespace.iter().chain(&manifests.before) {
        plan.actions.push(component_action(component));
    }
    plan.actions.push(
        PlannedAction::new(Verb::Create, format!("NeonBranch {ns}/{} and NeonEndpoint {ns}/{}", bootstrap::BRANCH, bootstrap::ENDPOINT))
            .detail(format!("a new tenant and timeline, role {}, database {}", secrets::OWNER_ROLE, secrets::DATABASE)),
    );
    plan.actions.push(PlannedAction::new(Verb::Wait, format!("NeonBranch {ns}/{} Ready", bootstrap::BRANCH)));
    for component in &manifests.after {
        plan.actions.push(component_action(component));
    }
    plan.actions.push(PlannedAction::new(Verb::Run, "select version() through the proxy"));
}

fn component_action(component: &Component) -> PlannedAction {
    let objects: Vec<String> = component
        .objects
        .iter()
        .map(|o| format!("{}/{}", o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or_default(), o.name_any()))
        .collect();
    PlannedAction::new(Verb::Create, format!("apply {}", component.name)).detail(objects.join(", "))
}

/// Every Secret deploy reads or writes: the ones the manifests read, and the owner's.
fn secret_names(inputs: &RenderInputs) -> Vec<String> {
    inputs.secrets().into_iter().map(|s| s.name).chain([secrets::role_secret(&inputs.prefix)]).collect()
}

/// [`secret_names`] as objects to keep.
fn secret_keys(inputs: &RenderInputs) -> impl Iterator<Item = ObjectKey> + '_ {
    secret_names(inputs).into_iter().map(|name| ObjectKey { kind: "Secret", namespace: Some(inputs.namespace.clone()), name })
}

fn proxy_service(prefix: &str) -> String {
    crate::render::service_account(prefix, "proxy").1
}

fn describe(access: &ClusterAccess) -> String {
    match access {
        ClusterAccess::Eks { cluster } => format!("EKS cluster {cluster}"),
        ClusterAccess::Kubeconfig { path, context } => format!(
            "the cluster of kubeconfig {}{}",
            path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "$KUBECONFIG or ~/.kube/config".into()),
            context.as_ref().map(|c| format!(", context {c}")).unwrap_or_default()
        ),
    }
}

/// The Secrets of `names` in `namespace` that exist.
async fn live_secrets(client: &Client, namespace: &str, names: &[String]) -> Result<BTreeMap<String, secrets::LiveSecret>, ApplyError> {
    let api: Api<SecretObject> = Api::namespaced(client.clone(), namespace);
    let mut out = BTreeMap::new();
    for name in names {
        let found = api.get_opt(name).await.map_err(|source| ApplyError::Api {
            verb: "reading",
            name: format!("Secret {namespace}/{name}"),
            source,
        })?;
        if let Some(secret) = found {
            let data = secret.data.unwrap_or_default().into_iter().map(|(key, value)| (key, value.0));
            out.insert(name.clone(), secrets::LiveSecret::new(data, secret.metadata.annotations.unwrap_or_default()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_named_after_their_files() {
        assert_eq!(component_name("10-storage-broker.yaml"), "storage-broker");
        assert_eq!(component_name("00-namespace.yaml"), "namespace");
    }
}
