//! The compute: ECS on EC2 hosts from an auto scaling group, the server's task and its service.
//!
//! Bridge networking with dynamic host ports: several tasks share a host without each needing
//! an elastic network interface (a t3.small has three, which would cap it at two tasks under
//! `awsvpc`, below what the sizing packs on it).

use serde_json::{json, Value};

use super::alb::{Front, DYNAMIC_PORTS};
use super::efs::{Storage, SERVER_UID};
use super::iam::{Credentials, Roles};
use super::{
    base_name, named_tags, stack_id_head, stack_named, stateful, sub, tags, Lifetime, Network,
    CONTAINER_PORT,
};
use crate::auth::{ENV_PASSWORD, ENV_PASSWORD_PREFIX, ENV_USERNAME, ENV_USERNAME_PREFIX};
use crate::deploy::settings::{user_key, Settings};
use crate::deploy::sizing::{Sizing, PAGE_CACHE_MIB};
use crate::deploy::template::{Handle, Template};

/// Where the hosts mount the packages directory (the file system's access point): the path
/// earlier versions' hosts used for it, so tasks find it there on old and new hosts alike.
const HOST_MOUNT: &str = "/mnt/wheelhouse/packages";
/// The systemd unit of that mount.
const HOST_MOUNT_UNIT: &str = "mnt-wheelhouse-packages.mount";
/// The directory of the packages on the file system, as the tasks see it.
const CONTAINER_PACKAGES: &str = "/data/packages";
/// A file the boot script leaves on the shared volume; the server's health check requires it
/// (`--health-requires`), so a task whose directory is not the volume is taken out.
const VOLUME_MARKER: &str = ".wheelhouse-volume";
/// The container's name in the task definition.
const CONTAINER_NAME: &str = "wheelhouse";
/// Past the server's 30 s shutdown grace, so requests in flight finish before SIGKILL.
const STOP_TIMEOUT_SECONDS: u32 = 40;

pub(super) struct Inputs<'a> {
    pub(super) settings: &'a Settings,
    pub(super) sizing: &'a Sizing,
    pub(super) network: &'a Network,
    pub(super) storage: &'a Storage,
    pub(super) roles: &'a Roles,
    pub(super) credentials: &'a Credentials,
    pub(super) front: &'a Front,
}

pub(super) struct Compute {
    pub(super) cluster: Handle,
    pub(super) service: Handle,
    pub(super) auto_scaling_group: Handle,
}

