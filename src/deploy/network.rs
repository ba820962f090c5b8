//! Where the stack goes: the region of the clients, and the VPC, given in the settings or
//! looked up from the subnets.

use super::settings::Settings;
use super::stack::{aws_error as aws, DeployError};
use super::template::Network;

/// The region of `ec2`, and the VPC id and CIDR the settings leave out, from EC2. Every subnet
/// must be in that one VPC.
pub async fn resolve(
    settings: &Settings,
    ec2: &aws_sdk_ec2::Client,
) -> Result<Network, DeployError> {
    let region = ec2
        .config()
        .region()
        .map(ToString::to_string)
        .ok_or_else(|| DeployError::Aws {
            action: "choosing the region",
            code: "NoRegion".into(),
            message: "no AWS region is configured: pass --region or set AWS_REGION (the template depends on it)".into(),
        })?;
    if let (Some(vpc_id), Some(vpc_cidr)) = (&settings.vpc_id, &settings.vpc_cidr) {
        return Ok(Network {
            region,
            vpc_id: vpc_id.clone(),
            vpc_cidr: vpc_cidr.clone(),
        });
    }
    let subnets: Vec<String> = settings
        .asg_subnets
        .iter()
        .chain(&settings.lb_subnets)
        .cloned()
        .collect();
    let described = ec2
        .describe_subnets()
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .map_err(aws("DescribeSubnets"))?;
    let mut vpcs: Vec<String> = described
        .subnets()
        .iter()
        .filter_map(|s| s.vpc_id().map(str::to_owned))
        .collect();
    vpcs.sort();
    vpcs.dedup();
    let vpc_id = match (&settings.vpc_id, vpcs.as_slice()) {
        (Some(given), found) if found.iter().all(|v| v == given) => given.clone(),
        (Some(given), found) => {
            return Err(DeployError::Aws {
                action: "checking subnets",
                code: "SubnetNotInVpc".into(),
                message: format!("vpc_id is {given} but the subnets are in {found:?}"),
            })
        }
        (None, [one]) => one.clone(),
        (None, found) => {
            return Err(DeployError::Aws {
                action: "deriving vpc_id",
                code: "AmbiguousVpc".into(),
                message: format!("the subnets must all be in one VPC, they are in {found:?}"),
            })
        }
    };
    let vpc_cidr = match &settings.vpc_cidr {
        Some(cidr) => cidr.clone(),
        None => {
            let vpcs = ec2
                .describe_vpcs()
                .vpc_ids(&vpc_id)
                .send()
                .await
                .map_err(aws("DescribeVpcs"))?;
            vpcs.vpcs()
                .first()
                .and_then(|v| v.cidr_block())
                .map(str::to_owned)
                .ok_or_else(|| DeployError::Aws {
                    action: "DescribeVpcs",
                    code: "NoCidr".into(),
                    message: format!("VPC {vpc_id} has no IPv4 CIDR block"),
                })?
        }
    };
    Ok(Network {
        region,
        vpc_id,
        vpc_cidr,
    })
}
