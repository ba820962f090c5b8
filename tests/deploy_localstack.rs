//! `wheelhouse-deploy` end to end against LocalStack running as a host process: preview, up,
//! outputs, credentials, a changed setting, refresh and destroy, through the real binary.
//!
//! LocalStack really creates some of the stack's resource types and only pretends to create
//! others; the assertions here are on what it really creates (see the README).

use crate::common;
use crate::localstack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::text;
use localstack::LocalStack;

struct Deploy<'a> {
    localstack: &'a LocalStack,
    config: PathBuf,
}

impl Deploy<'_> {
    fn command(&self, args: &[&str]) -> Command {
        localstack::deploy_command(
            Path::new(env!("CARGO_BIN_EXE_wheelhouse-deploy")),
            "wheelhouse-e2e",
            &self.localstack.endpoint,
            &self.config,
            args,
        )
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "wheelhouse-deploy {args:?} failed\n{}\nLocalStack log tail:\n{}",
            text(&output),
            tail(&self.localstack.log(), 60)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn preview_up_change_refresh_destroy() {
    let localstack = LocalStack::start();
    let network = localstack.create_network();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wheelhouse.e2e.toml");
    // No vpc_id or vpc_cidr: both are looked up from the subnets through EC2.
    // Protected as production stacks are by default, so that `up` and `destroy` handle it.
    std::fs::write(&config, network.settings() + "protection = true\n").unwrap();
    let deploy = Deploy {
        localstack: &localstack,
        config,
    };

    // Settings are checked before any AWS call.
    let bad = deploy.run(&["preview", "--set", "workers=99"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("workers = 99: must be 1-16"));

    // The account and network, read-only, before any change set.
    let check = deploy.ok(&["check"]);
    assert!(check.contains("ready for `up`"), "{check}");
    // A load balancer in the private subnets could never be reached: refused, naming them.
    let private_lb = format!("lb_subnets={:?}", network.asg_subnets);
    let refused = deploy.run(&["preview", "--set", &private_lb]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for subnet in &network.asg_subnets {
        assert!(
            stderr.contains(&format!(
                "lb_subnets: {subnet} has no route to an internet gateway"
            )),
            "{stderr}"
        );
    }
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    // A zone name that is not the zone's.
    let wrong_zone = deploy.run(&["check", "--set", "hosted_zone_name=\"other.example\""]);
    assert_eq!(wrong_zone.status.code(), Some(2), "{}", text(&wrong_zone));
    let stderr = String::from_utf8_lossy(&wrong_zone.stderr);
    assert!(
        stderr.contains(&format!(
            "hosted_zone_name: \"other.example\", but hosted zone {} is \"wheelhouse-test.example\"",
            network.hosted_zone_id
        )),
        "{stderr}"
    );

    let sizing = deploy.ok(&["sizing"]);
    assert!(
        sizing.contains("tasks per instance          3 (limited by memory and cpu)"),
        "{sizing}"
    );

    let preview = console::strip_ansi_codes(&deploy.ok(&["preview"])).into_owned();
    // A fresh account has never used ECS: the role its cluster needs is created by `up`,
    // outside the stack.
    let (role, preview) = preview.split_once('\n').unwrap();
    assert!(
        role.starts_with("+ IAM role AWSServiceRoleForECS (outside the stack)"),
        "{role}"
    );
    assert!(
        preview.starts_with("Stack wheelhouse-e2e (new): "),
        "{preview}"
    );
    for resource in [
        "+ LoadBalancer",
        "+ FileSystem",
        "+ TaskDefinition",
        "+ CredentialsSecret",
    ] {
        assert!(
            preview.contains(resource),
            "{resource} missing from:\n{preview}"
        );
    }
    // A preview leaves nothing behind.
    let gone = deploy.run(&["outputs"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("does not exist"),
        "{}",
        text(&gone)
    );

    let up = console::strip_ansi_codes(&deploy.ok(&["up", "--yes"])).into_owned();
    assert!(
        up.contains("Created the IAM role AWSServiceRoleForECS;"),
        "{up}"
    );
    assert!(
        up.find("AWSServiceRoleForECS").unwrap() < up.find("Stack wheelhouse-e2e").unwrap(),
        "the role comes before the change set: {up}"
    );
    assert!(up.contains("Stack wheelhouse-e2e: CREATE_COMPLETE"), "{up}");
    // A production stack is protected once it exists.
    assert!(
        up.contains("Termination protection of stack wheelhouse-e2e: on."),
        "{up}"
    );
    assert!(up.contains("Outputs:"), "{up}");

    let outputs: serde_json::Value =
        serde_json::from_str(&deploy.ok(&["outputs", "--json"])).unwrap();
    let secret_arn = outputs["CredentialsSecretArn"].as_str().unwrap().to_owned();
    assert!(
        secret_arn.starts_with("arn:aws:secretsmanager:us-east-1:"),
        "{outputs}"
    );
    assert_eq!(outputs["SizingTasksPerInstance"], "3");

    // The generated credentials, read from Secrets Manager through the output ARN, two ways.
    let secret = localstack.secret_value(&secret_arn);
    assert_eq!(secret["username"], "wheelhouse");
    let password = secret["password"].as_str().unwrap();
    assert_eq!(password.len(), 32);
    let credentials: serde_json::Value =
        serde_json::from_str(&deploy.ok(&["credentials", "--json"])).unwrap();
    assert_eq!(credentials["password"], password);
    assert!(!serde_json::to_string(&outputs).unwrap().contains(password));

    // What LocalStack really creates: the security groups, the log group, the alarms and
    // their topic.
    let created: serde_json::Value = serde_json::from_str(&localstack.python(&format!(
        r#"
import boto3, json, os
kw = dict(endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1")
ec2 = boto3.client("ec2", **kw)
groups = ec2.describe_security_groups(Filters=[{{"Name": "vpc-id", "Values": ["{vpc}"]}}])["SecurityGroups"]
logs = boto3.client("logs", **kw).describe_log_groups()["logGroups"]
alarms = boto3.client("cloudwatch", **kw).describe_alarms()["MetricAlarms"]
topics = boto3.client("sns", **kw).list_topics()["Topics"]
print(json.dumps({{
    "log_groups": [g["logGroupName"] for g in logs],
    "alarms": len(alarms),
    "alarm_actions": sorted({{a for alarm in alarms for a in alarm.get("AlarmActions", [])}}),
    "topics": [t["TopicArn"] for t in topics],
    "groups": sorted(g["GroupName"] for g in groups),
}}))
"#,
        vpc = network.vpc_id
    )))
    .unwrap();
    // The security groups are created in the VPC looked up from the subnets (LocalStack
    // leaves out their rules, which tests/template.rs checks in the template itself).
    let groups: Vec<&str> = created["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    for expected in [
        "FileSystemSecurityGroup",
        "InstanceSecurityGroup",
        "LoadBalancerSecurityGrou",
    ] {
        assert!(
            groups.iter().any(|g| g.contains(expected)),
            "{expected} not in {groups:?}"
        );
    }
    assert_eq!(
        created["log_groups"].as_array().unwrap().len(),
        1,
        "{created}"
    );
    assert!(created["alarms"].as_u64().unwrap() >= 5, "{created}");
    let alarm_topic = outputs["AlarmTopicArn"].as_str().unwrap();
    assert_eq!(
        created["alarm_actions"],
        serde_json::json!([alarm_topic]),
        "{created}"
    );

    // Change a setting: the task definition is replaced, nothing else is touched.
    let change = ["--set", "container_memory=1024"];
    let preview =
        console::strip_ansi_codes(&deploy.ok(&["preview", change[0], change[1]])).into_owned();
    assert!(
        preview.starts_with("Stack wheelhouse-e2e (update): "),
        "{preview}"
    );
    assert!(preview.contains("~ TaskDefinition"), "{preview}");
    assert!(
        !preview.contains("+ ") && !preview.contains("- "),
        "{preview}"
    );
    let up =
        console::strip_ansi_codes(&deploy.ok(&["up", "--yes", change[0], change[1]])).into_owned();
    assert!(up.contains("UPDATE_COMPLETE"), "{up}");
    // Already protected: left as it is.
    assert!(!up.contains("Termination protection"), "{up}");
    let outputs: serde_json::Value =
        serde_json::from_str(&deploy.ok(&["outputs", "--json", change[0], change[1]])).unwrap();
    assert_eq!(outputs["SizingWorkers"], "8", "{outputs}");
    let again = deploy.ok(&["up", "--yes", change[0], change[1]]);
    assert!(again.contains("no changes"), "{again}");

    // LocalStack does not emulate drift detection (it answers 501); what is checked here is
    // that the refusal reaches the user as AWS's code and message, not a debug dump. The drift
    // report itself is tested against wiremock (tests/deploy_aws.rs).
    let refresh = deploy.run(&["refresh"]);
    assert_eq!(refresh.status.code(), Some(1), "{}", text(&refresh));
    let stderr = String::from_utf8_lossy(&refresh.stderr);
    assert!(
        stderr.starts_with("wheelhouse-deploy: error: DetectStackDrift failed: InternalFailure: "),
        "{stderr}"
    );

    // Protection lowered through the settings: `up` turns the stack's off. (`destroy` on a
    // protected stack also turns off the load balancer's, through ELBv2, which LocalStack
    // does not emulate: that path is tested against wiremock in `tests/deploy_aws.rs`.)
    let lowered = deploy.ok(&[
        "up",
        "--yes",
        change[0],
        change[1],
        "--set",
        "protection=false",
    ]);
    assert!(
        lowered.contains("Termination protection of stack wheelhouse-e2e: off."),
        "{lowered}"
    );
    let destroy = deploy.ok(&["destroy", "--yes"]);
    assert!(!destroy.contains("Turned off"), "{destroy}");
    assert!(
        destroy.contains("Stack wheelhouse-e2e destroyed."),
        "{destroy}"
    );
    let gone = deploy.run(&["outputs"]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("does not exist"),
        "{}",
        text(&gone)
    );
    let again = deploy.ok(&["destroy", "--yes"]);
    assert!(again.contains("nothing to destroy"), "{again}");
}
