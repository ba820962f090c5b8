//! Roles, least privilege, and the generated credentials the server accepts.
//!
//! No statement written here has a wildcard action, and none grants on `Resource: "*"`: the
//! wildcards left are the AWS managed policies' own (e.g. `ecr:GetAuthorizationToken`, which
//! has no resource to name) and the `"*"` of resource policies, where it means the resource
//! the policy is attached to.

use serde_json::{json, Value};

use super::{assume_role_policy, base_name, efs, managed_policy, stateful, tags, Lifetime};
use crate::deploy::settings::{user_key, Settings, STACK_USER};
use crate::deploy::template::{Handle, Template};

pub(super) struct Roles {
    /// The ECS hosts' role.
    pub(super) instance: Handle,
    pub(super) instance_profile: Handle,
    /// Pulls the image, writes logs and reads the credentials for the ECS agent.
    pub(super) execution: Handle,
    /// The server's own AWS identity.
    pub(super) task: Handle,
}

/// The users the server accepts, each a user name and a generated password in a secret of
/// its own. A password exists only inside Secrets Manager: the template holds the recipe,
/// never the value.
pub(super) struct Credentials {
    /// The stack's own user ([`STACK_USER`]), whose secret every version of the stack has had.
    pub(super) stack_user: Handle,
    /// The settings' `users`, with their names.
    pub(super) users: Vec<(String, Handle)>,
}

impl Credentials {
    /// Every secret: the stack's user's first.
    pub(super) fn secrets(&self) -> impl Iterator<Item = &Handle> {
        std::iter::once(&self.stack_user).chain(self.users.iter().map(|(_, secret)| secret))
    }
}

/// The logical id of the secret of `name`, one of the settings' `users`.
pub(super) fn user_secret_id(name: &str) -> String {
    format!("UserSecret{}", user_key(name))
}

pub(super) fn credentials(t: &mut Template, settings: &Settings) -> Credentials {
    let stack_user = user_secret(
        t,
        settings,
        "CredentialsSecret",
        STACK_USER,
        &format!(
            "{}: the user name and generated password the package index accepts",
            base_name(settings)
        ),
    );
    let users = settings
        .users
        .iter()
        .map(|name| {
            let secret = user_secret(
                t,
                settings,
                &user_secret_id(name),
                name,
                &format!(
                    "{}: user {name} of the package index and its generated password",
                    base_name(settings)
                ),
            );
            (name.clone(), secret)
        })
        .collect();
    Credentials { stack_user, users }
}

fn user_secret(
    t: &mut Template,
    settings: &Settings,
    id: &str,
    username: &str,
    description: &str,
) -> Handle {
    // Goes with the stack: a new stack generates new passwords.
    stateful(
        t,
        id,
        "AWS::SecretsManager::Secret",
        json!({
            "Description": description,
            "GenerateSecretString": {
                "SecretStringTemplate": json!({ "username": username }).to_string(),
                "GenerateStringKey": "password",
                "ExcludePunctuation": true,
                "PasswordLength": 32,
            },
            "Tags": tags(settings),
        }),
        Lifetime::WithTheStack,
    )
}

pub(super) fn roles(t: &mut Template, settings: &Settings, credentials: &Credentials) -> Roles {
    let mut instance_policies = vec![managed_policy(
        "service-role/AmazonEC2ContainerServiceforEC2Role",
    )];
    instance_policies.extend(settings.instance_policy_arns.iter().map(|arn| json!(arn)));
    let mut instance_properties = json!({
        "Description": format!("{} ECS hosts", base_name(settings)),
        "AssumeRolePolicyDocument": assume_role_policy("ec2.amazonaws.com"),
        "ManagedPolicyArns": instance_policies,
        "Tags": tags(settings),
    });
    if !settings.instance_policy_statements.is_empty() {
        instance_properties["Policies"] = json!([{
            "PolicyName": "from-settings",
            "PolicyDocument": policy(settings.instance_policy_statements.clone()),
        }]);
    }
    let instance_role = t.add("InstanceRole", "AWS::IAM::Role", instance_properties);
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
                    "Resource": secrets_resource(credentials),
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
        instance: instance_role,
        instance_profile,
        execution,
        task,
    }
}

/// The secrets the execution role reads: exactly the stack's. One secret is named alone, as
/// stacks without `users` always had it.
fn secrets_resource(credentials: &Credentials) -> Value {
    if credentials.users.is_empty() {
        credentials.stack_user.r#ref()
    } else {
        Value::Array(credentials.secrets().map(Handle::r#ref).collect())
    }
}

/// Only the task execution role and the configured readers may read the credentials; the
/// deny holds even against identities whose own policies allow `secretsmanager:*`. One policy
/// per secret: a secret takes only its own.
pub(super) fn secret_policies(
    t: &mut Template,
    settings: &Settings,
    credentials: &Credentials,
    execution: &Handle,
) {
    for secret in credentials.secrets() {
        secret_policy(t, settings, secret, execution);
    }
}

fn secret_policy(t: &mut Template, settings: &Settings, secret: &Handle, execution: &Handle) {
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
        &format!("{}Policy", secret.id()),
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

/// The hosts' permission to mount the packages directory, as a policy of its own: the file
/// system's policy names the instance role, so the role cannot name the file system in turn
/// (CloudFormation would find a cycle). The hosts must not boot before it is attached.
pub(super) fn mount_policy(t: &mut Template, roles: &Roles, storage: &efs::Storage) -> Handle {
    t.add(
        "InstanceMountPolicy",
        "AWS::IAM::Policy",
        json!({
            "PolicyName": "mount-packages-access-point",
            "Roles": [roles.instance.r#ref()],
            "PolicyDocument": policy(vec![efs::client_statement(storage)]),
        }),
    )
}
