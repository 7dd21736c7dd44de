//! A moto server per test (AWS stand-in on 127.0.0.1), the environment that points the binary at
//! it, and an independent census of everything tagged with a prefix, made with the SDK directly.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::support::Workdir;

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "testing";
/// Distinctive, so that a leak into the state file or the logs is easy to find.
pub const SECRET_KEY: &str = "SECRETtest1234567890";
pub const CLUSTER_TAG: &str = "neonctl-aws/cluster";
pub const COMPONENT_TAG: &str = "neonctl-aws/component";

pub struct Moto {
    child: Child,
    pub port: u16,
    runtime: tokio::runtime::Runtime,
}

impl Moto {
    pub fn start() -> Self {
        let program = std::env::var("NEONCTL_TEST_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} (pip install 'moto[server]', or set NEONCTL_TEST_MOTO_SERVER): {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut moto = Self { child, port, runtime };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("{program} exited at start: {status}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && moto.answers() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{program} did not answer on port {port} within 60s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn answers(&self) -> bool {
        self.block_on(async {
            let sts = aws_sdk_sts::Client::new(&self.sdk());
            sts.get_caller_identity().send().await.is_ok()
        })
    }

    /// Forgets every resource. moto gives every EKS cluster the same OIDC issuer, so two
    /// clusters cannot live side by side in one server.
    pub fn reset(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect to moto");
        let request = format!("POST /moto-api/reset HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        std::io::Write::write_all(&mut stream, request.as_bytes()).expect("reset request");
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).expect("reset response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    pub fn sdk(&self) -> SdkConfig {
        self.sdk_with(aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
    }

    pub fn sdk_with(&self, credentials: aws_credential_types::Credentials) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(credentials))
            .build()
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&self.sdk()).force_path_style(true).build())
    }

    /// The binary, pointed at this server, with `aws.emulator: true` in `./neonctl-aws.yaml`.
    pub fn cmd(&self, wd: &Workdir, args: &[&str]) -> Command {
        let config = wd.path().join("neonctl-aws.yaml");
        if !config.exists() {
            std::fs::write(&config, "aws:\n  emulator: true\n").expect("writing the config");
        }
        let mut cmd = wd.cmd(args);
        cmd.env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", REGION);
        cmd
    }

    pub fn run(&self, wd: &Workdir, args: &[&str]) -> Output {
        self.cmd(wd, args).output().expect("run neonctl-aws")
    }

