//! What the account must hold before the stack can be created, and that the stack cannot
//! create itself: the ECS service-linked role.
//!
//! An account that has never used ECS has no `AWSServiceRoleForECS`, and the cluster and
//! capacity provider fail on the first create without it. It cannot go in the template: every
//! account that already has it would fail to create it again. So it is looked up before the
//! change set, `preview` says it will be created, and `up` creates it.

use aws_sdk_iam::error::ProvideErrorMetadata;

use super::stack::{aws_error, DeployError};

/// The role ECS uses in every account, and the service it belongs to.
pub const ECS_ROLE: &str = "AWSServiceRoleForECS";
const ECS_SERVICE: &str = "ecs.amazonaws.com";

/// Whether the account holds the ECS service-linked role.
pub async fn has_ecs_role(iam: &aws_sdk_iam::Client) -> Result<bool, DeployError> {
    match iam.get_role().role_name(ECS_ROLE).send().await {
        Ok(_) => Ok(true),
        Err(err) if err.code() == Some("NoSuchEntity") => Ok(false),
        Err(err) => Err(aws_error("GetRole (the ECS service-linked role)")(err)),
    }
}

/// Creates the ECS service-linked role. One created meanwhile (another deploy, the console)
/// is as good.
pub async fn create_ecs_role(iam: &aws_sdk_iam::Client) -> Result<(), DeployError> {
    match iam
        .create_service_linked_role()
        .aws_service_name(ECS_SERVICE)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(err)
            if err.code() == Some("InvalidInput")
                && err.message().is_some_and(|m| m.contains("has been taken")) =>
        {
            Ok(())
        }
        Err(err) => Err(aws_error(
            "CreateServiceLinkedRole (the ECS service-linked role)",
        )(err)),
    }
}

/// How long a role just created is given before ECS is asked to use it: IAM is eventually
/// consistent, and a cluster created right after the role can fail to assume it.
const ROLE_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until a role just created is visible (at most a minute), then lets it settle.
pub async fn await_ecs_role(iam: &aws_sdk_iam::Client) -> Result<(), DeployError> {
    for _ in 0..30 {
        if has_ecs_role(iam).await? {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    tokio::time::sleep(ROLE_SETTLE).await;
    Ok(())
}
