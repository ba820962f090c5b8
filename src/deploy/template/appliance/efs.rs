//! The shared package directory: one EFS file system, a mount target in every host subnet.

use serde_json::{json, Value};

use super::{base_name, named_tags, stateful, sub, Network};
use crate::deploy::settings::{Settings, ThroughputMode};
use crate::deploy::template::{Handle, Template};

/// NFS.
const NFS_PORT: u16 = 2049;

pub(super) struct Storage {
    pub(super) file_system: Handle,
    pub(super) mount_targets: Vec<Handle>,
}

pub(super) fn file_system(t: &mut Template, settings: &Settings, network: &Network) -> Storage {
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
        // With a policy in place EFS no longer admits every client that reaches a mount target:
        // only IAM-authenticated clients whose role allows it (the hosts mount with `iam`), and,
        // by this statement, only over TLS. `Resource: "*"` in a file system policy is the file
        // system itself (it cannot name its own ARN without a circular reference).
        "FileSystemPolicy": {
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "DenyUnencryptedTransport",
                "Effect": "Deny",
                "Principal": { "AWS": "*" },
                "Action": [
                    "elasticfilesystem:ClientMount",
                    "elasticfilesystem:ClientWrite",
                    "elasticfilesystem:ClientRootAccess",
                ],
                "Resource": "*",
                "Condition": { "Bool": { "aws:SecureTransport": "false" } },
            }],
        },
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
        "Retain",
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
        mount_targets,
    }
}

/// The statement that lets a role mount the file system, as the hosts do.
pub(super) fn client_statement(file_system: &Handle) -> Value {
    json!({
        "Effect": "Allow",
        "Action": [
            "elasticfilesystem:ClientMount",
            "elasticfilesystem:ClientWrite",
            // The host's set-up runs as root: it creates the packages directory and hands it
            // to the server's user. Without this EFS squashes root to nobody.
            "elasticfilesystem:ClientRootAccess",
        ],
        // Spelled out from the id rather than GetAtt Arn: the same ARN, and it stays a valid
        // ARN in emulators that only pretend to create file systems (IAM validates it).
        "Resource": sub(&format!(
            "arn:${{AWS::Partition}}:elasticfilesystem:${{AWS::Region}}:${{AWS::AccountId}}:file-system/${{{}}}",
            file_system.id()
        )),
    })
}
