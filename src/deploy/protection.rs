//! Deletion protection of the stack and its load balancer: on where `Settings::protected`
//! says (production by default), so that neither a stray `delete-stack` nor a click in the
//! console takes the appliance down, and turned off by `destroy` once the user has confirmed.

use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata;
use aws_sdk_elasticloadbalancingv2::types::LoadBalancerAttribute;

use super::stack::{aws_error, DeployError, StackClient, StackState};
use super::template::{LOAD_BALANCER_OUTPUT, LOAD_BALANCER_RESOURCE, PROTECTED_OUTPUT};

/// Makes the stack's termination protection what the settings want, if it is not already.
/// Returns whether it changed.
pub async fn sync_termination_protection(
    stack: &StackClient,
    state: &StackState,
    wanted: bool,
) -> Result<bool, DeployError> {
    if state.termination_protection == wanted {
        return Ok(false);
    }
    stack.set_termination_protection(wanted).await?;
    Ok(true)
}

/// What `destroy` turned off before deleting the stack.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    pub termination_protection: bool,
    pub load_balancer: bool,
}

/// Turns off whatever protection would stop the stack's deletion: the load balancer's
/// deletion protection, which would fail the delete halfway (with the service and hosts
/// already gone), then the stack's termination protection, so that a failure on the way
/// leaves the stack protected.
///
/// A stack whose first create failed has no outputs: its load balancer is then found
/// among its resources, and released whatever the settings were.
pub async fn release(
    stack: &StackClient,
    state: &StackState,
    elb: &aws_sdk_elasticloadbalancingv2::Client,
) -> Result<Released, DeployError> {
    let mut released = Released::default();
    let load_balancer = match state.output(PROTECTED_OUTPUT) {
        Some("true") => state.output(LOAD_BALANCER_OUTPUT).map(str::to_owned),
        Some(_) => None,
        None => stack.physical_id(LOAD_BALANCER_RESOURCE).await?,
    };
    if let Some(arn) = load_balancer {
        released.load_balancer = release_load_balancer(elb, &arn).await?;
    }
    if state.termination_protection {
        stack.set_termination_protection(false).await?;
        released.termination_protection = true;
    }
    Ok(released)
}

/// Turns off a load balancer's deletion protection. `false` when it is gone already.
async fn release_load_balancer(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    arn: &str,
) -> Result<bool, DeployError> {
    let attribute = LoadBalancerAttribute::builder()
        .key("deletion_protection.enabled")
        .value("false")
        .build();
    match elb
        .modify_load_balancer_attributes()
        .load_balancer_arn(arn)
        .attributes(attribute)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        // Deleted by hand: nothing holds the stack back.
        Err(err) if err.code() == Some("LoadBalancerNotFound") => Ok(false),
        Err(err) => Err(aws_error(
            "ModifyLoadBalancerAttributes (turning off deletion protection)",
        )(err)),
    }
}
