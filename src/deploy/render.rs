//! What the user sees: the change set as a diff, events as they happen, outputs and drift.
//! Colour only when the output is a terminal (`console` decides).

use std::collections::BTreeMap;
use std::fmt::Write;

use console::style;

use super::stack::{is_failure, DiffAction, DriftReport, Preview, StackEvent, StackState};

/// What `preview` and `up` say when the account lacks the ECS service-linked role.
pub fn ecs_role_to_create() -> String {
    format!(
        "+ IAM role {} (outside the stack): this account has never used ECS, and its cluster needs the role; `up` creates it first (iam:CreateServiceLinkedRole for ecs.amazonaws.com)",
        super::account::ECS_ROLE
    )
}

/// The change set grouped by resource type: `+` add, `~` modify, `-` remove, with replacements
/// flagged.
pub fn diff(stack: &str, preview: &Preview) -> String {
    if preview.changes.is_empty() {
        return format!("Stack {stack}: no changes\n");
    }
    let count = |action| {
        preview
            .changes
            .iter()
            .filter(|c| c.action == action)
            .count()
    };
    let replaced = preview
        .changes
        .iter()
        .filter(|c| c.replacement.as_deref() == Some("True"))
        .count();
    let mut out = format!(
        "Stack {stack} ({}): {} to add, {} to change ({replaced} replaced), {} to remove\n",
        if preview.creates_stack {
            "new"
        } else {
            "update"
        },
        count(DiffAction::Add),
        count(DiffAction::Modify),
        count(DiffAction::Remove),
    );
    let mut by_type: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for change in &preview.changes {
        by_type
            .entry(&change.resource_type)
            .or_default()
            .push(change);
    }
    for (resource_type, mut changes) in by_type {
        changes.sort_by(|a, b| {
            a.action
                .cmp(&b.action)
                .then(a.logical_id.cmp(&b.logical_id))
        });
        let _ = writeln!(out, "\n{}", style(resource_type).bold());
        for change in changes {
            let (sign, line) = match change.action {
                DiffAction::Add => ("+", style(format!("  + {}", change.logical_id)).green()),
                DiffAction::Modify => ("~", style(format!("  ~ {}", change.logical_id)).yellow()),
                DiffAction::Remove => ("-", style(format!("  - {}", change.logical_id)).red()),
                DiffAction::Other => ("?", style(format!("  ? {}", change.logical_id))),
            };
            let note = match (sign, change.replacement.as_deref()) {
                ("~", Some("True")) => format!(" {}", style("(replacement)").red().bold()),
                ("~", Some("Conditional")) => format!(" {}", style("(may be replaced)").red()),
                _ => String::new(),
            };
            let _ = writeln!(out, "{line}{note}");
        }
    }
    out
}

/// One event as a line: time, status, resource and reason.
pub fn event(event: &StackEvent) -> String {
    let status = if is_failure(&event.status) {
        style(event.status.as_str()).red().to_string()
    } else if event.status.ends_with("_COMPLETE") {
        style(event.status.as_str()).green().to_string()
    } else {
        style(event.status.as_str()).yellow().to_string()
    };
    let time = event
        .timestamp
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default();
    let mut line = format!(
        "{time}  {status:<30}  {} ({})",
        event.logical_id, event.resource_type
    );
    if let Some(reason) = event.reason.as_deref().filter(|r| !r.is_empty()) {
        let _ = write!(line, ": {reason}");
    }
    line
}

/// The events that explain a failure: each failed resource once, with its reason. The
/// stack's own events and failures without a reason (resources cancelled because another
/// failed) only repeat what the first failure says.
pub fn failures(events: &[StackEvent]) -> String {
    let mut out = String::new();
    let mut reported = std::collections::HashSet::new();
    for event in events.iter().filter(|e| {
        e.status.ends_with("_FAILED")
            && e.resource_type != "AWS::CloudFormation::Stack"
            && e.reason.as_deref().is_some_and(|r| !r.is_empty())
    }) {
        if !reported.insert(event.logical_id.as_str()) {
            continue;
        }
        let _ = writeln!(
            out,
            "  {} ({}): {}",
            event.logical_id,
            event.resource_type,
            event.reason.as_deref().unwrap_or("no reason given")
        );
    }
    out
}

pub fn outputs_table(state: &StackState) -> String {
    let width = state
        .outputs
        .iter()
        .map(|(k, _, _)| k.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value, _) in &state.outputs {
        let _ = writeln!(out, "{key:<width$}  {value}");
    }
    out
}

pub fn outputs_json(state: &StackState) -> String {
    let map: BTreeMap<&str, &str> = state
        .outputs
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string_pretty(&map).expect("a map of strings serializes")
}

pub fn drift(stack: &str, report: &DriftReport) -> String {
    let mut out = format!(
        "Stack {stack}: {} ({} resource(s) drifted)\n",
        report.stack_status, report.drifted_resources
    );
    for resource in &report.resources {
        let status = match resource.status.as_str() {
            "IN_SYNC" => style(resource.status.as_str()).green(),
            "NOT_CHECKED" => style(resource.status.as_str()).dim(),
            _ => style(resource.status.as_str()).red(),
        };
        let _ = writeln!(
            out,
            "  {status:<12} {} ({})",
            resource.logical_id, resource.resource_type
        );
        for (path, expected, actual, kind) in &resource.differences {
            let _ = writeln!(
                out,
                "      {kind} {path}: expected {expected}, actual {actual}"
            );
        }
    }
    out
}
