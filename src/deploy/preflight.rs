//! The account and network checked before any change set, with read-only calls: what a real
//! account gets wrong that CloudFormation would only find out halfway through a create (or,
//! for hosts that cannot reach AWS, never: they are replaced forever).
//!
//! Every problem names the setting to change, what is wrong and how to fix it; all are
//! reported at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use aws_sdk_ec2::types::{Filter, LocationType, RouteTable, VpcAttributeName, VpcEndpoint};

use super::settings::Settings;
use super::stack::{aws_error, DeployError};

/// One thing the account or network lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

/// The interface endpoints hosts without a NAT need (ECR's two and S3 for the image, ECS's
/// three for the agent, CloudWatch Logs, Secrets Manager for the credentials).
const INTERFACE_ENDPOINTS: &[&str] = &[
    "ecr.api",
    "ecr.dkr",
    "ecs",
    "ecs-agent",
    "ecs-telemetry",
    "logs",
    "secretsmanager",
];

/// What CloudFormation takes as a stack name, and what every name derived from it needs.
pub fn stack_name_problem(name: &str) -> Option<Problem> {
    let valid = name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (!valid).then(|| Problem {
        setting: "--stack",
        message: format!(
            "{name:?} is not a CloudFormation stack name: a letter, then letters, digits and -, at most 128 characters"
        ),
    })
}

/// Every check of the network, in the region `ec2` is for.
pub async fn check(
    settings: &Settings,
    ec2: &aws_sdk_ec2::Client,
) -> Result<Vec<Problem>, DeployError> {
    let mut problems = Vec::new();
    let region = ec2
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_default();

    let wanted: Vec<String> = settings
        .asg_subnets
        .iter()
        .chain(&settings.lb_subnets)
        .cloned()
        .collect();
    // A filter, not SubnetIds: an unknown id is then simply absent instead of failing the call.
    let described = ec2
        .describe_subnets()
        .filters(filter("subnet-id", &wanted))
        .send()
        .await
        .map_err(aws_error("DescribeSubnets"))?;
    let subnets: BTreeMap<String, Subnet> = described
        .subnets()
        .iter()
        .filter_map(|s| {
            Some((
                s.subnet_id()?.to_owned(),
                Subnet {
                    vpc: s.vpc_id()?.to_owned(),
                    zone: s.availability_zone()?.to_owned(),
                    public_ips: s.map_public_ip_on_launch().unwrap_or(false),
                },
            ))
        })
        .collect();
    for (setting, ids) in [
        ("asg_subnets", &settings.asg_subnets),
        ("lb_subnets", &settings.lb_subnets),
    ] {
        for id in ids.iter().filter(|id| !subnets.contains_key(*id)) {
            problems.push(Problem {
                setting,
                message: format!("{id} does not exist in {region}: check the id and the region"),
            });
        }
    }

    let vpcs: BTreeSet<&str> = subnets.values().map(|s| s.vpc.as_str()).collect();
    if vpcs.len() > 1 {
        let by_vpc: Vec<String> = subnets
            .iter()
            .map(|(id, s)| format!("{id} in {}", s.vpc))
            .collect();
        problems.push(Problem {
            setting: "asg_subnets",
            message: format!(
                "every subnet (asg_subnets and lb_subnets) must be in one VPC: {}",
                by_vpc.join(", ")
            ),
        });
        return Ok(problems);
    }
    let Some(vpc) = vpcs.first().map(|v| v.to_string()) else {
        return Ok(problems);
    };
    if let Some(given) = settings.vpc_id.as_deref().filter(|given| *given != vpc) {
        problems.push(Problem {
            setting: "vpc_id",
            message: format!("is {given}, but the subnets are in {vpc}: leave vpc_id out, or use that VPC's subnets"),
        });
    }

    let asg_zones = by_zone(&settings.asg_subnets, &subnets);
    let lb_zones = by_zone(&settings.lb_subnets, &subnets);
    for (az, ids) in asg_zones.iter().filter(|(_, ids)| ids.len() > 1) {
        problems.push(Problem {
            setting: "asg_subnets",
            message: format!(
                "{} are all in {az}: EFS takes one mount target per Availability Zone, so the second fails (MountTargetConflict); keep one subnet per zone",
                join(ids)
            ),
        });
    }
    for (az, ids) in lb_zones.iter().filter(|(_, ids)| ids.len() > 1) {
        problems.push(Problem {
            setting: "lb_subnets",
            message: format!(
                "{} are all in {az}: a load balancer takes one subnet per Availability Zone; keep one subnet per zone",
                join(ids)
            ),
        });
    }
    if lb_zones.len() == 1 {
        problems.push(Problem {
            setting: "lb_subnets",
            message: format!(
                "every subnet is in {}: a load balancer needs subnets in at least two Availability Zones",
                lb_zones.keys().next().map_or("", String::as_str)
            ),
        });
    }
    if !lb_zones.is_empty() {
        for (az, ids) in asg_zones
            .iter()
            .filter(|(az, _)| !lb_zones.contains_key(*az))
        {
            problems.push(Problem {
                setting: "asg_subnets",
                message: format!(
                    "no subnet of lb_subnets is in {az} (the zone of {}): the load balancer would not send traffic to tasks there, and they would never pass its health check; add a subnet in {az} to lb_subnets",
                    join(ids)
                ),
            });
        }
    }

    let tables = ec2
        .describe_route_tables()
        .filters(filter("vpc-id", std::slice::from_ref(&vpc)))
        .send()
        .await
        .map_err(aws_error("DescribeRouteTables"))?;
    let tables = tables.route_tables();
    for id in settings
        .lb_subnets
        .iter()
        .filter(|id| subnets.contains_key(*id))
    {
        if !route_table_of(tables, id).is_some_and(|t| default_route(t, Egress::Inbound)) {
            problems.push(Problem {
                setting: "lb_subnets",
                message: format!(
                    "{id} has no route to an internet gateway (0.0.0.0/0 via igw-...): an internet-facing load balancer cannot be reached in it; use public subnets"
                ),
            });
        }
    }
    let endpoints = ec2
        .describe_vpc_endpoints()
        .filters(filter("vpc-id", std::slice::from_ref(&vpc)))
        .send()
        .await
        .map_err(aws_error("DescribeVpcEndpoints"))?;
    problems.extend(host_egress_problems(
        settings,
        &subnets,
        tables,
        endpoints.vpc_endpoints(),
        &region,
    ));
    problems.extend(dns_problems(ec2, &vpc).await?);
    problems.extend(offering_problems(settings, ec2, &asg_zones).await?);
    Ok(problems)
}

