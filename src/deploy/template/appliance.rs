//! The wheelhouse appliance as one stack, in an existing VPC:
//!
//! - [`alb`]: the internet-facing load balancer, its certificate and DNS names;
//! - [`efs`]: the shared package directory (encrypted, kept when the stack goes);
//! - [`iam`]: the roles and the generated credentials;
//! - [`ecs`]: the hosts, the cluster, the task and the service with its scaling;
//! - [`backup`]: AWS Backup of the file system (optional);
//! - [`monitoring`]: the alarms, their topic and the dashboard (optional).
//!
//! Every branch is decided here, in Rust, from the settings: the template has no Parameters
//! and no Conditions, so what a stack holds can be read from its template alone.

mod alb;
mod backup;
mod ecs;
mod efs;
mod iam;
mod monitoring;

use serde_json::{json, Value};

use super::{sub, Handle, Resource, Template};
use crate::deploy::settings::Settings;
use crate::deploy::sizing::Sizing;

/// Where the stack goes, resolved before the template is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The region, e.g. `eu-west-1`: who delivers the load balancer's logs depends on it.
    pub region: String,
    pub vpc_id: String,
    pub vpc_cidr: String,
}

/// The port the server listens on inside its container.
const CONTAINER_PORT: u16 = 8080;

/// How long the load balancer keeps an idle connection to a task (AWS's default, set
/// explicitly because the server's own idle timeout is derived from it).
const ALB_IDLE_TIMEOUT_SECONDS: u32 = 60;

/// The server's `--header-timeout` behind the load balancer: longer than the balancer's idle
/// timeout, so that the balancer always closes an idle connection first. A server that closed
/// first could do so just as the balancer sends a request on it, which the client sees as 502.
const SERVER_IDLE_TIMEOUT_SECONDS: u32 = ALB_IDLE_TIMEOUT_SECONDS + 5;
/// The server's health endpoint: answers without touching the disk or asking for credentials.
const HEALTH_PATH: &str = "/health";
/// The output that says whether the load balancer has deletion protection.
pub const PROTECTED_OUTPUT: &str = "Protected";
/// The output holding the secret of `name`: the stack's own user's, or one of `users`'.
pub fn user_secret_output(name: &str) -> String {
    if name == crate::deploy::settings::STACK_USER {
        "CredentialsSecretArn".to_owned()
    } else {
        format!("{}Arn", iam::user_secret_id(name))
    }
}
/// The output holding the load balancer's ARN.
pub const LOAD_BALANCER_OUTPUT: &str = "LoadBalancerArn";
/// The load balancer's logical id.
pub const LOAD_BALANCER_RESOURCE: &str = "LoadBalancer";

