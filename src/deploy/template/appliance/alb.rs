//! The front door: an internet-facing application load balancer with a DNS-validated
//! certificate, HTTPS to the tasks' dynamic host ports, HTTP only as a redirect.

use serde_json::{json, Value};

use super::{
    base_name, named_tags, stateful, sub, tags, Lifetime, Network, CONTAINER_PORT, HEALTH_PATH,
};
use crate::deploy::settings::Settings;
use crate::deploy::template::{Handle, Template};

/// The range Docker and the ECS agent draw bridge-mode host ports from (the kernel's
/// ephemeral range, 32768-60999 on Amazon Linux 2023, inside this one).
pub(super) const DYNAMIC_PORTS: (u16, u16) = (32768, 65535);

pub(super) struct Front {
    pub(super) load_balancer: Handle,
    pub(super) security_group: Handle,
    pub(super) target_group: Handle,
    /// The listener that forwards to the target group.
    pub(super) https_listener: Handle,
    /// The bucket of the access logs, when they are on.
    pub(super) access_logs: Option<Handle>,
}

/// Where in the bucket the load balancer writes its logs.
const ACCESS_LOGS_PREFIX: &str = "alb";

/// The Elastic Load Balancing account that delivers access logs in each region that opened
/// before August 2022; regions opened since deliver as the service principal
/// `logdelivery.elasticloadbalancing.amazonaws.com` instead, and only that works there
/// (AWS's "Enable access logs for your Application Load Balancer", step 2).
const ELB_LOG_ACCOUNTS: &[(&str, &str)] = &[
    ("us-east-1", "127311923021"),
    ("us-east-2", "033677994240"),
    ("us-west-1", "027434742980"),
    ("us-west-2", "797873946194"),
    ("af-south-1", "098369216593"),
    ("ap-east-1", "754344448648"),
    ("ap-southeast-3", "589379963580"),
    ("ap-south-1", "718504428378"),
    ("ap-northeast-3", "383597477331"),
    ("ap-northeast-2", "600734575887"),
    ("ap-southeast-1", "114774131450"),
    ("ap-southeast-2", "783225319266"),
    ("ap-northeast-1", "582318560864"),
    ("ca-central-1", "985666609251"),
    ("eu-central-1", "054676820928"),
    ("eu-west-1", "156460612806"),
    ("eu-west-2", "652711504416"),
    ("eu-south-1", "635631232127"),
    ("eu-west-3", "009996457667"),
    ("eu-north-1", "897822967062"),
    ("me-south-1", "076674570225"),
    ("sa-east-1", "507241528517"),
    ("us-gov-west-1", "048591011584"),
    ("us-gov-east-1", "190560391635"),
    ("cn-north-1", "638102146993"),
    ("cn-northwest-1", "037604701340"),
];

/// Who writes the access logs in `region` (see [`ELB_LOG_ACCOUNTS`]).
fn log_delivery_principal(region: &str) -> Value {
    match ELB_LOG_ACCOUNTS.iter().find(|(r, _)| *r == region) {
        Some((_, account)) => json!({
            "AWS": sub(&format!("arn:${{AWS::Partition}}:iam::{account}:root")),
        }),
        None => json!({ "Service": "logdelivery.elasticloadbalancing.amazonaws.com" }),
    }
}

