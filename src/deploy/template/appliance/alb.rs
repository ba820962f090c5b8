//! The front door: an internet-facing application load balancer with a DNS-validated
//! certificate, HTTPS to the tasks' dynamic host ports, HTTP only as a redirect.

use serde_json::{json, Value};

use super::{base_name, named_tags, tags, Network, CONTAINER_PORT, HEALTH_PATH};
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

    let load_balancer = t.add(
        super::LOAD_BALANCER_RESOURCE,
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        json!({
            "Type": "application",
            "Scheme": "internet-facing",
            "IpAddressType": "ipv4",
            "Subnets": settings.lb_subnets,
            "SecurityGroups": [security_group.get_att("GroupId")],
            "LoadBalancerAttributes": [
                { "Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true" },
                { "Key": "idle_timeout.timeout_seconds", "Value": super::ALB_IDLE_TIMEOUT_SECONDS.to_string() },
                { "Key": "deletion_protection.enabled", "Value": settings.protected().to_string() },
            ],
            "Tags": tags(settings),
        }),
    );

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
    }
}