/// Whether every host subnet reaches AWS: through a NAT (or another way out that translates
/// private addresses), through an internet gateway when its instances get public addresses,
/// or through the VPC endpoints the hosts need, with the image in this region's ECR.
fn host_egress_problems(
    settings: &Settings,
    subnets: &BTreeMap<String, Subnet>,
    tables: &[RouteTable],
    endpoints: &[VpcEndpoint],
    region: &str,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    // China's regions name their endpoints under cn.com.amazonaws.
    let prefix = if region.starts_with("cn-") {
        "cn.com.amazonaws"
    } else {
        "com.amazonaws"
    };
    let usable = |e: &&VpcEndpoint| {
        e.state()
            .is_some_and(|s| s.as_str().eq_ignore_ascii_case("available"))
    };
    // Interface endpoints serve the services' own names only with private DNS on.
    let interfaces: BTreeSet<&str> = endpoints
        .iter()
        .filter(usable)
        .filter(|e| e.private_dns_enabled() == Some(true))
        .filter_map(|e| e.service_name())
        .collect();
    // The S3 gateway endpoint serves only the route tables it is associated with.
    let s3_tables: BTreeSet<&str> = endpoints
        .iter()
        .filter(usable)
        .filter(|e| e.service_name() == Some(&format!("{prefix}.{region}.s3")))
        .flat_map(|e| e.route_table_ids().iter().map(String::as_str))
        .collect();
    let image_here = ecr_repository(&settings.image_repository).is_some_and(|r| r.region == region);
    for id in settings.asg_subnets.iter() {
        let Some(subnet) = subnets.get(id) else {
            continue;
        };
        let table = route_table_of(tables, id);
        let egress = table.is_some_and(|t| {
            default_route(t, Egress::Outbound)
                || (subnet.public_ips && default_route(t, Egress::Inbound))
        });
        if egress {
            continue;
        }
        let mut missing: Vec<String> = INTERFACE_ENDPOINTS
            .iter()
            .map(|service| format!("{prefix}.{region}.{service}"))
            .filter(|name| !interfaces.contains(name.as_str()))
            .collect();
        let s3_here = table
            .and_then(|t| t.route_table_id())
            .is_some_and(|t| s3_tables.contains(t));
        if !s3_here {
            missing.push(format!(
                "{prefix}.{region}.s3 (a gateway endpoint on the subnet's route table)"
            ));
        }
        missing.sort();
        if !missing.is_empty() {
            problems.push(Problem {
                setting: "asg_subnets",
                message: format!(
                    "{id} reaches AWS neither through a NAT (0.0.0.0/0 via a NAT gateway) nor through VPC endpoints (missing, interface endpoints with private DNS: {}): the hosts could not pull the image, join the cluster or send logs, and would be replaced forever",
                    missing.join(", ")
                ),
            });
        } else if !image_here {
            problems.push(Problem {
                setting: "image_repository",
                message: format!(
                    "{} is not in this region's ECR, and {id} reaches AWS only through VPC endpoints: the hosts could not pull it; copy the image to ECR in {region}, or give the subnet a NAT",
                    settings.image_repository
                ),
            });
        }
    }

    problems
}

