//! The vCPUs and memory of an instance type the built-in sizing table does not know, asked of
//! EC2 (`DescribeInstanceTypes`), so that any type the region offers can be sized.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::InstanceType;

use super::settings::Settings;
use super::stack::{aws_error, DeployError};

/// Fills `instance_vcpus` and `instance_memory_mib` from EC2 when the settings give neither
/// and the table does not know `instance_type`. A type EC2 does not know either is left as it
/// is, for validation to name it.
pub async fn resolve(
    settings: &mut Settings,
    ec2: &aws_sdk_ec2::Client,
) -> Result<(), DeployError> {
    if settings.instance_spec().is_some()
        || settings.instance_vcpus.is_some()
        || settings.instance_memory_mib.is_some()
    {
        return Ok(());
    }
    let answer = ec2
        .describe_instance_types()
        .instance_types(InstanceType::from(settings.instance_type.as_str()))
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) if err.code() == Some("InvalidInstanceType") => return Ok(()),
        Err(err) => return Err(aws_error("DescribeInstanceTypes")(err)),
    };
    let Some(found) = answer.instance_types().first() else {
        return Ok(());
    };
    let vcpus = found.v_cpu_info().and_then(|v| v.default_v_cpus());
    let memory = found.memory_info().and_then(|m| m.size_in_mib());
    if let (Some(vcpus), Some(memory)) = (vcpus, memory) {
        settings.instance_vcpus = u32::try_from(vcpus).ok();
        settings.instance_memory_mib = u32::try_from(memory).ok();
    }
    Ok(())
}