/// The access logs' bucket: private, encrypted with S3's keys (the only encryption the load
/// balancer can write to), each log deleted after `access_logs_days`. It is kept when the
/// stack goes: CloudFormation cannot delete a bucket that holds objects, and this one holds
/// the load balancer's test file from the first minutes on. Returns the bucket and its policy,
/// which the load balancer must wait for: it checks that it may write when logging is turned on.
fn access_log_bucket(t: &mut Template, settings: &Settings, network: &Network) -> (Handle, Handle) {
    let bucket = stateful(
        t,
        "AccessLogsBucket",
        "AWS::S3::Bucket",
        json!({
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{
                    "ServerSideEncryptionByDefault": { "SSEAlgorithm": "AES256" },
                }],
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": true,
                "BlockPublicPolicy": true,
                "IgnorePublicAcls": true,
                "RestrictPublicBuckets": true,
            },
            "OwnershipControls": { "Rules": [{ "ObjectOwnership": "BucketOwnerEnforced" }] },
            "LifecycleConfiguration": {
                "Rules": [{
                    "Id": "expire-access-logs",
                    "Status": "Enabled",
                    "ExpirationInDays": settings.access_logs_days,
                    "AbortIncompleteMultipartUpload": { "DaysAfterInitiation": 1 },
                }],
            },
            "Tags": tags(settings),
        }),
        Lifetime::Kept,
    );
    let bucket_arn = bucket.get_att("Arn");
    let policy = t.add(
        "AccessLogsBucketPolicy",
        "AWS::S3::BucketPolicy",
        json!({
            "Bucket": bucket.r#ref(),
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "LoadBalancerLogDelivery",
                        "Effect": "Allow",
                        "Principal": log_delivery_principal(&network.region),
                        "Action": "s3:PutObject",
                        "Resource": sub(&format!(
                            "${{{}.Arn}}/{ACCESS_LOGS_PREFIX}/AWSLogs/${{AWS::AccountId}}/*",
                            bucket.id()
                        )),
                    },
                    {
                        // A deny takes away: the wildcard grants nothing.
                        "Sid": "DenyUnencryptedTransport",
                        "Effect": "Deny",
                        "Principal": { "AWS": "*" },
                        "Action": "s3:*",
                        "Resource": [
                            bucket_arn,
                            sub(&format!("${{{}.Arn}}/*", bucket.id())),
                        ],
                        "Condition": { "Bool": { "aws:SecureTransport": "false" } },
                    },
                ],
            },
        }),
    );
    (bucket, policy)
}