/// Whether the VPC resolves names as efs-utils needs.
async fn dns_problems(ec2: &aws_sdk_ec2::Client, vpc: &str) -> Result<Vec<Problem>, DeployError> {
    let mut problems = Vec::new();
    for (attribute, name) in [
        (VpcAttributeName::EnableDnsSupport, "enableDnsSupport"),
        (VpcAttributeName::EnableDnsHostnames, "enableDnsHostnames"),
    ] {
        let answer = ec2
            .describe_vpc_attribute()
            .vpc_id(vpc)
            .attribute(attribute.clone())
            .send()
            .await
            .map_err(aws_error("DescribeVpcAttribute"))?;
        let on = match attribute {
            VpcAttributeName::EnableDnsSupport => answer.enable_dns_support(),
            _ => answer.enable_dns_hostnames(),
        }
        .and_then(|v| v.value())
        .unwrap_or(false);
        if !on {
            problems.push(Problem {
                setting: "asg_subnets",
                message: format!(
                    "their VPC {vpc} has {name} off: the hosts mount EFS by its DNS name; turn on DNS support and DNS hostnames in the VPC"
                ),
            });
        }
    }

    Ok(problems)
}

/// Whether the instance type is offered in every zone of the hosts.
async fn offering_problems(
    settings: &Settings,
    ec2: &aws_sdk_ec2::Client,
    asg_zones: &BTreeMap<String, Vec<&String>>,
) -> Result<Vec<Problem>, DeployError> {
    let mut problems = Vec::new();
    let offerings = ec2
        .describe_instance_type_offerings()
        .location_type(LocationType::AvailabilityZone)
        .filters(filter(
            "instance-type",
            std::slice::from_ref(&settings.instance_type),
        ))
        .send()
        .await
        .map_err(aws_error("DescribeInstanceTypeOfferings"))?;
    let offered: BTreeSet<&str> = offerings
        .instance_type_offerings()
        .iter()
        .filter_map(|o| o.location())
        .collect();
    for (az, ids) in asg_zones {
        if !offered.contains(az.as_str()) {
            problems.push(Problem {
                setting: "instance_type",
                message: format!(
                    "{} is not offered in {az} (the zone of {}): choose a type offered in every zone of asg_subnets, or other subnets",
                    settings.instance_type,
                    join(ids)
                ),
            });
        }
    }
    Ok(problems)
}

/// What the preflight needs of a subnet.
struct Subnet {
    vpc: String,
    zone: String,
    /// Whether instances launched in it get a public address (then an internet gateway is
    /// a way out).
    public_ips: bool,
}

/// The subnets of `ids` by Availability Zone (unknown ones left out).
fn by_zone<'a>(
    ids: &'a [String],
    subnets: &BTreeMap<String, Subnet>,
) -> BTreeMap<String, Vec<&'a String>> {
    let mut zones: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for id in ids {
        if let Some(subnet) = subnets.get(id) {
            zones.entry(subnet.zone.clone()).or_default().push(id);
        }
    }
    zones
}

fn filter(name: &str, values: &[String]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.to_vec()))
        .build()
}

fn join(ids: &[&String]) -> String {
    ids.iter()
        .map(|id| id.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The route table a subnet uses: its own association, else the VPC's main table.
fn route_table_of<'a>(tables: &'a [RouteTable], subnet: &str) -> Option<&'a RouteTable> {
    tables
        .iter()
        .find(|t| {
            t.associations()
                .iter()
                .any(|a| a.subnet_id() == Some(subnet))
        })
        .or_else(|| {
            tables
                .iter()
                .find(|t| t.associations().iter().any(|a| a.main() == Some(true)))
        })
}

#[derive(Clone, Copy)]
enum Egress {
    /// Through an internet gateway (or a firewall endpoint in front of one): the way in to a
    /// public load balancer, and out for instances with public addresses.
    Inbound,
    /// Through anything that translates private addresses: a NAT gateway or instance, a
    /// transit or virtual private gateway, a firewall endpoint, a local gateway.
    Outbound,
}

