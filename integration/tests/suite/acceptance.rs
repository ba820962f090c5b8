//! The release checklist, against a real AWS account: `WHEELHOUSE_INTEGRATION=aws`.
//!
//! `check` → `up` → `verify` → one host rebooted → `verify` again (the packages volume is
//! mounted before Docker and the ECS agent start, and the replica comes back healthy) →
//! `destroy` → the EFS file system is still there. It creates billable resources and takes
//! 20–40 minutes; it never runs unless asked for.
//!
//! - `WHEELHOUSE_AWS_SETTINGS`: the settings file (required);
//! - `WHEELHOUSE_AWS_STACK`: the stack (default `wheelhouse-acceptance`);
//! - credentials and region the usual way (`AWS_PROFILE`, `AWS_REGION`, ...).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::replica::workspace_binary;
use crate::common::text;

/// How long a rebooted host may take to serve again: boot, mount, agent, task, health checks.
const BACK_AFTER_REBOOT: Duration = Duration::from_secs(15 * 60);
const VERIFY_EVERY: Duration = Duration::from_secs(30);

pub(crate) struct Acceptance {
    settings: PathBuf,
    stack: String,
    outputs: serde_json::Value,
    runtime: tokio::runtime::Runtime,
}

pub(crate) type Step = fn(&mut Acceptance);

pub(crate) const STEPS: &[(&str, Step)] = &[
    ("check_passes_before_anything_exists", check),
    ("up_creates_the_stack", up),
    ("verify_proves_it_serves", verify),
    ("a_rebooted_host_serves_again", reboot_one_host),
    ("destroy_keeps_the_file_system", destroy),
];

impl Acceptance {
    pub(crate) fn from_env() -> Result<Self, String> {
        let settings = std::env::var_os("WHEELHOUSE_AWS_SETTINGS")
            .map(PathBuf::from)
            .ok_or("WHEELHOUSE_INTEGRATION=aws needs WHEELHOUSE_AWS_SETTINGS, the settings file of the stack to create")?;
        if !settings.is_file() {
            return Err(format!(
                "WHEELHOUSE_AWS_SETTINGS={}: no such file",
                settings.display()
            ));
        }
        Ok(Self {
            settings,
            stack: std::env::var("WHEELHOUSE_AWS_STACK")
                .unwrap_or_else(|_| "wheelhouse-acceptance".to_owned()),
            outputs: serde_json::Value::Null,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
        })
    }

    fn deploy(&self, args: &[&str]) -> Output {
        let output = Command::new(workspace_binary("wheelhouse-deploy"))
            .args(["--stack", &self.stack])
            .arg("--config")
            .arg(&self.settings)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run wheelhouse-deploy");
        eprintln!("wheelhouse-deploy {args:?}:\n{}", text(&output));
        output
    }

    fn deploy_ok(&self, args: &[&str]) -> String {
        let output = self.deploy(args);
        assert!(output.status.success(), "wheelhouse-deploy {args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn output(&self, key: &str) -> String {
        self.outputs[key]
            .as_str()
            .unwrap_or_else(|| panic!("no output {key} in {}", self.outputs))
            .to_owned()
    }

    fn aws(&self) -> aws_config::SdkConfig {
        self.runtime.block_on(aws_config::load_defaults(
            aws_config::BehaviorVersion::latest(),
        ))
    }
}

fn check(a: &mut Acceptance) {
    a.deploy_ok(&["check"]);
}

fn up(a: &mut Acceptance) {
    a.deploy_ok(&["up", "--yes"]);
    a.outputs = serde_json::from_str(&a.deploy_ok(&["outputs", "--json"])).expect("outputs");
}

fn verify(a: &mut Acceptance) {
    a.deploy_ok(&["verify"]);
}

fn reboot_one_host(a: &mut Acceptance) {
    let group = a.output("AutoScalingGroupName");
    let ec2 = aws_sdk_ec2::Client::new(&a.aws());
    let instances = a
        .runtime
        .block_on(
            ec2.describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag:aws:autoscaling:groupName")
                        .values(&group)
                        .build(),
                )
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("instance-state-name")
                        .values("running")
                        .build(),
                )
                .send(),
        )
        .expect("DescribeInstances");
    let host = instances
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| i.instance_id())
        .unwrap_or_else(|| panic!("no running host in {group}"))
        .to_owned();
    eprintln!("rebooting {host} of {group}");
    a.runtime
        .block_on(ec2.reboot_instances().instance_ids(&host).send())
        .expect("RebootInstances");
    // The host is down (or about to be) for a while: give the load balancer time to notice.
    std::thread::sleep(Duration::from_secs(90));
    let deadline = Instant::now() + BACK_AFTER_REBOOT;
    loop {
        if a.deploy(&["verify"]).status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the appliance did not verify within {BACK_AFTER_REBOOT:?} of rebooting {host}"
        );
        std::thread::sleep(VERIFY_EVERY);
    }
}

/// Runs whatever happened before: a failed `up` must not leave a billable stack behind.
fn destroy(a: &mut Acceptance) {
    let file_system = a.outputs["FileSystemId"].as_str().map(str::to_owned);
    a.deploy_ok(&["destroy", "--yes"]);
    let Some(file_system) = file_system else {
        panic!("destroyed, but the stack never had outputs: was it created?");
    };
    let efs = aws_sdk_efs::Client::new(&a.aws());
    let found = a
        .runtime
        .block_on(
            efs.describe_file_systems()
                .file_system_id(&file_system)
                .send(),
        )
        .unwrap_or_else(|err| panic!("the file system {file_system} is gone after destroy: {err}"));
    assert_eq!(found.file_systems().len(), 1, "{found:?}");
    eprintln!(
        "{file_system} is kept, as destroy promises; delete it when done: aws efs delete-file-system --file-system-id {file_system} (after its mount targets)"
    );
}
