//! LocalStack as a plain host process on a loopback port, for tests that drive AWS APIs
//! (CloudFormation, EC2, Route 53, Secrets Manager, ...) without an AWS account or Docker.
//!
//! The LocalStack runtime and boto3 live in a venv under `CARGO_TARGET_TMPDIR`, made once and
//! reused while its lock file (`tests/python/localstack.txt`) stays the same. Each [`LocalStack`] is its own process with its
//! own port and state directory, so tests may run several side by side.
// Each test binary that includes this module uses a different subset of it, and the items are
// `pub` for those binaries, not for a library API.
#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tempfile::TempDir;

use crate::common::free_port;

/// LocalStack and boto3, locked with hashes (see `tests/python/localstack.in` for the pins).
const LOCK: &str = include_str!("../python/localstack.txt");

/// How long a fresh LocalStack may take to answer its health check (2-4 s is usual).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A loopback address where nothing listens: LocalStack's analytics and license calls go there
/// and fail at once instead of leaving the machine.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

/// The venv with LocalStack and boto3, created on first use.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = crate::common::venv::locked("localstack-venv", LOCK);
        let imports = Command::new(venv.join("bin/python"))
            .args(["-c", "import boto3, localstack.runtime.main"])
            .stdin(Stdio::null())
            .output()
            .expect("run the venv's python");
        if !imports.status.success() {
            crate::common::venv::discard("localstack-venv");
            panic!(
                "the LocalStack venv does not import (it is made again next time):\n{}",
                String::from_utf8_lossy(&imports.stderr)
            );
        }
        venv
    })
}

