//! The shared package directory: one EFS file system, a mount target in every host subnet,
//! and an access point that is the packages directory, owned by the server's user.

use serde_json::{json, Value};

use super::{base_name, named_tags, stateful, sub, Lifetime, Network};
use crate::deploy::settings::{Settings, ThroughputMode};
use crate::deploy::template::{Handle, Template};

/// NFS.
const NFS_PORT: u16 = 2049;
/// The user (and group) the server runs as in its image.
pub(super) const SERVER_UID: u32 = 10001;
/// Where the packages live on the file system (the access point's root).
const PACKAGES_PATH: &str = "/packages";

pub(super) struct Storage {
    pub(super) file_system: Handle,
    /// The packages directory: every client goes through it as the server's user, so no host
    /// needs root on the file system and nothing has to `chown` what it creates.
    pub(super) access_point: Handle,
    pub(super) mount_targets: Vec<Handle>,
}

/// `hosts`: the instance role, the one principal the file system's policy admits.
pub(super) fn file_system(
    t: &mut Template,
    settings: &Settings,
    network: &Network,
    hosts: &Handle,
) -> Storage {
    let name = base_name(settings);
    let security_group = t.add(
        "FileSystemSecurityGroup",
        "AWS::EC2::SecurityGroup",
        json!({
            "GroupDescription": format!("{name} EFS: NFS from the VPC only"),
            "VpcId": network.vpc_id,
            "SecurityGroupIngress": [{
                "IpProtocol": "tcp",
                "FromPort": NFS_PORT,
                "ToPort": NFS_PORT,
                "CidrIp": network.vpc_cidr,
                "Description": "NFS from the VPC",
            }],
            "Tags": named_tags(settings, &format!("{name}-efs")),
        }),
    );

    let mut properties = json!({
        "Encrypted": true,
        "KmsKeyId": "alias/aws/elasticfilesystem",
        "PerformanceMode": "generalPurpose",
        "ThroughputMode": settings.efs_throughput_mode.as_cfn(),
        "FileSystemPolicy": file_system_policy(hosts),
        "FileSystemTags": named_tags(settings, &name),
    });
    if settings.efs_throughput_mode == ThroughputMode::Provisioned {
        if let Some(mibps) = settings.efs_provisioned_throughput_mibps {
            properties["ProvisionedThroughputInMibps"] = json!(mibps);
        }
    }
    if let Some(after) = settings.efs_transition_to_ia.as_cfn() {
        // A file read again after it moved to Infrequent Access comes back on its first access:
        // an old release that becomes popular again should not pay IA prices on every download.
        properties["LifecyclePolicies"] = json!([
            { "TransitionToIA": after },
            { "TransitionToPrimaryStorageClass": "AFTER_1_ACCESS" },
        ]);
    }
    // The packages are the one thing of value here: the file system outlives the stack (a
    // destroy, or an update that would replace it), and a new stack can be pointed at a copy.
    let file_system = stateful(
        t,
        "FileSystem",
        "AWS::EFS::FileSystem",
        properties,
        Lifetime::OutlivesTheStack,
    );

    let uid = SERVER_UID.to_string();
    let access_point = t.add(
        "AccessPoint",
        "AWS::EFS::AccessPoint",
        json!({
            "FileSystemId": file_system.r#ref(),
            // Every request through it is made as this user, whatever the client's own.
            "PosixUser": { "Uid": uid, "Gid": uid },
            // Created on first use, owned by the server's user: an existing directory (a file
            // system restored from a backup) keeps its owner.
            "RootDirectory": {
                "Path": PACKAGES_PATH,
                "CreationInfo": { "OwnerUid": uid, "OwnerGid": uid, "Permissions": "0755" },
            },
            "AccessPointTags": named_tags(settings, &format!("{name}-packages")),
        }),
    );

    let mount_targets = settings
        .asg_subnets
        .iter()
        .enumerate()
        .map(|(i, subnet)| {
            t.add(
                &format!("MountTarget{i}"),
                "AWS::EFS::MountTarget",
                json!({
                    "FileSystemId": file_system.r#ref(),
                    "SubnetId": subnet,
                    "SecurityGroups": [security_group.r#ref()],
                }),
            )
        })
        .collect();
    Storage {
        file_system,
        access_point,
        mount_targets,
    }
}

/// The file system's policy. With a policy in place EFS no longer admits every client that
/// reaches a mount target: it admits the hosts' role, through a mount target and an access
/// point, and nobody as root or without TLS, whatever their own policies allow.
///
/// `Resource` is `"*"`: AWS's examples name the file system's ARN, but a file system policy is
/// attached to one file system and governs requests to it alone, so `"*"` there cannot reach
/// further; and the `FileSystemPolicy` property cannot name the ARN of the file system it
/// belongs to (a resource cannot refer to itself, and CloudFormation has no separate policy
/// resource for EFS). For the same reason the grant names any access point of this account
/// and region rather than the stack's own, which refers to the file system: the instance role's
/// own policy ([`client_statement`]) names that one.
///
/// An allow in a same-account identity policy still admits a role this policy does not name
/// (EFS takes an allow from either policy); the denies here hold against every principal.
fn file_system_policy(hosts: &Handle) -> Value {
    let all_client_actions = json!([
        "elasticfilesystem:ClientMount",
        "elasticfilesystem:ClientWrite",
        "elasticfilesystem:ClientRootAccess",
    ]);
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "HostsThroughAMountTargetAndAnAccessPoint",
                "Effect": "Allow",
                "Principal": { "AWS": hosts.get_att("Arn") },
                "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
                "Resource": "*",
                "Condition": {
                    "Bool": { "elasticfilesystem:AccessedViaMountTarget": "true" },
                    "StringLike": {
                        "elasticfilesystem:AccessPointArn": sub(
                            "arn:${AWS::Partition}:elasticfilesystem:${AWS::Region}:${AWS::AccountId}:access-point/*"
                        ),
                    },
                },
            },
            {
                // The access point makes every request as the server's user: nobody needs root.
                "Sid": "DenyRootAccess",
                "Effect": "Deny",
                "Principal": { "AWS": "*" },
                "Action": "elasticfilesystem:ClientRootAccess",
                "Resource": "*",
            },
            {
                "Sid": "DenyUnencryptedTransport",
                "Effect": "Deny",
                "Principal": { "AWS": "*" },
                "Action": all_client_actions,
                "Resource": "*",
                "Condition": { "Bool": { "aws:SecureTransport": "false" } },
            },
        ],
    })
}

/// The statement that lets a role mount the packages directory, as the hosts do: through
/// the access point only, and without root access.
pub(super) fn client_statement(storage: &Storage) -> Value {
    json!({
        "Effect": "Allow",
        "Action": [
            "elasticfilesystem:ClientMount",
            "elasticfilesystem:ClientWrite",
        ],
        // Spelled out from the id rather than GetAtt Arn: the same ARN, and it stays a valid
        // ARN in emulators that only pretend to create file systems (IAM validates it).
        "Resource": sub(&format!(
            "arn:${{AWS::Partition}}:elasticfilesystem:${{AWS::Region}}:${{AWS::AccountId}}:file-system/${{{}}}",
            storage.file_system.id()
        )),
        "Condition": {
            "StringEquals": {
                "elasticfilesystem:AccessPointArn": sub(&format!(
                    "arn:${{AWS::Partition}}:elasticfilesystem:${{AWS::Region}}:${{AWS::AccountId}}:access-point/${{{}}}",
                    storage.access_point.id()
                )),
            },
        },
    })
}
