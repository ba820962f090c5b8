//! Alarms (to an SNS topic with the operators' e-mail addresses, and to any extra topics) and
//! the CloudWatch dashboard.

use serde_json::{json, Value};

use super::alb::Front;
use super::ecs::Compute;
use super::efs::Storage;
use super::{base_name, stack_named, sub, tags};
use crate::deploy::settings::{Settings, ThroughputMode};
use crate::deploy::template::{Handle, Template};

pub(super) struct Alarms {
    pub(super) topic: Handle,
    /// Each alarm with what it watches.
    pub(super) alarms: Vec<(Handle, String)>,
}

/// The dimension values of the alarms' metrics.
struct Dimensions {
    load_balancer: Value,
    target_group: Value,
    file_system: Value,
    cluster: Value,
    service: Value,
}

impl Dimensions {
    fn new(storage: &Storage, front: &Front, compute: &Compute) -> Self {
        Self {
            load_balancer: front.load_balancer.get_att("LoadBalancerFullName"),
            target_group: front.target_group.get_att("TargetGroupFullName"),
            file_system: storage.file_system.r#ref(),
            cluster: compute.cluster.r#ref(),
            service: compute.service.get_att("Name"),
        }
    }
}

pub(super) fn alarms(
    t: &mut Template,
    settings: &Settings,
    storage: &Storage,
    front: &Front,
    compute: &Compute,
) -> Alarms {
    let name = base_name(settings);
    let topic = t.add(
        "AlarmTopic",
        "AWS::SNS::Topic",
        json!({
            "DisplayName": format!("{name} alarms"),
            "Tags": tags(settings),
        }),
    );
    for (i, email) in settings.alarm_emails.iter().enumerate() {
        t.add(
            &format!("AlarmEmail{i}"),
            "AWS::SNS::Subscription",
            json!({ "TopicArn": topic.r#ref(), "Protocol": "email", "Endpoint": email }),
        );
    }
    let mut actions = vec![topic.r#ref()];
    actions.extend(settings.alarm_topic_arns.iter().map(|arn| json!(arn)));
    let d = Dimensions::new(storage, front, compute);
    let lb = json!([{ "Name": "LoadBalancer", "Value": d.load_balancer }]);

    let mut specs = vec![(
        "FileSystemIoLimitAlarm",
        "efs-io-limit",
        "EFS at more than 80% of its I/O limit (general purpose mode)".to_owned(),
        json!({
            "Namespace": "AWS/EFS",
            "MetricName": "PercentIOLimit",
            "Dimensions": [{ "Name": "FileSystemId", "Value": d.file_system }],
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 5,
            "DatapointsToAlarm": 3,
            "Threshold": 80,
            "ComparisonOperator": "GreaterThanThreshold",
        }),
    )];
    if settings.efs_throughput_mode == ThroughputMode::Bursting {
        specs.push((
            "FileSystemBurstCreditAlarm",
            "efs-burst-credits",
            format!(
                "EFS burst credits below {} bytes: throughput falls to the baseline when they run out",
                settings.efs_burst_credit_threshold
            ),
            json!({
                "Namespace": "AWS/EFS",
                "MetricName": "BurstCreditBalance",
                "Dimensions": [{ "Name": "FileSystemId", "Value": d.file_system }],
                "Statistic": "Minimum",
                "Period": 300,
                "EvaluationPeriods": 1,
                "Threshold": settings.efs_burst_credit_threshold,
                "ComparisonOperator": "LessThanThreshold",
            }),
        ));
    }
    let alb_metric = |id: &str, metric: &str| {
        json!({
            "Id": id,
            "MetricStat": {
                "Metric": { "Namespace": "AWS/ApplicationELB", "MetricName": metric, "Dimensions": lb },
                "Period": 60,
                "Stat": "Sum",
            },
            "ReturnData": false,
        })
    };
    specs.push((
        "LoadBalancer5xxAlarm",
        "5xx-rate",
        "More than 5% of requests answered with a 5xx (by the tasks or by the load balancer)".to_owned(),
        json!({
            "Metrics": [
                alb_metric("targetErrors", "HTTPCode_Target_5XX_Count"),
                alb_metric("lbErrors", "HTTPCode_ELB_5XX_Count"),
                alb_metric("requests", "RequestCount"),
                {
                    "Id": "errorRate",
                    // The load balancer's own 5xx (no healthy target) are not in RequestCount,
                    // so they join the denominator: with every task down the rate is 100%, not
                    // a division by zero.
                    "Expression": "100 * (FILL(targetErrors, 0) + FILL(lbErrors, 0)) / (FILL(requests, 0) + FILL(lbErrors, 0))",
                    "Label": "5xx responses (% of requests)",
                    "ReturnData": true,
                },
            ],
            "EvaluationPeriods": 5,
            "DatapointsToAlarm": 3,
            "Threshold": 5,
            "ComparisonOperator": "GreaterThanThreshold",
        }),
    ));
    specs.push((
        "TargetResponseTimeAlarm",
        "p99-response-time",
        "99th percentile of the tasks' response time above 1 s".to_owned(),
        json!({
            "Namespace": "AWS/ApplicationELB",
            "MetricName": "TargetResponseTime",
            "Dimensions": lb,
            "ExtendedStatistic": "p99",
            "Period": 60,
            "EvaluationPeriods": 5,
            "DatapointsToAlarm": 3,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanThreshold",
        }),
    ));
    specs.push((
        "UnhealthyHostsAlarm",
        "unhealthy-tasks",
        "A task fails the load balancer's health check".to_owned(),
        json!({
            "Namespace": "AWS/ApplicationELB",
            "MetricName": "UnHealthyHostCount",
            "Dimensions": [
                { "Name": "TargetGroup", "Value": d.target_group },
                { "Name": "LoadBalancer", "Value": d.load_balancer },
            ],
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 3,
            "DatapointsToAlarm": 3,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
        }),
    ));
    let insights_metric = |id: &str, metric: &str| {
        json!({
            "Id": id,
            "MetricStat": {
                "Metric": {
                    "Namespace": "ECS/ContainerInsights",
                    "MetricName": metric,
                    "Dimensions": [
                        { "Name": "ClusterName", "Value": d.cluster },
                        { "Name": "ServiceName", "Value": d.service },
                    ],
                },
                "Period": 60,
                "Stat": "Average",
            },
            "ReturnData": false,
        })
    };
    specs.push((
        "RunningTasksAlarm",
        "tasks-below-desired",
        "Fewer tasks running than desired for 10 minutes (a deployment or a scale-out that does not finish)".to_owned(),
        json!({
            "Metrics": [
                insights_metric("running", "RunningTaskCount"),
                insights_metric("desired", "DesiredTaskCount"),
                {
                    "Id": "missing",
                    "Expression": "desired - running",
                    "Label": "tasks missing",
                    "ReturnData": true,
                },
            ],
            "EvaluationPeriods": 10,
            "DatapointsToAlarm": 10,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
        }),
    ));

    let alarms = specs
        .into_iter()
        .map(|(id, suffix, description, mut properties)| {
            properties["AlarmName"] = stack_named("", &format!("-{suffix}"));
            properties["AlarmDescription"] = json!(description);
            properties["ActionsEnabled"] = json!(true);
            properties["AlarmActions"] = json!(actions);
            properties["OKActions"] = json!(actions);
            properties["TreatMissingData"] = json!("notBreaching");
            properties["Tags"] = tags(settings);
            (t.add(id, "AWS::CloudWatch::Alarm", properties), description)
        })
        .collect();
    Alarms { topic, alarms }
}

pub(super) fn dashboard(
    t: &mut Template,
    storage: &Storage,
    front: &Front,
    compute: &Compute,
) -> Handle {
    // The body is JSON in a string; `Fn::Sub` puts the resources' names into it.
    let cluster = format!("${{{}}}", compute.cluster.id());
    let service = format!("${{{}.Name}}", compute.service.id());
    let lb = format!("${{{}.LoadBalancerFullName}}", front.load_balancer.id());
    let tg = format!("${{{}.TargetGroupFullName}}", front.target_group.id());
    let fs = format!("${{{}}}", storage.file_system.id());

    let ecs = |namespace: &str, metric: &str, label: &str| {
        json!([
            namespace, metric, "ClusterName", cluster, "ServiceName", service,
            { "label": label },
        ])
    };
    let alb = |metric: &str, options: Value| {
        json!(["AWS/ApplicationELB", metric, "LoadBalancer", lb, options])
    };
    let target = |metric: &str, options: Value| {
        json!([
            "AWS/ApplicationELB",
            metric,
            "TargetGroup",
            tg,
            "LoadBalancer",
            lb,
            options
        ])
    };
    let efs = |metric: &str, label: &str| json!(["AWS/EFS", metric, "FileSystemId", fs, { "label": label }]);

    let panels = vec![
        (
            "Service CPU and memory (% of reserved)",
            "Average",
            vec![
                ecs("AWS/ECS", "CPUUtilization", "CPU"),
                ecs("AWS/ECS", "MemoryUtilization", "memory"),
            ],
        ),
        (
            "Tasks",
            "Average",
            vec![
                ecs("ECS/ContainerInsights", "RunningTaskCount", "running"),
                ecs("ECS/ContainerInsights", "DesiredTaskCount", "desired"),
                ecs("ECS/ContainerInsights", "PendingTaskCount", "pending"),
            ],
        ),
        (
            "Response time (s)",
            "p50",
            ["p50", "p90", "p99"]
                .iter()
                .map(|p| alb("TargetResponseTime", json!({ "stat": p, "label": p })))
                .collect(),
        ),
        (
            "Requests by status class",
            "Sum",
            vec![
                alb("HTTPCode_Target_2XX_Count", json!({ "label": "2xx" })),
                alb("HTTPCode_Target_3XX_Count", json!({ "label": "3xx" })),
                alb("HTTPCode_Target_4XX_Count", json!({ "label": "4xx" })),
                alb("HTTPCode_Target_5XX_Count", json!({ "label": "5xx" })),
                alb(
                    "HTTPCode_ELB_4XX_Count",
                    json!({ "label": "4xx (load balancer)" }),
                ),
                alb(
                    "HTTPCode_ELB_5XX_Count",
                    json!({ "label": "5xx (load balancer)" }),
                ),
            ],
        ),
        (
            "Connections",
            "Sum",
            vec![
                alb("ActiveConnectionCount", json!({ "label": "active" })),
                alb("NewConnectionCount", json!({ "label": "new" })),
                alb("RejectedConnectionCount", json!({ "label": "rejected" })),
            ],
        ),
        (
            "Targets",
            "Minimum",
            vec![
                target("HealthyHostCount", json!({ "label": "healthy" })),
                target(
                    "UnHealthyHostCount",
                    json!({ "label": "unhealthy", "stat": "Maximum" }),
                ),
            ],
        ),
        (
            "EFS burst credits (bytes)",
            "Minimum",
            vec![efs("BurstCreditBalance", "burst credits")],
        ),
        (
            "EFS I/O limit (%)",
            "Maximum",
            vec![efs("PercentIOLimit", "I/O limit")],
        ),
        (
            "EFS client connections",
            "Sum",
            vec![efs("ClientConnections", "connections")],
        ),
        (
            "EFS I/O (bytes)",
            "Sum",
            vec![
                efs("DataReadIOBytes", "data read"),
                efs("DataWriteIOBytes", "data write"),
                efs("MetadataIOBytes", "metadata"),
            ],
        ),
    ];
    let widgets: Vec<Value> = panels
        .into_iter()
        .enumerate()
        .map(|(i, (title, stat, metrics))| {
            json!({
                "type": "metric",
                "x": (i % 2) * 12,
                "y": (i / 2) * 6,
                "width": 12,
                "height": 6,
                "properties": {
                    "title": title,
                    "region": "${AWS::Region}",
                    "view": "timeSeries",
                    "stacked": false,
                    "period": 60,
                    "stat": stat,
                    "metrics": metrics,
                },
            })
        })
        .collect();
    let body = json!({ "widgets": widgets }).to_string();
    t.add(
        "Dashboard",
        "AWS::CloudWatch::Dashboard",
        json!({
            "DashboardName": stack_named("", ""),
            "DashboardBody": sub(&body),
        }),
    )
}