/// Whether `table` sends 0.0.0.0/0 out the way asked, through a route that is not a blackhole.
fn default_route(table: &RouteTable, egress: Egress) -> bool {
    table.routes().iter().any(|route| {
        let gateway = route.gateway_id().unwrap_or_default();
        route.destination_cidr_block() == Some("0.0.0.0/0")
            && !route
                .state()
                .is_some_and(|s| s.as_str().eq_ignore_ascii_case("blackhole"))
            && match egress {
                Egress::Inbound => gateway.starts_with("igw-") || gateway.starts_with("vpce-"),
                Egress::Outbound => {
                    route.nat_gateway_id().is_some()
                        || route.transit_gateway_id().is_some()
                        || route.network_interface_id().is_some()
                        || route.instance_id().is_some()
                        || route.local_gateway_id().is_some()
                        || gateway.starts_with("vgw-")
                        || gateway.starts_with("vpce-")
                }
            }
    })
}

/// The hosted zone the names go into: it must exist, be public (the certificate is validated
/// and the index reached through it), and be the zone of `hosted_zone_name`.
pub async fn check_hosted_zone(
    settings: &Settings,
    route53: &aws_sdk_route53::Client,
) -> Result<Vec<Problem>, DeployError> {
    use aws_sdk_route53::error::ProvideErrorMetadata;
    let id = &settings.hosted_zone_id;
    let problem = |message: String| {
        Ok(vec![Problem {
            setting: "hosted_zone_id",
            message,
        }])
    };
    let zone = match route53.get_hosted_zone().id(id).send().await {
        Ok(answer) => answer,
        Err(err) if matches!(err.code(), Some("NoSuchHostedZone" | "InvalidInput")) => {
            return problem(format!(
                "{id} is not a hosted zone of this account ({}): copy the id from Route 53, without /hostedzone/",
                err.code().unwrap_or_default()
            ));
        }
        Err(err) => return Err(aws_error("GetHostedZone")(err)),
    };
    let Some(zone) = zone.hosted_zone() else {
        return problem(format!("{id}: Route 53 described no zone"));
    };
    if zone.config().is_some_and(|c| c.private_zone()) {
        return problem(format!(
            "{id} ({}) is a private zone: the certificate is validated and the index reached through public DNS; use the public zone of that name",
            zone.name()
        ));
    }
    let name = zone.name().trim_end_matches('.');
    if !name.eq_ignore_ascii_case(settings.hosted_zone_name.trim_end_matches('.')) {
        return Ok(vec![Problem {
            setting: "hosted_zone_name",
            message: format!(
                "{:?}, but hosted zone {id} is {name:?}: set hosted_zone_name = {name:?}, or the id of the {:?} zone",
                settings.hosted_zone_name, settings.hosted_zone_name
            ),
        }]);
    }
    Ok(Vec::new())
}

/// Where an ECR image reference points: `ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME`.
struct EcrRepository<'a> {
    account: &'a str,
    region: &'a str,
    name: &'a str,
}

fn ecr_repository(reference: &str) -> Option<EcrRepository<'_>> {
    let (registry, name) = reference.split_once('/')?;
    let (account, rest) = registry.split_once(".dkr.ecr.")?;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    Some(EcrRepository {
        account,
        region,
        name,
    })
}

/// The image the tasks run, when it is in ECR: the repository and the tag must exist, or
/// every task fails to pull it and the service never becomes stable. Images elsewhere
/// (a public registry) are not looked up.
pub async fn check_image(
    settings: &Settings,
    config: &aws_config::SdkConfig,
) -> Result<Vec<Problem>, DeployError> {
    use aws_sdk_ecr::error::ProvideErrorMetadata;
    let Some(repository) = ecr_repository(&settings.image_repository) else {
        return Ok(Vec::new());
    };
    let ecr = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(config)
            .region(aws_sdk_ecr::config::Region::new(
                repository.region.to_owned(),
            ))
            .build(),
    );
    let tag = aws_sdk_ecr::types::ImageIdentifier::builder()
        .image_tag(&settings.image_tag)
        .build();
    let answer = ecr
        .describe_images()
        .registry_id(repository.account)
        .repository_name(repository.name)
        .image_ids(tag)
        .send()
        .await;
    let problem = |setting, message| Ok(vec![Problem { setting, message }]);
    match answer {
        Ok(_) => Ok(Vec::new()),
        Err(err) if err.code() == Some("RepositoryNotFoundException") => problem(
            "image_repository",
            format!(
                "{} does not exist in ECR (account {}, {}): push the server image there first",
                settings.image_repository, repository.account, repository.region
            ),
        ),
        Err(err) if err.code() == Some("ImageNotFoundException") => problem(
            "image_tag",
            format!(
                "{:?} is not a tag of {}: push the server image with that tag first",
                settings.image_tag, settings.image_repository
            ),
        ),
        Err(err) => Err(aws_error("DescribeImages")(err)),
    }
}
