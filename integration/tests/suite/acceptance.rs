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
    /// Loaded once: the reboot step asks ELBv2 every few seconds.
    aws: aws_config::SdkConfig,
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let aws = runtime.block_on(aws_config::load_defaults(
            aws_config::BehaviorVersion::latest(),
        ));
        Ok(Self {
            settings,
            stack: std::env::var("WHEELHOUSE_AWS_STACK")
                .unwrap_or_else(|_| "wheelhouse-acceptance".to_owned()),
            outputs: serde_json::Value::Null,
            runtime,
            aws,
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

    /// Whether `instance` is a healthy target of the stack's load balancer (the targets are
    /// instances: ECS on EC2 in bridge mode).
    fn host_is_healthy_target(&self, instance: &str) -> bool {
        use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&self.aws);
        let groups = self
            .runtime
            .block_on(
                elb.describe_target_groups()
                    .load_balancer_arn(self.output("LoadBalancerArn"))
                    .send(),
            )
            .expect("DescribeTargetGroups");
        groups.target_groups().iter().any(|group| {
            let health = self
                .runtime
                .block_on(
                    elb.describe_target_health()
                        .set_target_group_arn(group.target_group_arn().map(str::to_owned))
                        .send(),
                )
                .expect("DescribeTargetHealth");
            health.target_health_descriptions().iter().any(|d| {
                d.target().and_then(|t| t.id()) == Some(instance)
                    && d.target_health().and_then(|h| h.state())
                        == Some(&TargetHealthStateEnum::Healthy)
            })
        })
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
    let ec2 = aws_sdk_ec2::Client::new(&a.aws);
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
    // Proof that the reboot happened: the load balancer stops calling the host healthy.
    let deadline = Instant::now() + BACK_AFTER_REBOOT;
    while a.host_is_healthy_target(&host) {
        assert!(
            Instant::now() < deadline,
            "{host} stayed a healthy target after its reboot"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    // Then the rebooted host itself serves again (not only tasks placed elsewhere), and the
    // whole appliance verifies.
    loop {
        if a.host_is_healthy_target(&host) && a.deploy(&["verify"]).status.success() {
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
    if a.outputs.is_null() {
        // `up` failed after the stack was made, or never reached `outputs`: ask again.
        let output = a.deploy(&["outputs", "--json"]);
        a.outputs = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    }
    let file_system = a.outputs["FileSystemId"].as_str().map(str::to_owned);
    a.deploy_ok(&["destroy", "--yes"]);
    let Some(file_system) = file_system else {
        panic!("destroyed, but the stack never had outputs: was it created?");
    };
    let efs = aws_sdk_efs::Client::new(&a.aws);
    let found = a
        .runtime
        .block_on(
            efs.describe_file_systems()
                .file_system_id(&file_system)
                .send(),
        )
        .unwrap_or_else(|err| panic!("the file system {file_system} is gone after destroy: {err}"));
    assert_eq!(found.file_systems().len(), 1, "{found:?}");
    // Kept, as destroy promises; a throw-away stack's file system goes now (its mount targets
    // went with the stack). The backup vault is kept too, with any recovery points in it.
    match a
        .runtime
        .block_on(efs.delete_file_system().file_system_id(&file_system).send())
    {
        Ok(_) => eprintln!("{file_system} was kept by destroy, and is now deleted"),
        Err(err) => eprintln!(
            "{file_system} was kept by destroy; deleting it failed ({err}): delete it by hand"
        ),
    }
    eprintln!("the stack's backup vault is retained too: delete its recovery points and then the vault if this stack was a throw-away");
}