pub(super) fn service(t: &mut Template, inputs: &Inputs<'_>) -> Compute {
    let Inputs {
        settings,
        sizing,
        network,
        storage,
        roles,
        credentials,
        front,
    } = *inputs;
    let name = base_name(settings);

    let cluster = t.add(
        "Cluster",
        "AWS::ECS::Cluster",
        json!({
            "ClusterName": stack_named("", ""),
            // Container Insights reports RunningTaskCount and DesiredTaskCount, which the
            // running-tasks alarm compares.
            "ClusterSettings": [{ "Name": "containerInsights", "Value": "enabled" }],
            "Tags": tags(settings),
        }),
    );

    let host_security_group = t.add(
        "InstanceSecurityGroup",
        "AWS::EC2::SecurityGroup",
        json!({
            "GroupDescription": format!("{name} ECS hosts: task ports from the load balancer only"),
            "VpcId": network.vpc_id,
            "SecurityGroupIngress": [{
                "IpProtocol": "tcp",
                "FromPort": DYNAMIC_PORTS.0,
                "ToPort": DYNAMIC_PORTS.1,
                "SourceSecurityGroupId": front.security_group.get_att("GroupId"),
                "Description": "dynamic host ports of the tasks, from the load balancer",
            }],
            // Egress stays open: the hosts reach ECS, ECR, Secrets Manager, CloudWatch Logs,
            // EFS and the package repository for amazon-efs-utils.
            "Tags": named_tags(settings, &format!("{name}-hosts")),
        }),
    );

    let launch_template = t.add(
        "LaunchTemplate",
        "AWS::EC2::LaunchTemplate",
        json!({
            "LaunchTemplateData": {
                "ImageId": settings.ami_id.clone().unwrap_or_else(|| ami(&settings.instance_type)),
                "InstanceType": settings.instance_type,
                "IamInstanceProfile": { "Arn": roles.instance_profile.get_att("Arn") },
                "SecurityGroupIds": [host_security_group.get_att("GroupId")],
                // IMDSv2 only, and one hop: bridge-mode containers sit one hop away, so they
                // cannot reach the instance role's credentials (the agent and efs-utils run on
                // the host and can).
                "MetadataOptions": {
                    "HttpEndpoint": "enabled",
                    "HttpTokens": "required",
                    "HttpPutResponseHopLimit": 1,
                },
                "BlockDeviceMappings": [{
                    "DeviceName": "/dev/xvda",
                    "Ebs": {
                        "VolumeSize": 30,
                        "VolumeType": "gp3",
                        "Encrypted": true,
                        "DeleteOnTermination": true,
                    },
                }],
                "UserData": { "Fn::Base64": sub(&user_data(&cluster, storage, settings)) },
                "TagSpecifications": [{ "ResourceType": "volume", "Tags": tags(settings) }],
            },
            "TagSpecifications": [{ "ResourceType": "launch-template", "Tags": tags(settings) }],
        }),
    );

    let mut asg_tags =
        vec![json!({ "Key": "Name", "Value": format!("{name}-host"), "PropagateAtLaunch": true })];
    if let Value::Array(list) = tags(settings) {
        asg_tags.extend(list.into_iter().map(|mut tag| {
            tag["PropagateAtLaunch"] = json!(true);
            tag
        }));
    }
    // ECS tags the group it scales with `AmazonECSManaged`; declaring the tag keeps a stack
    // update from removing it (which would stop ECS from managing the group).
    asg_tags.push(json!({ "Key": "AmazonECSManaged", "Value": "", "PropagateAtLaunch": true }));
    let auto_scaling_group = t.add(
        "AutoScalingGroup",
        "AWS::AutoScaling::AutoScalingGroup",
        json!({
            "MinSize": settings.asg_min().to_string(),
            "MaxSize": settings.asg_max().to_string(),
            "VPCZoneIdentifier": settings.asg_subnets,
            "LaunchTemplate": {
                "LaunchTemplateId": launch_template.r#ref(),
                "Version": launch_template.get_att("LatestVersionNumber"),
            },
            "HealthCheckType": "EC2",
            "HealthCheckGracePeriod": 300,
            // ECS managed termination protection is off, so nothing protects instances.
            "NewInstancesProtectedFromScaleIn": false,
            "Tags": asg_tags,
        }),
    );
    // A host mounts the file system while it boots: its subnet's mount target must exist.
    for mount_target in &storage.mount_targets {
        t.depends_on(&auto_scaling_group, mount_target);
    }

    let capacity_provider = t.add(
        "CapacityProvider",
        "AWS::ECS::CapacityProvider",
        json!({
            // Named explicitly: the name CloudFormation would derive starts with the stack's,
            // and a capacity provider's may not start with "aws", "ecs" or "fargate". The stack
            // id's head keeps a stack created again under the same name off a deleted
            // provider's name, which ECS may hold for a while.
            "Name": { "Fn::Join": ["-", ["hosts", { "Ref": "AWS::StackName" }, stack_id_head()]] },
            "AutoScalingGroupProvider": {
                "AutoScalingGroupArn": auto_scaling_group.r#ref(),
                "ManagedScaling": {
                    "Status": "ENABLED",
                    "TargetCapacity": 100,
                    "MinimumScalingStepSize": 1,
                    "MaximumScalingStepSize": 2,
                    "InstanceWarmupPeriod": 180,
                },
                // Off: with it on, every instance would need scale-in protection, and ECS would
                // keep instances that hold only tasks it could move.
                "ManagedTerminationProtection": "DISABLED",
                // Tasks are moved off an instance before the group terminates it.
                "ManagedDraining": "ENABLED",
            },
            "Tags": tags(settings),
        }),
    );
    let strategy =
        json!([{ "CapacityProvider": capacity_provider.r#ref(), "Weight": 1, "Base": 0 }]);
    let association = t.add(
        "ClusterCapacityProviders",
        "AWS::ECS::ClusterCapacityProviderAssociations",
        json!({
            "Cluster": cluster.r#ref(),
            "CapacityProviders": [capacity_provider.r#ref()],
            "DefaultCapacityProviderStrategy": strategy,
        }),
    );

    // The logs go with the stack (its name would stop a new stack of the same name otherwise).
    let log_group = stateful(
        t,
        "LogGroup",
        "AWS::Logs::LogGroup",
        json!({
            "LogGroupName": stack_named("/ecs/", ""),
            "RetentionInDays": settings.log_retention_days,
            "Tags": tags(settings),
        }),
        Lifetime::WithTheStack,
    );

    // JSON keys of the secrets, read by the ECS agent with the execution role: the stack's
    // user as the server's WHEELHOUSE_USERNAME/PASSWORD, the others as suffixed pairs.
    let secret_key = |secret: &Handle, key: &str| sub(&format!("${{{}}}:{key}::", secret.id()));
    let mut secrets = vec![
        json!({ "Name": ENV_USERNAME, "ValueFrom": secret_key(&credentials.stack_user, "username") }),
        json!({ "Name": ENV_PASSWORD, "ValueFrom": secret_key(&credentials.stack_user, "password") }),
    ];
    for (name, secret) in &credentials.users {
        let suffix = user_key(name).to_ascii_uppercase();
        secrets.push(json!({ "Name": format!("{ENV_USERNAME_PREFIX}{suffix}"), "ValueFrom": secret_key(secret, "username") }));
        secrets.push(json!({ "Name": format!("{ENV_PASSWORD_PREFIX}{suffix}"), "ValueFrom": secret_key(secret, "password") }));
    }
    let task_definition = t.add(
        "TaskDefinition",
        "AWS::ECS::TaskDefinition",
        json!({
            "Family": name,
            "NetworkMode": "bridge",
            "RequiresCompatibilities": ["EC2"],
            "TaskRoleArn": roles.task.get_att("Arn"),
            "ExecutionRoleArn": roles.execution.get_att("Arn"),
            // The host's EFS mount (see `user_data`), bind-mounted: ECS's own EFS volumes take
            // no NFS options, and the cache bound below needs them.
            "Volumes": [{ "Name": "packages", "Host": { "SourcePath": HOST_MOUNT } }],
            "ContainerDefinitions": [{
                "Name": CONTAINER_NAME,
                "Image": format!("{}:{}", settings.image_repository, settings.image_tag),
                "User": format!("{SERVER_UID}:{SERVER_UID}"),
                "Essential": true,
                // The image's entrypoint is `/wheelhouse run`: these are its arguments.
                "Command": [
                    "--disable-fallback",
                    "--backend", "auto",
                    "-a", "download,list,update",
                    "--workers", sizing.workers.to_string(),
                    "--header-timeout", super::SERVER_IDLE_TIMEOUT_SECONDS.to_string(),
                    "--health-requires", format!("{CONTAINER_PACKAGES}/{VOLUME_MARKER}"),
                    "-p", CONTAINER_PORT.to_string(),
                    CONTAINER_PACKAGES,
                ],
                "Cpu": sizing.container_cpu,
                "Memory": sizing.container_memory,
                "MemoryReservation": sizing.memory_reservation,
                // HostPort 0: a dynamic host port, so several tasks share a host.
                "PortMappings": [{
                    "ContainerPort": CONTAINER_PORT,
                    "HostPort": 0,
                    "Protocol": "tcp",
                }],
                "MountPoints": [{
                    "SourceVolume": "packages",
                    "ContainerPath": CONTAINER_PACKAGES,
                    "ReadOnly": false,
                }],
                "Secrets": secrets,
                "LogConfiguration": {
                    "LogDriver": "awslogs",
                    "Options": {
                        "awslogs-group": log_group.r#ref(),
                        "awslogs-region": { "Ref": "AWS::Region" },
                        "awslogs-stream-prefix": CONTAINER_NAME,
                    },
                },
                // The image has no shell: the binary probes its own /health.
                "HealthCheck": {
                    "Command": ["CMD", "/wheelhouse", "healthcheck"],
                    "Interval": 15,
                    "Timeout": 5,
                    "Retries": 3,
                    "StartPeriod": 10,
                },
                "StopTimeout": STOP_TIMEOUT_SECONDS,
                "Ulimits": [{ "Name": "nofile", "SoftLimit": 65536, "HardLimit": 65536 }],
            }],
            "Tags": tags(settings),
        }),
    );

    let service = t.add(
        "Service",
        "AWS::ECS::Service",
        json!({
            "Cluster": cluster.r#ref(),
            "TaskDefinition": task_definition.r#ref(),
            "DesiredCount": sizing.task_min,
            "CapacityProviderStrategy": strategy,
            // One zone failing takes the fewest replicas with it; then spread over hosts.
            "PlacementStrategies": [
                { "Type": "spread", "Field": "attribute:ecs.availability-zone" },
                { "Type": "spread", "Field": "instanceId" },
            ],
            "DeploymentConfiguration": {
                "DeploymentCircuitBreaker": { "Enable": true, "Rollback": true },
                "MinimumHealthyPercent": 100,
                "MaximumPercent": 200,
            },
            "LoadBalancers": [{
                "ContainerName": CONTAINER_NAME,
                "ContainerPort": CONTAINER_PORT,
                "TargetGroupArn": front.target_group.r#ref(),
            }],
            "HealthCheckGracePeriodSeconds": 60,
            "EnableECSManagedTags": true,
            "PropagateTags": "SERVICE",
            "Tags": tags(settings),
        }),
    );
    // The target group must belong to a load balancer (through a listener) before a service
    // can register into it, and the capacity provider must be the cluster's before the
    // service's strategy can name it.
    t.depends_on(&service, &front.https_listener);
    t.depends_on(&service, &association);

    let scalable_target = t.add(
        "ServiceScalableTarget",
        "AWS::ApplicationAutoScaling::ScalableTarget",
        json!({
            "ServiceNamespace": "ecs",
            "ScalableDimension": "ecs:service:DesiredCount",
            "ResourceId": sub(&format!("service/${{{}}}/${{{}.Name}}", cluster.id(), service.id())),
            "MinCapacity": sizing.task_min,
            "MaxCapacity": sizing.task_max,
        }),
    );
    t.add(
        "ServiceCpuScalingPolicy",
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        json!({
            "PolicyName": format!("{name}-cpu-60"),
            "PolicyType": "TargetTrackingScaling",
            "ScalingTargetId": scalable_target.r#ref(),
            "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": { "PredefinedMetricType": "ECSServiceAverageCPUUtilization" },
                "TargetValue": 60,
                "ScaleOutCooldown": 60,
                "ScaleInCooldown": 300,
            },
        }),
    );

    Compute {
        cluster,
        service,
        auto_scaling_group,
    }
}

/// The ECS-optimized Amazon Linux 2023 image, resolved by CloudFormation from AWS's public
/// parameter when the stack is created or updated. Graviton types (a `g` among the family's
/// attribute letters: t4g, m7g, c6gn, r7gd) take the arm64 build.
fn ami(instance_type: &str) -> String {
    let family = instance_type.split('.').next().unwrap_or_default();
    let attributes = family
        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .trim_start_matches(|c: char| c.is_ascii_digit());
    let arch = if attributes.contains('g') {
        "arm64/"
    } else {
        ""
    };
    format!("{{{{resolve:ssm:/aws/service/ecs/optimized-ami/amazon-linux-2023/{arch}recommended/image_id}}}}")
}

/// The hosts' boot script (an `Fn::Sub` text: `${...}` are the template's references).
///
/// The package directory is EFS mounted here, on the host, with `acdirmin=1,acdirmax=1`, and
/// bind-mounted into the tasks. The Linux NFS client caches a directory's attributes for 30-60 s
/// by default, so a replica could list an old directory for up to a minute after an upload
/// through another; bounding the directory attribute cache to 1 s makes every replica's listing
/// reflect an upload within about a second (file data caching is unchanged, and a download by
/// exact name is a fresh lookup that sees a new file at once). ECS's own EFS volumes cannot
/// take these options. The mount uses amazon-efs-utils with TLS and IAM authorization (the
/// file system's policy refuses anything else).
///
/// The ECS agent starts only after this script has run (its unit is ordered after
/// cloud-final), and the script joins the cluster last: a host whose mount failed would serve,
/// and accept uploads into, its own disk, so it powers off instead and the auto scaling group
/// replaces it. The script runs on the first boot only: after a reboot, systemd drop-ins
/// (`RequiresMountsFor`) hold Docker and the agent until the volume is mounted, and the
/// marker file on the volume fails the health check of any task that still finds none. `ECS_RESERVED_MEMORY` keeps the page cache's share out of task placement, as
/// the sizing assumes.
fn user_data(cluster: &Handle, storage: &Storage, settings: &Settings) -> String {
    let extras = host_extras(settings);
    let cluster = cluster.id();
    let file_system = storage.file_system.id();
    let access_point = storage.access_point.id();
    format!(
        r#"#!/bin/bash
set -euo pipefail
trap 'echo "wheelhouse host set-up failed: powering off" >&2; systemctl poweroff' ERR
retry() {{ for _ in $(seq 1 30); do "$@" && return 0; sleep 10; done; return 1; }}
retry dnf install -y amazon-efs-utils
mkdir -p {HOST_MOUNT}
# acdirmin/acdirmax: every replica lists an upload within ~1 s (the NFS default caches directories 30-60 s)
# Through the access point: the packages directory, every request made as the server's user
echo "${{{file_system}}}:/ {HOST_MOUNT} efs _netdev,tls,iam,accesspoint=${{{access_point}}},acdirmin=1,acdirmax=1 0 0" >> /etc/fstab
retry mount {HOST_MOUNT}
mountpoint -q {HOST_MOUNT}
# Only the volume holds the marker: a task that finds none fails its health check
[ -e {HOST_MOUNT}/{VOLUME_MARKER} ] || touch {HOST_MOUNT}/{VOLUME_MARKER}
# After a reboot, Docker and the ECS agent start only once the volume is mounted, and a host
# whose mount fails powers off (the auto scaling group replaces it) instead of idling
for unit in docker.service ecs.service; do
  mkdir -p /etc/systemd/system/$unit.d
  printf '[Unit]\nRequiresMountsFor={HOST_MOUNT}\n' > /etc/systemd/system/$unit.d/wheelhouse-volume.conf
done
mkdir -p /etc/systemd/system/{HOST_MOUNT_UNIT}.d
printf '[Unit]\nOnFailure=poweroff.target\n' > /etc/systemd/system/{HOST_MOUNT_UNIT}.d/wheelhouse-volume.conf
systemctl daemon-reload
{extras}cat >> /etc/ecs/ecs.config <<EOF
ECS_CLUSTER=${{{cluster}}}
ECS_RESERVED_MEMORY={PAGE_CACHE_MIB}
EOF
"#
    )
}

/// The settings' `host_files` and `host_commands` as lines of the boot script, each ending
/// with a newline. A file's content travels base64-encoded, so no byte of it can end a
/// quote or a here-document; in commands, `${` is written `${!` so that `Fn::Sub` leaves it to
/// the shell.
fn host_extras(settings: &Settings) -> String {
    use base64::Engine;
    let mut lines = String::new();
    if !settings.host_files.is_empty() || !settings.host_commands.is_empty() {
        lines.push_str("# From the settings: host_files, then host_commands\n");
    }
    for file in &settings.host_files {
        // The path is validated to need no quoting (see `Settings::validate`).
        let path = &file.path;
        let content = base64::engine::general_purpose::STANDARD.encode(&file.content);
        lines.push_str(&format!(
            "mkdir -p \"$(dirname '{path}')\"\necho '{content}' | base64 -d > '{path}'\nchmod {} '{path}'\n",
            file.mode
        ));
    }
    for command in &settings.host_commands {
        lines.push_str(&command.replace("${", "${!"));
        lines.push('\n');
    }
    lines
}