    /// Every resource tagged (or, for IAM roles, named) with `prefix`, as `kind/component` → ids.
    pub fn census(&self, prefix: &str) -> BTreeMap<String, Vec<String>> {
        self.block_on(census(&self.sdk(), self.s3(), prefix))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn census(sdk: &SdkConfig, s3: aws_sdk_s3::Client, prefix: &str) -> BTreeMap<String, Vec<String>> {
    use aws_sdk_ec2::types::Tag;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |kind: &str, component: &str, id: &str| out.entry(format!("{kind}/{component}")).or_default().push(id.to_string());
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let filter = || aws_sdk_ec2::types::Filter::builder().name(format!("tag:{CLUSTER_TAG}")).values(prefix).build();
    let component = |tags: &[Tag]| tags.iter().find(|t| t.key() == Some(COMPONENT_TAG)).and_then(|t| t.value()).unwrap_or("?").to_string();
    for v in ec2.describe_vpcs().filters(filter()).send().await.unwrap().vpcs() {
        add("vpc", &component(v.tags()), v.vpc_id().unwrap());
    }
    for s in ec2.describe_subnets().filters(filter()).send().await.unwrap().subnets() {
        add("subnet", &component(s.tags()), s.subnet_id().unwrap());
    }
    for g in ec2.describe_internet_gateways().filters(filter()).send().await.unwrap().internet_gateways() {
        add("igw", &component(g.tags()), g.internet_gateway_id().unwrap());
    }
    for a in ec2.describe_addresses().filters(filter()).send().await.unwrap().addresses() {
        add("eip", &component(a.tags()), a.allocation_id().unwrap());
    }
    for n in ec2.describe_nat_gateways().filter(filter()).send().await.unwrap().nat_gateways() {
        if n.state() != Some(&aws_sdk_ec2::types::NatGatewayState::Deleted) {
            add("nat", &component(n.tags()), n.nat_gateway_id().unwrap());
        }
    }
    for t in ec2.describe_route_tables().filters(filter()).send().await.unwrap().route_tables() {
        add("rtb", &component(t.tags()), t.route_table_id().unwrap());
    }
    for e in ec2.describe_vpc_endpoints().filters(filter()).send().await.unwrap().vpc_endpoints() {
        // Deleted endpoints stay visible for a while, as on AWS.
        if e.state().is_some_and(|s| s.as_str().eq_ignore_ascii_case("deleted")) {
            continue;
        }
        add("vpce", &component(e.tags()), e.vpc_endpoint_id().unwrap());
    }
    let iam = aws_sdk_iam::Client::new(sdk);
    for role in iam.list_roles().send().await.unwrap().roles() {
        let tags = iam.list_role_tags().role_name(role.role_name()).send().await.unwrap();
        if tags.tags().iter().any(|t| t.key() == CLUSTER_TAG && t.value() == prefix) {
            let component = tags.tags().iter().find(|t| t.key() == COMPONENT_TAG).map(|t| t.value().to_string()).unwrap_or_default();
            add("role", &component, role.role_name());
        }
    }
    for p in iam.list_open_id_connect_providers().send().await.unwrap().open_id_connect_provider_list() {
        let arn = p.arn().unwrap();
        let got = iam.get_open_id_connect_provider().open_id_connect_provider_arn(arn).send().await.unwrap();
        if got.tags().iter().any(|t| t.key() == CLUSTER_TAG && t.value() == prefix) {
            add("oidc", "oidc-provider", arn);
        }
    }
    let eks = aws_sdk_eks::Client::new(sdk);
    for name in eks.list_clusters().send().await.unwrap().clusters() {
        let cluster = eks.describe_cluster().name(name).send().await.unwrap();
        let tags = cluster.cluster().and_then(|c| c.tags()).cloned().unwrap_or_default();
        if tags.get(CLUSTER_TAG).map(String::as_str) == Some(prefix) {
            add("eks", "cluster", name);
            for group in eks.list_nodegroups().cluster_name(name).send().await.unwrap().nodegroups() {
                add("eks", "nodegroup", group);
            }
        }
    }
    for bucket in s3.list_buckets().send().await.unwrap().buckets() {
        let name = bucket.name().unwrap();
        let Ok(tagging) = s3.get_bucket_tagging().bucket(name).send().await else { continue };
        if tagging.tag_set().iter().any(|t| t.key() == CLUSTER_TAG && t.value() == prefix) {
            add("s3", "bucket", name);
        }
    }
    let ecr = aws_sdk_ecr::Client::new(sdk);
    for repo in ecr.describe_repositories().send().await.unwrap().repositories() {
        let tags = ecr.list_tags_for_resource().resource_arn(repo.repository_arn().unwrap()).send().await.unwrap();
        if tags.tags().iter().any(|t| t.key() == CLUSTER_TAG && t.value() == prefix) {
            let component = tags.tags().iter().find(|t| t.key() == COMPONENT_TAG).map(|t| t.value().to_string()).unwrap_or_default();
            add("ecr", &component, repo.repository_name().unwrap());
        }
    }
    out
}

/// What a full `infra` of the default config (3 zones, one NAT gateway) leaves, per component.
pub fn expected_census() -> Vec<String> {
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let mut keys: Vec<String> = [
        "vpc/vpc",
        "igw/igw",
        "eip/eip-nat-us-east-1a",
        "nat/nat-us-east-1a",
        "rtb/rtb-public",
        "vpce/vpce-s3",
        "oidc/oidc-provider",
        "eks/cluster",
        "eks/nodegroup",
        "s3/bucket",
    ]
    .map(String::from)
    .to_vec();
    for zone in zones {
        keys.push(format!("subnet/subnet-public-{zone}"));
        keys.push(format!("subnet/subnet-private-{zone}"));
        keys.push(format!("rtb/rtb-private-{zone}"));
    }
    for role in ["cluster", "node", "pageserver", "safekeeper", "ebs-csi", "vpc-cni"] {
        keys.push(format!("role/role-{role}"));
    }
    for image in neonctl_aws::IMAGES {
        keys.push(format!("ecr/ecr-{image}"));
    }
    keys.sort();
    keys
}

/// Asserts that every expected resource exists exactly once and nothing else is tagged.
pub fn assert_complete(census: &BTreeMap<String, Vec<String>>) {
    let keys: Vec<String> = census.keys().cloned().collect();
    assert_eq!(keys, expected_census(), "{census:#?}");
    for (key, ids) in census {
        assert_eq!(ids.len(), 1, "{key} exists {} times: {ids:?}", ids.len());
    }
}

/// The per-service call counts of a `--output json` run (its last line).
pub fn call_counts(output: &Output) -> serde_json::Value {
    let events = crate::support::json_events(output);
    let summary = events.last().expect("a summary event");
    assert_eq!(summary["event"], "summary");
    summary["calls"].clone()
}

pub fn mutating_calls(output: &Output) -> u64 {
    call_counts(output).as_object().unwrap().values().map(|c| c["mutating"].as_u64().unwrap()).sum()
}

/// The mutating operations of a `--output json` run: `"ec2 ModifySubnetAttribute" → 1`.
pub fn mutations(output: &Output) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (service, counts) in call_counts(output).as_object().unwrap() {
        for (operation, n) in counts["mutations"].as_object().into_iter().flatten() {
            out.insert(format!("{service} {operation}"), n.as_u64().unwrap());
        }
    }
    out
}