pub(super) fn load_balancer(t: &mut Template, settings: &Settings, network: &Network) -> Front {
    let name = base_name(settings);
    let mut ingress = Vec::new();
    for cidr in &settings.allowed_cidrs {
        for (port, description) in [
            (443, format!("HTTPS from {cidr}")),
            (80, format!("HTTP from {cidr} (redirected to HTTPS)")),
        ] {
            let mut rule = json!({
                "IpProtocol": "tcp",
                "FromPort": port,
                "ToPort": port,
                "Description": description,
            });
            let key = if cidr.contains(':') {
                "CidrIpv6"
            } else {
                "CidrIp"
            };
            rule[key] = json!(cidr);
            ingress.push(rule);
        }
    }
    let security_group = t.add(
        "LoadBalancerSecurityGroup",
        "AWS::EC2::SecurityGroup",
        json!({
            "GroupDescription": format!("{name} load balancer: HTTPS and HTTP from the allowed networks"),
            "VpcId": network.vpc_id,
            "SecurityGroupIngress": ingress,
            // Out only to the hosts' dynamic ports, inside the VPC (named by CIDR rather than by
            // the hosts' group, which already refers to this one).
            "SecurityGroupEgress": [{
                "IpProtocol": "tcp",
                "FromPort": DYNAMIC_PORTS.0,
                "ToPort": DYNAMIC_PORTS.1,
                "CidrIp": network.vpc_cidr,
                "Description": "to the dynamic host ports of the tasks",
            }],
            "Tags": named_tags(settings, &format!("{name}-alb")),
        }),
    );

    let logs = settings
        .access_logs
        .then(|| access_log_bucket(t, settings, network));
    let mut attributes = vec![
        json!({ "Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true" }),
        json!({ "Key": "idle_timeout.timeout_seconds", "Value": super::ALB_IDLE_TIMEOUT_SECONDS.to_string() }),
        json!({ "Key": "deletion_protection.enabled", "Value": settings.protected().to_string() }),
        // Said when off too, so that turning the setting off turns the logs off.
        json!({ "Key": "access_logs.s3.enabled", "Value": logs.is_some().to_string() }),
    ];
    if let Some((bucket, _)) = &logs {
        attributes.push(json!({ "Key": "access_logs.s3.bucket", "Value": bucket.r#ref() }));
        attributes.push(json!({ "Key": "access_logs.s3.prefix", "Value": ACCESS_LOGS_PREFIX }));
    }
    let load_balancer = t.add(
        super::LOAD_BALANCER_RESOURCE,
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        json!({
            "Type": "application",
            "Scheme": "internet-facing",
            "IpAddressType": "ipv4",
            "Subnets": settings.lb_subnets,
            "SecurityGroups": [security_group.get_att("GroupId")],
            "LoadBalancerAttributes": attributes,
            "Tags": tags(settings),
        }),
    );
    if let Some((_, policy)) = &logs {
        t.depends_on(&load_balancer, policy);
    }

    // Bridge networking with dynamic host ports, so targets are instances (instance id + the
    // port ECS registers); the group's port is only the default.
    let target_group = t.add(
        "TargetGroup",
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        json!({
            "TargetType": "instance",
            "Protocol": "HTTP",
            "ProtocolVersion": "HTTP1",
            "Port": CONTAINER_PORT,
            "VpcId": network.vpc_id,
            "HealthCheckEnabled": true,
            "HealthCheckProtocol": "HTTP",
            "HealthCheckPort": "traffic-port",
            "HealthCheckPath": HEALTH_PATH,
            "HealthCheckIntervalSeconds": 10,
            "HealthCheckTimeoutSeconds": 5,
            "HealthyThresholdCount": 2,
            "UnhealthyThresholdCount": 3,
            "Matcher": { "HttpCode": "200" },
            "TargetGroupAttributes": [
                // The server finishes requests in flight for up to 30 s after SIGTERM.
                { "Key": "deregistration_delay.timeout_seconds", "Value": "30" },
            ],
            "Tags": tags(settings),
        }),
    );

    let fqdns = settings.fqdns();
    let mut certificate = json!({
        "DomainName": fqdns[0],
        "ValidationMethod": "DNS",
        "DomainValidationOptions": fqdns
            .iter()
            .map(|fqdn| json!({ "DomainName": fqdn, "HostedZoneId": settings.hosted_zone_id }))
            .collect::<Vec<Value>>(),
        "Tags": tags(settings),
    });
    if fqdns.len() > 1 {
        certificate["SubjectAlternativeNames"] = json!(fqdns[1..]);
    }
    let certificate = t.add(
        "Certificate",
        "AWS::CertificateManager::Certificate",
        certificate,
    );

    let https = t.add(
        "HttpsListener",
        "AWS::ElasticLoadBalancingV2::Listener",
        json!({
            "LoadBalancerArn": load_balancer.r#ref(),
            "Port": 443,
            "Protocol": "HTTPS",
            "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "Certificates": [{ "CertificateArn": certificate.r#ref() }],
            "DefaultActions": [{ "Type": "forward", "TargetGroupArn": target_group.r#ref() }],
        }),
    );
    t.add(
        "HttpListener",
        "AWS::ElasticLoadBalancingV2::Listener",
        json!({
            "LoadBalancerArn": load_balancer.r#ref(),
            "Port": 80,
            "Protocol": "HTTP",
            "DefaultActions": [{
                "Type": "redirect",
                "RedirectConfig": {
                    "Protocol": "HTTPS",
                    "Port": "443",
                    "Host": "#{host}",
                    "Path": "/#{path}",
                    "Query": "#{query}",
                    "StatusCode": "HTTP_301",
                },
            }],
        }),
    );

    for (i, fqdn) in fqdns.iter().enumerate() {
        t.add(
            &format!("DnsRecord{i}"),
            "AWS::Route53::RecordSet",
            json!({
                "HostedZoneId": settings.hosted_zone_id,
                "Name": fqdn,
                "Type": "A",
                "AliasTarget": {
                    "DNSName": load_balancer.get_att("DNSName"),
                    "HostedZoneId": load_balancer.get_att("CanonicalHostedZoneID"),
                    "EvaluateTargetHealth": true,
                },
            }),
        );
    }

    Front {
        load_balancer,
        security_group,
        target_group,
        https_listener: https,
        access_logs: logs.map(|(bucket, _)| bucket),
    }
}
