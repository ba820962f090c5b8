//! The stack as CloudFormation holds it: the only state there is. Every call here is one
//! CloudFormation operation or a poll of one; nothing prints (see `render` and `commands`).

use std::time::Duration;

use aws_sdk_cloudformation::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudformation::types::{
    Capability, ChangeAction, ChangeSetStatus, ChangeSetType, StackDriftDetectionStatus,
};
use aws_sdk_cloudformation::Client;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::DateTime;

/// Failures of the deploy workflow. AWS errors carry the service's code and message, never a
/// debug dump.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{action} failed: {code}: {message}")]
    Aws {
        action: &'static str,
        code: String,
        message: String,
    },
    #[error("{action} failed: {detail}")]
    Transport {
        action: &'static str,
        detail: String,
    },
    #[error("the change set could not be created: {reason}")]
    ChangeSetFailed { reason: String },
    #[error("stack {stack} is busy ({status}); wait until it settles and try again")]
    Busy { stack: String, status: String },
    #[error("stack {stack} is in {status}: it never got created and can only be deleted and created again")]
    NeedsRecreate { stack: String, status: String },
    #[error("stack {stack} does not exist")]
    NoStack { stack: String },
    #[error("stack {stack} has no output {output:?}")]
    MissingOutput { stack: String, output: String },
    #[error("drift detection failed: {reason}")]
    DriftFailed { reason: String },
}

/// An AWS SDK error, from any service, as the deploy tool reports it.
pub(crate) fn aws_error<E>(action: &'static str) -> impl FnOnce(SdkError<E>) -> DeployError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |err| match err.code() {
        Some(code) => DeployError::Aws {
            action,
            code: code.to_owned(),
            message: err.message().unwrap_or_default().to_owned(),
        },
        None => DeployError::Transport {
            action,
            detail: DisplayErrorContext(&err).to_string(),
        },
    }
}

/// CloudFormation's way of saying there is no such stack (a validation error, not a 404).
fn is_missing_stack(err: &impl ProvideErrorMetadata) -> bool {
    err.code() == Some("ValidationError")
        && err.message().is_some_and(|m| m.contains("does not exist"))
}

/// A stack's status and outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackState {
    pub status: String,
    pub reason: Option<String>,
    pub termination_protection: bool,
    /// (key, value, description), in the order CloudFormation gives them.
    pub outputs: Vec<(String, String, Option<String>)>,
}

impl StackState {
    pub fn output(&self, key: &str) -> Option<&str> {
        self.outputs
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }
}

/// Whether a status is final (nothing is happening to the stack).
pub fn is_settled(status: &str) -> bool {
    !status.ends_with("_IN_PROGRESS")
}

/// Whether a settled status means the last operation did what was asked.
pub fn is_success(status: &str) -> bool {
    matches!(
        status,
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "DELETE_COMPLETE" | "IMPORT_COMPLETE"
    )
}

/// Whether an event's status says something went wrong, for colouring and failure reports.
pub fn is_failure(status: &str) -> bool {
    status.ends_with("_FAILED") || status.contains("ROLLBACK")
}

/// What a change set will do to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDiff {
    pub action: DiffAction,
    pub logical_id: String,
    pub resource_type: String,
    /// CloudFormation's `Replacement`: "True", "Conditional" or "False".
    pub replacement: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiffAction {
    Add,
    Modify,
    Remove,
    Other,
}

/// A reviewed change set, ready to run or to throw away.
#[derive(Debug, Clone)]
pub struct Preview {
    /// `None` when there is nothing to change (the empty change set is already deleted).
    pub change_set_id: Option<String>,
    pub creates_stack: bool,
    pub changes: Vec<ResourceDiff>,
}

/// One stack event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackEvent {
    pub id: String,
    pub timestamp: DateTime,
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: Option<String>,
}

