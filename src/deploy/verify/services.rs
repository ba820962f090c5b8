//! What AWS says of the stack's parts: every answer is read-only.

use aws_config::SdkConfig;

use super::Row;
use crate::deploy::stack::aws_error;

/// The stack's parts, by their physical ids (from its outputs and resources).
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub cluster: Option<String>,
    pub service: Option<String>,
    pub target_group: Option<String>,
    pub file_system: Option<String>,
    /// `None`: the stack has no backup plan (backup is off in the settings).
    pub backup_plan: Option<String>,
    pub alarms: Vec<String>,
}

/// The rows, and how many targets are healthy (`None` if that could not be read).
pub async fn check(config: &SdkConfig, parts: &Parts) -> (Vec<Row>, Option<usize>) {
    let (targets, healthy) = targets(config, parts).await;
    let rows = vec![
        tasks(config, parts).await,
        targets,
        mount_targets(config, parts).await,
        backup_plan(config, parts).await,
        alarms(config, parts).await,
    ];
    (rows, healthy)
}

fn missing(check: &str, what: &str) -> Row {
    Row::fail(
        check,
        format!("the stack has no {what}: is it a wheelhouse stack, and did its create finish?"),
    )
}

async fn tasks(config: &SdkConfig, parts: &Parts) -> Row {
    let check = "ECS tasks running";
    let (Some(cluster), Some(service)) = (&parts.cluster, &parts.service) else {
        return missing(check, "ClusterName or ServiceName output");
    };
    let answer = aws_sdk_ecs::Client::new(config)
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => return Row::fail(check, aws_error("DescribeServices")(err).to_string()),
    };
    let Some(found) = answer.services().first() else {
        let reason = answer
            .failures()
            .first()
            .and_then(|f| f.reason())
            .unwrap_or("not found");
        return Row::fail(
            check,
            format!("service {service} in cluster {cluster}: {reason}"),
        );
    };
    let (running, desired) = (found.running_count(), found.desired_count());
    // More than one deployment: a rollout is under way (old and new revisions both count as
    // running); one that the circuit breaker rolled back ends as FAILED.
    let deployments = found.deployments();
    if deployments.len() > 1 {
        return Row::fail(
            check,
            format!(
                "a deployment is in progress ({} deployments, {running} tasks running): run verify again when it settles",
                deployments.len()
            ),
        );
    }
    if let Some(state) = deployments.first().and_then(|d| d.rollout_state()) {
        use aws_sdk_ecs::types::DeploymentRolloutState;
        if *state != DeploymentRolloutState::Completed {
            let reason = deployments[0]
                .rollout_state_reason()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            return Row::fail(
                check,
                format!("the deployment is {}{reason}", state.as_str()),
            );
        }
    }
    if desired > 0 && running >= desired {
        Row::pass(check, format!("{running} running of {desired} desired"))
    } else {
        let event = found
            .events()
            .first()
            .and_then(|e| e.message())
            .map(|m| format!("; latest event: {m}"))
            .unwrap_or_default();
        Row::fail(
            check,
            format!("{running} running of {desired} desired{event}"),
        )
    }
}

async fn targets(config: &SdkConfig, parts: &Parts) -> (Row, Option<usize>) {
    use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;
    let check = "load balancer targets healthy";
    let Some(group) = &parts.target_group else {
        return (missing(check, "TargetGroup resource"), None);
    };
    let answer = aws_sdk_elasticloadbalancingv2::Client::new(config)
        .describe_target_health()
        .target_group_arn(group)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => {
            return (
                Row::fail(check, aws_error("DescribeTargetHealth")(err).to_string()),
                None,
            )
        }
    };
    let mut healthy = 0;
    let mut draining = 0;
    let mut others = Vec::new();
    for description in answer.target_health_descriptions() {
        let target = description
            .target()
            .map(|t| format!("{}:{}", t.id().unwrap_or("?"), t.port().unwrap_or_default()))
            .unwrap_or_default();
        let health = description.target_health();
        match health.and_then(|h| h.state()) {
            Some(TargetHealthStateEnum::Healthy) => healthy += 1,
            // Scale-in and every deploy drain a target for a while: normal, not a failure.
            Some(TargetHealthStateEnum::Draining) => draining += 1,
            state => others.push(format!(
                "{target} {} ({})",
                state.map_or("unknown", |s| s.as_str()),
                health
                    .and_then(|h| h.description().or(h.reason().map(|r| r.as_str())))
                    .unwrap_or("no reason given")
            )),
        }
    }
    let draining_note = if draining > 0 {
        format!(" ({draining} more draining)")
    } else {
        String::new()
    };
    let row = if healthy > 0 && others.is_empty() {
        Row::pass(
            check,
            format!("{healthy} of {healthy} healthy{draining_note}"),
        )
    } else if healthy == 0 && others.is_empty() {
        Row::fail(check, "no target is registered: no task is running")
    } else {
        Row::fail(
            check,
            format!(
                "{healthy} of {} healthy; {}",
                healthy + others.len(),
                others.join("; ")
            ),
        )
    };
    (row, Some(healthy))
}