/// The whole appliance.
pub fn appliance(settings: &Settings, sizing: &Sizing, network: &Network) -> Template {
    let mut t = Template::new(format!(
        "wheelhouse {} ({}): a private Python package index, replicas on ECS sharing one EFS directory",
        settings.service_name, settings.environment
    ));
    let credentials = iam::credentials(&mut t, settings);
    let roles = iam::roles(&mut t, settings, &credentials);
    iam::secret_policies(&mut t, settings, &credentials, &roles.execution);
    let storage = efs::file_system(&mut t, settings, network, &roles.instance);
    let mount_policy = iam::mount_policy(&mut t, &roles, &storage);
    let front = alb::load_balancer(&mut t, settings, network);
    let compute = ecs::service(
        &mut t,
        &ecs::Inputs {
            settings,
            sizing,
            network,
            storage: &storage,
            roles: &roles,
            credentials: &credentials,
            front: &front,
        },
    );
    // A host mounts the packages directory while it boots.
    t.depends_on(&compute.auto_scaling_group, &mount_policy);
    if settings.backup {
        backup::plan(&mut t, settings, &storage.file_system);
    }
    let alarms = monitoring::alarms(&mut t, settings, &storage, &front, &compute);
    let dashboard = settings
        .dashboard
        .then(|| monitoring::dashboard(&mut t, &storage, &front, &compute));

    let fqdns = settings.fqdns();
    let first = fqdns.first().map_or("", String::as_str);
    t.output(
        "Url",
        "The index's address",
        json!(format!("https://{first}/")),
    );
    t.output(
        "SimpleIndexUrl",
        "The address for pip and uv (--index-url)",
        json!(format!("https://{first}/simple/")),
    );
    if fqdns.len() > 1 {
        let all: Vec<String> = fqdns
            .iter()
            .map(|name| format!("https://{name}/"))
            .collect();
        t.output("AllUrls", "Every name of the index", json!(all.join(" ")));
    }
    t.output(
        "CredentialsSecretArn",
        "Secrets Manager secret with the generated user name and password (read it with GetSecretValue as one of the allowed readers)",
        credentials.stack_user.r#ref(),
    );
    for (name, secret) in &credentials.users {
        t.output(
            &format!("{}Arn", secret.id()),
            &format!("Secrets Manager secret with user {name} and its generated password"),
            secret.r#ref(),
        );
    }
    t.output(
        "FileSystemId",
        "EFS file system of the packages; it is retained when the stack is deleted, so package data survives a destroy",
        storage.file_system.r#ref(),
    );
    if let Some(bucket) = &front.access_logs {
        t.output(
            "AccessLogsBucket",
            "S3 bucket of the load balancer's access logs (under alb/); it is retained when the stack is deleted",
            bucket.r#ref(),
        );
    }
    t.output(
        "LoadBalancerDnsName",
        "DNS name of the load balancer",
        front.load_balancer.get_att("DNSName"),
    );
    t.output(
        LOAD_BALANCER_OUTPUT,
        "ARN of the load balancer",
        front.load_balancer.r#ref(),
    );
    t.output(
        PROTECTED_OUTPUT,
        "Whether the load balancer has deletion protection (destroy turns it off first)",
        json!(settings.protected().to_string()),
    );
    t.output("ClusterName", "ECS cluster", compute.cluster.r#ref());
    t.output(
        "ServiceName",
        "ECS service",
        compute.service.get_att("Name"),
    );
    t.output(
        "AutoScalingGroupName",
        "Auto scaling group of the ECS hosts",
        compute.auto_scaling_group.r#ref(),
    );
    t.output(
        "AlarmTopicArn",
        "SNS topic every alarm notifies",
        alarms.topic.r#ref(),
    );
    for (alarm, description) in &alarms.alarms {
        t.output(
            &format!("{}Arn", alarm.id()),
            &format!("Alarm: {description}"),
            alarm.get_att("Arn"),
        );
    }
    if let Some(dashboard) = dashboard {
        t.output(
            "DashboardUrl",
            "CloudWatch dashboard",
            sub(&format!(
                "https://${{AWS::Region}}.console.aws.amazon.com/cloudwatch/home?region=${{AWS::Region}}#dashboards/dashboard/${{{}}}",
                dashboard.id()
            )),
        );
    }
    let figures = [
        (
            "SizingWorkers",
            "Request threads per task",
            sizing.workers.to_string(),
        ),
        (
            "SizingContainerCpu",
            "CPU units per task",
            sizing.container_cpu.to_string(),
        ),
        (
            "SizingContainerMemory",
            "Hard memory limit per task (MiB)",
            sizing.container_memory.to_string(),
        ),
        (
            "SizingMemoryReservation",
            "Soft memory limit per task (MiB)",
            sizing.memory_reservation.to_string(),
        ),
        (
            "SizingTasksPerInstance",
            "Tasks that fit on one instance",
            sizing.tasks_per_instance.to_string(),
        ),
        (
            "SizingTaskMin",
            "Fewest tasks of the service",
            sizing.task_min.to_string(),
        ),
        (
            "SizingTaskMax",
            "Most tasks of the service",
            sizing.task_max.to_string(),
        ),
        (
            "SizingLimit",
            "What limits the tasks per instance",
            sizing.limit.to_string(),
        ),
    ];
    for (id, description, value) in figures {
        t.output(id, description, json!(value));
    }
    t
}

/// `service-environment`: the stem of every name the stack chooses.
fn base_name(settings: &Settings) -> String {
    format!("{}-{}", settings.service_name, settings.environment)
}

/// A name unique to this stack in its account and region: the stack's name, which
/// CloudFormation keeps unique there, and `suffix`. Two stacks of the same service and
/// environment (a copy under a new name, a second region's twin in one account) would
/// otherwise collide on the names of their cluster, dashboard, alarms and log group.
fn stack_named(prefix: &str, suffix: &str) -> Value {
    sub(&format!("{prefix}${{AWS::StackName}}{suffix}"))
}

/// The first group of hex digits of the stack's id: different for every stack ever created
/// under one name, for names that must not be reused by the next stack of that name.
fn stack_id_head() -> Value {
    // arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/UUID -> UUID -> its first 8 hex digits.
    let uuid = json!({ "Fn::Select": [2, { "Fn::Split": ["/", { "Ref": "AWS::StackId" }] }] });
    json!({ "Fn::Select": [0, { "Fn::Split": ["-", uuid] }] })
}

/// The `Service` and `Environment` tags, as most resource types take them.
fn tags(settings: &Settings) -> Value {
    json!([
        { "Key": "Service", "Value": settings.service_name },
        { "Key": "Environment", "Value": settings.environment },
    ])
}

/// The same tags with a `Name` first, for resources the EC2 console lists by name.
fn named_tags(settings: &Settings, name: &str) -> Value {
    let mut list = vec![json!({ "Key": "Name", "Value": name })];
    if let Value::Array(rest) = tags(settings) {
        list.extend(rest);
    }
    Value::Array(list)
}

/// The tags as a map, for the types that take them so (AWS Backup).
fn tag_map(settings: &Settings) -> Value {
    json!({ "Service": settings.service_name, "Environment": settings.environment })
}

/// What becomes of a resource that holds data when the stack is deleted or the resource
/// replaced.
#[derive(Clone, Copy)]
enum Lifetime {
    /// Outlives the stack and any replacement, except when the stack's first create fails and
    /// rolls back: then nothing was ever stored in it, and a kept copy would only be billed
    /// and block the next attempt's names.
    OutlivesTheStack,
    /// Goes with the stack.
    WithTheStack,
    /// Outlives the stack and any replacement, even a failed first create: for a bucket that
    /// holds objects from its first minutes (the load balancer writes a test file into its
    /// log bucket), which CloudFormation could not delete, failing the rollback.
    Kept,
}

/// A resource that holds data, with its [`Lifetime`] said explicitly.
fn stateful(
    t: &mut Template,
    id: &str,
    resource_type: &str,
    properties: Value,
    lifetime: Lifetime,
) -> Handle {
    let (deletion, replace) = match lifetime {
        Lifetime::OutlivesTheStack => ("RetainExceptOnCreate", "Retain"),
        Lifetime::WithTheStack => ("Delete", "Delete"),
        Lifetime::Kept => ("Retain", "Retain"),
    };
    t.insert(
        id,
        Resource {
            resource_type: resource_type.to_owned(),
            properties,
            depends_on: Vec::new(),
            deletion_policy: Some(deletion),
            update_replace_policy: Some(replace),
        },
    )
}

/// An AWS managed policy, in whatever partition the stack is in.
fn managed_policy(path_and_name: &str) -> Value {
    sub(&format!(
        "arn:${{AWS::Partition}}:iam::aws:policy/{path_and_name}"
    ))
}

/// A role that `service` may assume.
fn assume_role_policy(service: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": service },
            "Action": "sts:AssumeRole",
        }],
    })
}
