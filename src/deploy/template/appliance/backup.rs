//! AWS Backup of the file system: a vault, a plan and the selection of the file system.

use serde_json::json;

use super::{
    assume_role_policy, base_name, managed_policy, stack_id_head, stateful, tag_map, tags, Lifetime,
};
use crate::deploy::settings::Settings;
use crate::deploy::template::{Handle, Template};

/// Longest name AWS Backup takes for a vault or a plan.
const NAME_MAX: usize = 50;

pub(super) fn plan(t: &mut Template, settings: &Settings, file_system: &Handle) {
    let name = base_name(settings);
    // A vault's name is unique in the account and region, and the vault is retained (below),
    // so a stack created again under the same settings must not collide with the old one:
    // the name ends with the first group of the stack id.
    let stem: String = name.chars().take(NAME_MAX - 9).collect();
    // Recovery points outlive the stack, like the file system they restore (a vault that holds
    // recovery points cannot be deleted anyway).
    let vault = stateful(
        t,
        "BackupVault",
        "AWS::Backup::BackupVault",
        json!({
            "BackupVaultName": { "Fn::Join": ["-", [stem, stack_id_head()]] },
            "BackupVaultTags": tag_map(settings),
        }),
        Lifetime::OutlivesTheStack,
    );
    let plan = t.add(
        "BackupPlan",
        "AWS::Backup::BackupPlan",
        json!({
            "BackupPlan": {
                "BackupPlanName": name.chars().take(NAME_MAX).collect::<String>(),
                "BackupPlanRule": [{
                    "RuleName": "packages",
                    "TargetBackupVault": vault.r#ref(),
                    "ScheduleExpression": settings.backup_schedule,
                    "StartWindowMinutes": 60,
                    "CompletionWindowMinutes": 1440,
                    "Lifecycle": { "DeleteAfterDays": settings.backup_retention_days },
                }],
            },
            "BackupPlanTags": tag_map(settings),
        }),
    );
    let role = t.add(
        "BackupRole",
        "AWS::IAM::Role",
        json!({
            "Description": format!("{name} AWS Backup of the package file system"),
            "AssumeRolePolicyDocument": assume_role_policy("backup.amazonaws.com"),
            "ManagedPolicyArns": [
                managed_policy("service-role/AWSBackupServiceRolePolicyForBackup"),
                managed_policy("service-role/AWSBackupServiceRolePolicyForRestores"),
            ],
            "Tags": tags(settings),
        }),
    );
    t.add(
        "BackupSelection",
        "AWS::Backup::BackupSelection",
        json!({
            "BackupPlanId": plan.r#ref(),
            "BackupSelection": {
                "SelectionName": "packages",
                "IamRoleArn": role.get_att("Arn"),
                "Resources": [file_system.get_att("Arn")],
            },
        }),
    );
}