/// A running LocalStack. Dropping it kills the process group and removes its state.
pub struct LocalStack {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`, the endpoint for every service.
    pub endpoint: String,
    dir: TempDir,
}

impl LocalStack {
    /// Starts LocalStack on a free loopback port and waits until its health check answers.
    pub fn start() -> LocalStack {
        let python = venv().join("bin/python");
        let dir = tempfile::Builder::new()
            .prefix("localstack-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let log = File::create(dir.path().join("localstack.log")).unwrap();
        let child = Command::new(python)
            .args(["-m", "localstack.runtime.main"])
            .current_dir(dir.path())
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            // URLs LocalStack hands out (queue URLs, ...) point back at this instance.
            .env("LOCALSTACK_HOST", format!("127.0.0.1:{port}"))
            // No DNS server on port 53, no event bus, no certificate download, nothing kept.
            .env("DNS_ADDRESS", "0")
            .env("DISABLE_EVENTS", "1")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("PERSISTENCE", "0")
            .env("ANALYTICS_API", DEAD_ENDPOINT)
            .env("API_ENDPOINT", DEAD_ENDPOINT)
            .env("LOCALSTACK_VOLUME_DIR", dir.path().join("volume"))
            // LocalStack takes itself for its own container when /.dockerenv exists (as on CI
            // runners that are containers) and then writes to /var/lib/localstack and
            // /tmp/localstack, which it also clears on start and stop. In host mode every
            // directory is under FILESYSTEM_ROOT, so instances cannot step on each other.
            .env("OVERRIDE_IN_DOCKER", "0")
            .env("FILESYSTEM_ROOT", dir.path().join("fs"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group, so Drop can kill whatever it spawns along with it.
            .process_group(0)
            .spawn()
            .expect("cannot start LocalStack");
        let mut localstack = LocalStack {
            child,
            port,
            endpoint,
            dir,
        };
        localstack.wait_until_healthy();
        localstack
    }

    fn wait_until_healthy(&mut self) {
        let health = format!("{}/_localstack/health", self.endpoint);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "LocalStack exited during start-up ({status})\n{}",
                    self.log()
                );
            }
            if health_ok(&health) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "LocalStack did not answer {health} within {START_TIMEOUT:?}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// LocalStack's output so far, for failure messages.
    pub fn log(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(self.dir.path().join("localstack.log")) {
            let _ = file.read_to_end(&mut bytes);
        }
        format!("--- LocalStack log\n{}", String::from_utf8_lossy(&bytes))
    }

    /// boto3 against this instance.
    pub fn aws(&self) -> Aws {
        Aws(self.endpoint.clone())
    }

    pub fn python(&self, script: &str) -> String {
        self.aws().python(script)
    }

    pub fn create_network(&self) -> NetworkFixture {
        self.aws().create_network()
    }

    pub fn secret_value(&self, arn: &str) -> serde_json::Value {
        self.aws().secret_value(arn)
    }
}

/// An AWS endpoint (LocalStack's, as a process or in a container) driven through boto3 from
/// the venv.
pub struct Aws(pub String);

impl Aws {
    /// Runs a Python snippet with the venv's python (boto3 importable). The environment has
    /// test credentials, region us-east-1, `ENDPOINT` (and `AWS_ENDPOINT_URL`, which boto3
    /// honours) set to this instance. Panics with the output if the script fails; returns
    /// its stdout.
    pub fn python(&self, script: &str) -> String {
        let output = Command::new(venv().join("bin/python"))
            .args(["-c", script])
            .env("ENDPOINT", &self.0)
            .env("AWS_ENDPOINT_URL", &self.0)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            // A developer's own AWS settings must not leak in.
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_PROFILE")
            .env_remove("AWS_REGION")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run the venv's python");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "python script failed ({})\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
        );
        stdout
    }

    /// Creates the network a deployment goes into, as the preflight wants it: VPC
    /// 10.30.0.0/16 with DNS support and hostnames, a private and a public subnet in each of
    /// us-east-1a and us-east-1b (the public ones routed to an internet gateway, the private
    /// ones to a NAT gateway), and a public hosted zone `wheelhouse-test.example`.
    pub fn create_network(&self) -> NetworkFixture {
        let stdout = self.python(
            r#"
import json, os, uuid, boto3
ec2 = boto3.client("ec2", endpoint_url=os.environ["ENDPOINT"])
cidr = "10.30.0.0/16"
vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
public_routes = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
ec2.create_route(RouteTableId=public_routes, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
private, public = [], []
for i, az in enumerate(["us-east-1a", "us-east-1b"]):
    private.append(ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.30.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"])
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.30.{100 + i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    ec2.associate_route_table(RouteTableId=public_routes, SubnetId=subnet)
    public.append(subnet)
ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
nat = ec2.create_nat_gateway(SubnetId=public[0], AllocationId=eip)["NatGateway"]["NatGatewayId"]
private_routes = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
ec2.create_route(RouteTableId=private_routes, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
for subnet in private:
    ec2.associate_route_table(RouteTableId=private_routes, SubnetId=subnet)
route53 = boto3.client("route53", endpoint_url=os.environ["ENDPOINT"])
zone = route53.create_hosted_zone(Name="wheelhouse-test.example", CallerReference=str(uuid.uuid4()))["HostedZone"]
print(json.dumps({
    "vpc_id": vpc,
    "vpc_cidr": cidr,
    "asg_subnets": private,
    "lb_subnets": public,
    "hosted_zone_id": zone["Id"].rsplit("/", 1)[-1],
    "hosted_zone_name": zone["Name"].rstrip("."),
}))
"#,
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|err| panic!("unexpected network fixture output {stdout:?}: {err}"))
    }

    /// The SecretString of a Secrets Manager secret, parsed as JSON.
    pub fn secret_value(&self, arn: &str) -> serde_json::Value {
        let arn = serde_json::to_string(arn).unwrap();
        let stdout = self.python(&format!(
            r#"
import os, boto3
secrets = boto3.client("secretsmanager", endpoint_url=os.environ["ENDPOINT"])
print(secrets.get_secret_value(SecretId={arn})["SecretString"])
"#
        ));
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|err| panic!("secret {arn} is not JSON ({err}): {stdout:?}"))
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        // SAFETY: plain syscall; the child leads its own process group (process_group(0)), so
        // its pid is the group id and nothing outside that group is signalled.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The ids [`LocalStack::create_network`] made.
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkFixture {
    pub vpc_id: String,
    pub vpc_cidr: String,
    /// The private subnets, one per AZ.
    pub asg_subnets: Vec<String>,
    /// The public subnets, one per AZ.
    pub lb_subnets: Vec<String>,
    /// Without the `/hostedzone/` prefix, as CloudFormation takes it.
    pub hosted_zone_id: String,
    /// Without the trailing dot.
    pub hosted_zone_name: String,
}

impl NetworkFixture {
    /// A `wheelhouse.<stack>.toml` for a deployment into this network. The image is in a
    /// registry outside ECR: LocalStack does not emulate ECR, and the preflight looks only
    /// ECR images up.
    pub fn settings(&self) -> String {
        format!(
            r#"instance_type = "t3.small"
asg_subnets = {asg:?}
lb_subnets = {lb:?}
dns_names = ["pypi"]
hosted_zone_id = "{zone}"
hosted_zone_name = "{zone_name}"
environment = "e2e"
service_name = "wheelhouse"
alarm_emails = ["ops@example.com"]
image_repository = "registry.example/wheelhouse"
image_tag = "0.1.0"
"#,
            asg = self.asg_subnets,
            lb = self.lb_subnets,
            zone = self.hosted_zone_id,
            zone_name = self.hosted_zone_name,
        )
    }
}

/// `wheelhouse-deploy` (at `binary`) pointed at a LocalStack `endpoint`, with LocalStack's test
/// credentials and nothing of the caller's AWS settings; `args` follow the global options.
pub fn deploy_command(
    binary: &Path,
    stack: &str,
    endpoint: &str,
    config: &Path,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(["--stack", stack, "--region", "us-east-1"])
        .args(["--endpoint-url", endpoint])
        .arg("--config")
        .arg(config)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("WHEELHOUSE_STACK")
        .stdin(Stdio::null());
    cmd
}

/// True once the health endpoint answers 200. The blocking client runs on a thread of its own:
/// reqwest's blocking client panics when used on a thread that drives a tokio runtime, which
/// `#[tokio::test]` functions do.
fn health_ok(url: &str) -> bool {
    let url = url.to_owned();
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()
            .and_then(|client| client.get(&url).send().ok())
            .is_some_and(|response| response.status() == reqwest::StatusCode::OK)
    })
    .join()
    .unwrap_or(false)
}
