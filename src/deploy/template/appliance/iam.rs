//! Roles, least privilege, and the generated credentials the server accepts.
//!
//! No statement written here has a wildcard action, and none grants on `Resource: "*"`: the
//! wildcards left are the AWS managed policies' own (e.g. `ecr:GetAuthorizationToken`, which
//! has no resource to name) and the `"*"` of resource policies, where it means the resource
//! the policy is attached to.

use serde_json::{json, Value};

use super::{assume_role_policy, base_name, efs, managed_policy, stateful, tags, Lifetime};
use crate::deploy::settings::Settings;
use crate::deploy::template::{Handle, Template};

pub(super) struct Roles {
    pub(super) instance_profile: Handle,
    /// Pulls the image, writes logs and reads the credentials for the ECS agent.
    pub(super) execution: Handle,
    /// The server's own AWS identity.
    pub(super) task: Handle,
}

/// The user name and a generated password. The password exists only inside Secrets Manager:
/// the template holds the recipe, never the value.
pub(super) fn credentials(t: &mut Template, settings: &Settings) -> Handle {
    // Goes with the stack: a new stack generates a new password.
    stateful(
        t,
        "CredentialsSecret",
        "AWS::SecretsManager::Secret",
        json!({
            "Description": format!(
                "{}: the user name and generated password the package index accepts",
                base_name(settings)
            ),
            "GenerateSecretString": {
                "SecretStringTemplate": json!({ "username": "wheelhouse" }).to_string(),
                "GenerateStringKey": "password",
                "ExcludePunctuation": true,
                "PasswordLength": 32,
            },
            "Tags": tags(settings),
        }),
        Lifetime::WithTheStack,
    )
}

pub(super) fn roles(
    t: &mut Template,
    settings: &Settings,
    storage: &efs::Storage,
    secret: &Handle,
) -> Roles {
    let mut instance_policies = vec![managed_policy(
        "service-role/AmazonEC2ContainerServiceforEC2Role",
    )];
    instance_policies.extend(settings.instance_policy_arns.iter().map(|arn| json!(arn)));
    let instance_role = t.add(
        "InstanceRole",
        "AWS::IAM::Role",
        json!({
            "Description": format!("{} ECS hosts", base_name(settings)),
            "AssumeRolePolicyDocument": assume_role_policy("ec2.amazonaws.com"),
            "ManagedPolicyArns": instance_policies,
            "Policies": instance_inline_policies(settings, storage),
            "Tags": tags(settings),
        }),
    );
    let instance_profile = t.add(
        "InstanceProfile",
        "AWS::IAM::InstanceProfile",
        json!({ "Roles": [instance_role.r#ref()] }),
    );

    let execution = t.add(
        "TaskExecutionRole",
        "AWS::IAM::Role",
        json!({
            "Description": format!("{} ECS task execution: image, logs, credentials", base_name(settings)),
            "AssumeRolePolicyDocument": assume_role_policy("ecs-tasks.amazonaws.com"),
            "ManagedPolicyArns": [managed_policy("service-role/AmazonECSTaskExecutionRolePolicy")],
            "Policies": [{
                "PolicyName": "read-credentials",
                "PolicyDocument": policy(vec![json!({
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": secret.r#ref(),
                })]),
            }],
            "Tags": tags(settings),
        }),
    );

    // The server calls no AWS API: its files come through the host's mount, its credentials
    // through the environment. The role exists so that the task does not fall back on anything
    // else, and it grants nothing.
    let mut task_trust = assume_role_policy("ecs-tasks.amazonaws.com");
    task_trust["Statement"][0]["Condition"] = json!({
        "StringEquals": { "aws:SourceAccount": { "Ref": "AWS::AccountId" } },
    });
    let task = t.add(
        "TaskRole",
        "AWS::IAM::Role",
        json!({
            "Description": format!("{} server tasks: no AWS permissions", base_name(settings)),
            "AssumeRolePolicyDocument": task_trust,
            "Tags": tags(settings),
        }),
    );

    Roles {
        instance_profile,
        execution,
        task,
    }
}

/// Only the task execution role and the configured readers may read the credentials; the
/// deny holds even against identities whose own policies allow `secretsmanager:*`.
pub(super) fn secret_policy(
    t: &mut Template,
    settings: &Settings,
    secret: &Handle,
    execution: &Handle,
) {
    let readers: Vec<Value> = settings
        .secret_readers
        .iter()
        .map(|arn| json!(arn))
        .collect();
    let mut allowed = vec![execution.get_att("Arn")];
    allowed.extend(readers.iter().cloned());
    let mut statements = Vec::new();
    if !readers.is_empty() {
        statements.push(json!({
            "Sid": "AllowReaders",
            "Effect": "Allow",
            "Principal": { "AWS": readers },
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
        }));
    }
    statements.push(json!({
        "Sid": "DenyEveryoneElse",
        "Effect": "Deny",
        "Principal": { "AWS": "*" },
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "*",
        "Condition": { "ArnNotEquals": { "aws:PrincipalArn": allowed } },
    }));
    t.add(
        "CredentialsSecretPolicy",
        "AWS::SecretsManager::ResourcePolicy",
        json!({
            "SecretId": secret.r#ref(),
            "BlockPublicPolicy": true,
            "ResourcePolicy": policy(statements),
        }),
    );
}

/// A policy document.
fn policy(statements: Vec<Value>) -> Value {
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// The instance role's own statements, and the settings' `instance_policy_statements` in a
/// policy of their own.
fn instance_inline_policies(settings: &Settings, storage: &efs::Storage) -> Value {
    let mut policies = vec![json!({
        "PolicyName": "mount-packages",
        "PolicyDocument": policy(vec![efs::client_statement(storage)]),
    })];
    if !settings.instance_policy_statements.is_empty() {
        policies.push(json!({
            "PolicyName": "from-settings",
            "PolicyDocument": policy(settings.instance_policy_statements.clone()),
        }));
    }
    Value::Array(policies)
}