async fn mount_targets(config: &SdkConfig, parts: &Parts) -> Row {
    use aws_sdk_efs::types::LifeCycleState;
    let check = "EFS mount targets available";
    let Some(file_system) = &parts.file_system else {
        return missing(check, "FileSystemId output");
    };
    let answer = aws_sdk_efs::Client::new(config)
        .describe_mount_targets()
        .file_system_id(file_system)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => return Row::fail(check, aws_error("DescribeMountTargets")(err).to_string()),
    };
    let mut available = Vec::new();
    let mut others = Vec::new();
    for target in answer.mount_targets() {
        let zone = target
            .availability_zone_name()
            .unwrap_or(target.subnet_id())
            .to_owned();
        match target.life_cycle_state() {
            LifeCycleState::Available => available.push(zone),
            state => others.push(format!("{zone} {}", state.as_str())),
        }
    }
    if !available.is_empty() && others.is_empty() {
        Row::pass(check, format!("{file_system} in {}", available.join(", ")))
    } else if available.is_empty() && others.is_empty() {
        Row::fail(
            check,
            format!("{file_system} has no mount target: no host can mount it"),
        )
    } else {
        Row::fail(check, format!("{file_system}: {}", others.join(", ")))
    }
}

async fn backup_plan(config: &SdkConfig, parts: &Parts) -> Row {
    let check = "backup plan";
    let Some(plan) = &parts.backup_plan else {
        return Row::pass(check, "none: backup is off in the settings");
    };
    let answer = aws_sdk_backup::Client::new(config)
        .get_backup_plan()
        .backup_plan_id(plan)
        .send()
        .await;
    match answer {
        Ok(answer) => {
            let name = answer
                .backup_plan()
                .map(|p| p.backup_plan_name())
                .unwrap_or_default();
            let rules = answer.backup_plan().map_or(0, |p| p.rules().len());
            if rules == 0 {
                return Row::fail(
                    check,
                    format!("{name} ({plan}) has no rule: nothing is backed up"),
                );
            }
            // A plan with rules but no selection backs nothing up.
            let selections = aws_sdk_backup::Client::new(config)
                .list_backup_selections()
                .backup_plan_id(plan)
                .send()
                .await;
            match selections {
                Ok(found) if !found.backup_selections_list().is_empty() => Row::pass(
                    check,
                    format!(
                        "{name}, {rules} rule(s), {} selection(s)",
                        found.backup_selections_list().len()
                    ),
                ),
                Ok(_) => Row::fail(
                    check,
                    format!("{name} ({plan}) selects no resource: nothing is backed up"),
                ),
                Err(err) => Row::fail(check, aws_error("ListBackupSelections")(err).to_string()),
            }
        }
        Err(err) => Row::fail(check, aws_error("GetBackupPlan")(err).to_string()),
    }
}

async fn alarms(config: &SdkConfig, parts: &Parts) -> Row {
    use aws_sdk_cloudwatch::types::StateValue;
    let check = "alarms not in ALARM";
    if parts.alarms.is_empty() {
        return missing(check, "alarm outputs");
    }
    let answer = aws_sdk_cloudwatch::Client::new(config)
        .describe_alarms()
        .set_alarm_names(Some(parts.alarms.clone()))
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => return Row::fail(check, aws_error("DescribeAlarms")(err).to_string()),
    };
    let found = answer.metric_alarms();
    let firing: Vec<String> = found
        .iter()
        .filter(|a| a.state_value() == Some(&StateValue::Alarm))
        .map(|a| {
            format!(
                "{} ({})",
                a.alarm_name().unwrap_or("?"),
                a.state_reason().unwrap_or("no reason given")
            )
        })
        .collect();
    let absent: Vec<&str> = parts
        .alarms
        .iter()
        .filter(|name| !found.iter().any(|a| a.alarm_name() == Some(name.as_str())))
        .map(String::as_str)
        .collect();
    if !firing.is_empty() {
        Row::fail(check, format!("in ALARM: {}", firing.join("; ")))
    } else if !absent.is_empty() {
        Row::fail(check, format!("missing: {}", absent.join(", ")))
    } else {
        let waiting = found
            .iter()
            .filter(|a| a.state_value() == Some(&StateValue::InsufficientData))
            .count();
        Row::pass(
            check,
            format!(
                "{} alarm(s), none firing ({waiting} without data yet)",
                found.len()
            ),
        )
    }
}

/// An alarm's name from its ARN (`arn:aws:cloudwatch:<region>:<account>:alarm:<name>`).
pub fn alarm_name(arn: &str) -> Option<&str> {
    arn.split_once(":alarm:").map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_names_come_from_their_arns() {
        assert_eq!(
            alarm_name("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:wh-prod-5xx"),
            Some("wh-prod-5xx")
        );
        assert_eq!(alarm_name("wh-prod-5xx"), None);
    }
}