/// One resource's drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDrift {
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    /// (property path, expected, actual, difference type)
    pub differences: Vec<(String, String, String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftReport {
    pub stack_status: String,
    pub drifted_resources: usize,
    pub resources: Vec<ResourceDrift>,
}

/// The messages CloudFormation uses for an update that changes nothing.
fn means_no_changes(reason: &str) -> bool {
    reason.contains("didn't contain changes")
        || reason.contains("No updates are to be performed")
        || reason.contains("does not contain changes")
}

/// One stack, by name.
#[derive(Clone)]
pub struct StackClient {
    cfn: Client,
    name: String,
    poll: Duration,
}

impl StackClient {
    pub fn new(cfn: Client, name: impl Into<String>) -> Self {
        Self {
            cfn,
            name: name.into(),
            poll: Duration::from_secs(3),
        }
    }

    /// How often to poll while waiting (tests make it short).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stack's state, or `None` when there is no such stack.
    pub async fn state(&self) -> Result<Option<StackState>, DeployError> {
        let result = self
            .cfn
            .describe_stacks()
            .stack_name(&self.name)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(err) if is_missing_stack(&err) => return Ok(None),
            Err(err) => return Err(aws_error("DescribeStacks")(err)),
        };
        let Some(stack) = output.stacks().first() else {
            return Ok(None);
        };
        Ok(Some(StackState {
            status: stack
                .stack_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            reason: stack.stack_status_reason().map(str::to_owned),
            termination_protection: stack.enable_termination_protection().unwrap_or(false),
            outputs: stack
                .outputs()
                .iter()
                .map(|o| {
                    (
                        o.output_key().unwrap_or_default().to_owned(),
                        o.output_value().unwrap_or_default().to_owned(),
                        o.description().map(str::to_owned),
                    )
                })
                .collect(),
        }))
    }

    pub async fn require_state(&self) -> Result<StackState, DeployError> {
        self.state().await?.ok_or_else(|| DeployError::NoStack {
            stack: self.name.clone(),
        })
    }

    /// Creates a change set for `template` and describes it. A stack that does not exist yet
    /// (or only as the shell an unexecuted change set leaves) gets a CREATE change set.
    pub async fn preview(&self, template: &str) -> Result<Preview, DeployError> {
        let creates_stack = match self.state().await? {
            None => true,
            Some(state) if state.status == "REVIEW_IN_PROGRESS" => true,
            Some(state)
                if state.status == "ROLLBACK_COMPLETE" || state.status == "ROLLBACK_FAILED" =>
            {
                return Err(DeployError::NeedsRecreate {
                    stack: self.name.clone(),
                    status: state.status,
                })
            }
            Some(state) if !is_settled(&state.status) => {
                return Err(DeployError::Busy {
                    stack: self.name.clone(),
                    status: state.status,
                })
            }
            Some(_) => false,
        };
        let name = format!(
            "wheelhouse-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        );
        let created = self
            .cfn
            .create_change_set()
            .stack_name(&self.name)
            .change_set_name(&name)
            .template_body(template)
            .capabilities(Capability::CapabilityIam)
            .capabilities(Capability::CapabilityNamedIam)
            .change_set_type(if creates_stack {
                ChangeSetType::Create
            } else {
                ChangeSetType::Update
            })
            .send()
            .await
            .map_err(aws_error("CreateChangeSet"))?;
        let id = created.id().unwrap_or(&name).to_owned();
        loop {
            let described = self
                .cfn
                .describe_change_set()
                .stack_name(&self.name)
                .change_set_name(&id)
                .send()
                .await
                .map_err(aws_error("DescribeChangeSet"))?;
            match described.status() {
                Some(ChangeSetStatus::CreateComplete) => break,
                Some(ChangeSetStatus::Failed) => {
                    let reason = described.status_reason().unwrap_or_default().to_owned();
                    if means_no_changes(&reason) {
                        self.cfn
                            .delete_change_set()
                            .stack_name(&self.name)
                            .change_set_name(&id)
                            .send()
                            .await
                            .map_err(aws_error("DeleteChangeSet"))?;
                        return Ok(Preview {
                            change_set_id: None,
                            creates_stack,
                            changes: Vec::new(),
                        });
                    }
                    return Err(DeployError::ChangeSetFailed { reason });
                }
                _ => tokio::time::sleep(self.poll).await,
            }
        }
        let mut changes = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = self
                .cfn
                .describe_change_set()
                .stack_name(&self.name)
                .change_set_name(&id)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(aws_error("DescribeChangeSet"))?;
            for change in page.changes() {
                let Some(rc) = change.resource_change() else {
                    continue;
                };
                changes.push(ResourceDiff {
                    action: match rc.action() {
                        Some(ChangeAction::Add) => DiffAction::Add,
                        Some(ChangeAction::Modify) => DiffAction::Modify,
                        Some(ChangeAction::Remove) => DiffAction::Remove,
                        _ => DiffAction::Other,
                    },
                    logical_id: rc.logical_resource_id().unwrap_or_default().to_owned(),
                    resource_type: rc.resource_type().unwrap_or_default().to_owned(),
                    replacement: rc.replacement().map(|r| r.as_str().to_owned()),
                });
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        Ok(Preview {
            change_set_id: Some(id),
            creates_stack,
            changes,
        })
    }

    /// Throws a reviewed change set away; for a new stack, also the empty shell it made.
    pub async fn discard(&self, preview: &Preview) -> Result<(), DeployError> {
        let Some(id) = &preview.change_set_id else {
            return Ok(());
        };
        self.cfn
            .delete_change_set()
            .stack_name(&self.name)
            .change_set_name(id)
            .send()
            .await
            .map_err(aws_error("DeleteChangeSet"))?;
        if preview.creates_stack {
            self.delete().await?;
        }
        Ok(())
    }

    pub async fn execute(&self, preview: &Preview) -> Result<(), DeployError> {
        let Some(id) = &preview.change_set_id else {
            return Ok(());
        };
        self.cfn
            .execute_change_set()
            .stack_name(&self.name)
            .change_set_name(id)
            .send()
            .await
            .map_err(aws_error("ExecuteChangeSet"))?;
        Ok(())
    }

    /// The physical id of the stack's resource `logical_id`, if it exists.
    pub async fn physical_id(&self, logical_id: &str) -> Result<Option<String>, DeployError> {
        match self
            .cfn
            .describe_stack_resource()
            .stack_name(&self.name)
            .logical_resource_id(logical_id)
            .send()
            .await
        {
            Ok(output) => Ok(output
                .stack_resource_detail()
                .and_then(|r| r.physical_resource_id())
                .filter(|id| !id.is_empty())
                .map(str::to_owned)),
            Err(err) if err.code() == Some("ValidationError") => Ok(None),
            Err(err) => Err(aws_error("DescribeStackResource")(err)),
        }
    }

    /// Turns the stack's termination protection on or off.
    pub async fn set_termination_protection(&self, on: bool) -> Result<(), DeployError> {
        self.cfn
            .update_termination_protection()
            .stack_name(&self.name)
            .enable_termination_protection(on)
            .send()
            .await
            .map_err(aws_error("UpdateTerminationProtection"))?;
        Ok(())
    }

    pub async fn delete(&self) -> Result<(), DeployError> {
        self.cfn
            .delete_stack()
            .stack_name(&self.name)
            .send()
            .await
            .map_err(aws_error("DeleteStack"))?;
        Ok(())
    }

    /// Events newer than `since`, oldest first. Pages through DescribeStackEvents (newest
    /// first) only as far back as needed.
    pub async fn events_since(&self, since: &DateTime) -> Result<Vec<StackEvent>, DeployError> {
        let mut events = Vec::new();
        let mut next_token: Option<String> = None;
        'pages: loop {
            let page = match self
                .cfn
                .describe_stack_events()
                .stack_name(&self.name)
                .set_next_token(next_token.take())
                .send()
                .await
            {
                Ok(page) => page,
                // The stack is gone: a finished delete has no more events to show.
                Err(err) if is_missing_stack(&err) => {
                    break;
                }
                Err(err) => return Err(aws_error("DescribeStackEvents")(err)),
            };
            for event in page.stack_events() {
                let Some(timestamp) = event.timestamp() else {
                    continue;
                };
                if timestamp.as_nanos() <= since.as_nanos() {
                    break 'pages;
                }
                events.push(StackEvent {
                    id: event.event_id().unwrap_or_default().to_owned(),
                    timestamp: *timestamp,
                    logical_id: event.logical_resource_id().unwrap_or_default().to_owned(),
                    resource_type: event.resource_type().unwrap_or_default().to_owned(),
                    status: event
                        .resource_status()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    reason: event.resource_status_reason().map(str::to_owned),
                });
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        events.reverse();
        Ok(events)
    }

    /// Follows the stack until it settles, handing each new event to `on_event`. Returns the
    /// final state, or `None` when the stack is gone (a finished delete).
    pub async fn follow(
        &self,
        since: DateTime,
        mut on_event: impl FnMut(&StackEvent),
    ) -> Result<Option<StackState>, DeployError> {
        let mut seen = std::collections::HashSet::new();
        let mut since = since;
        loop {
            for event in self.events_since(&since).await? {
                if seen.insert(event.id.clone()) {
                    on_event(&event);
                }
                // Events can share a timestamp; `seen` keeps the boundary ones from repeating.
                if event.timestamp.as_nanos() > since.as_nanos() + 1 {
                    since = DateTime::from_nanos(event.timestamp.as_nanos() - 1)
                        .unwrap_or(event.timestamp);
                }
            }
            match self.state().await? {
                None => return Ok(None),
                Some(state) if is_settled(&state.status) => return Ok(Some(state)),
                Some(_) => tokio::time::sleep(self.poll).await,
            }
        }
    }

    /// Runs drift detection and reports every resource.
    pub async fn detect_drift(&self) -> Result<DriftReport, DeployError> {
        let detection = self
            .cfn
            .detect_stack_drift()
            .stack_name(&self.name)
            .send()
            .await
            .map_err(aws_error("DetectStackDrift"))?;
        let id = detection
            .stack_drift_detection_id()
            .unwrap_or_default()
            .to_owned();
        let status = loop {
            let status = self
                .cfn
                .describe_stack_drift_detection_status()
                .stack_drift_detection_id(&id)
                .send()
                .await
                .map_err(aws_error("DescribeStackDriftDetectionStatus"))?;
            match status.detection_status() {
                Some(StackDriftDetectionStatus::DetectionInProgress) | None => {
                    tokio::time::sleep(self.poll).await
                }
                Some(StackDriftDetectionStatus::DetectionFailed) => {
                    return Err(DeployError::DriftFailed {
                        reason: status
                            .detection_status_reason()
                            .unwrap_or("no reason given")
                            .to_owned(),
                    })
                }
                _ => break status,
            }
        };
        let mut resources = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = self
                .cfn
                .describe_stack_resource_drifts()
                .stack_name(&self.name)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(aws_error("DescribeStackResourceDrifts"))?;
            for drift in page.stack_resource_drifts() {
                resources.push(ResourceDrift {
                    logical_id: drift.logical_resource_id().unwrap_or_default().to_owned(),
                    resource_type: drift.resource_type().unwrap_or_default().to_owned(),
                    status: drift
                        .stack_resource_drift_status()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    differences: drift
                        .property_differences()
                        .iter()
                        .map(|d| {
                            (
                                d.property_path().unwrap_or_default().to_owned(),
                                d.expected_value().unwrap_or_default().to_owned(),
                                d.actual_value().unwrap_or_default().to_owned(),
                                d.difference_type()
                                    .map(|t| t.as_str().to_owned())
                                    .unwrap_or_default(),
                            )
                        })
                        .collect(),
                });
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        resources.sort_by(|a, b| a.logical_id.cmp(&b.logical_id));
        Ok(DriftReport {
            stack_status: status
                .stack_drift_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            drifted_resources: usize::try_from(status.drifted_stack_resource_count().unwrap_or(0))
                .unwrap_or(0),
            resources,
        })
    }

    /// The newest event's time, so that following starts after it.
    pub async fn latest_event_time(&self) -> Result<DateTime, DeployError> {
        let page = match self
            .cfn
            .describe_stack_events()
            .stack_name(&self.name)
            .send()
            .await
        {
            Ok(page) => page,
            Err(err) if is_missing_stack(&err) => return Ok(DateTime::from_secs(0)),
            Err(err) => return Err(aws_error("DescribeStackEvents")(err)),
        };
        Ok(page
            .stack_events()
            .first()
            .and_then(|e| e.timestamp().copied())
            .unwrap_or(DateTime::from_secs(0)))
    }
}
