//! The AWS edges a real service cannot be made to produce on demand, against wiremock
//! stand-ins speaking the services' query protocols: throttling, an empty change set, a
//! failed create that rolls back, paginated events, error reporting; the ECS service-linked
//! role of a fresh account; deletion protection released by `destroy`; every preflight
//! failure of a wrong network.

use crate::aws_mock;

use std::time::Duration;

use aws_sdk_cloudformation::config::{BehaviorVersion, Credentials, Region};
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use aws_mock::{query_error, query_ok, sdk_config};
use wheelhouse::deploy::aws::retry_config;
use wheelhouse::deploy::render;
use wheelhouse::deploy::stack::{is_success, DeployError, DiffAction, StackClient};

const NS: &str = "http://cloudformation.amazonaws.com/doc/2010-05-15/";
const STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/demo/1";

fn client(server: &MockServer) -> StackClient {
    let config = aws_sdk_cloudformation::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(server.uri())
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        // The production retry policy, with a short first backoff so the test is quick.
        .retry_config(retry_config().with_initial_backoff(Duration::from_millis(5)))
        .build();
    StackClient::new(aws_sdk_cloudformation::Client::from_conf(config), "demo")
        .with_poll_interval(Duration::from_millis(5))
}

fn ok(action: &str, result: &str) -> ResponseTemplate {
    query_ok(NS, action, result)
}

fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    query_error(NS, status, code, message)
}

fn stack(status: &str) -> String {
    format!(
        "<Stacks><member><StackName>demo</StackName><StackId>{STACK_ID}</StackId><CreationTime>2026-01-01T00:00:00Z</CreationTime><StackStatus>{status}</StackStatus><Outputs><member><OutputKey>Url</OutputKey><OutputValue>https://pypi.example.com/</OutputValue></member></Outputs></member></Stacks>"
    )
}

fn event(id: &str, second: u32, logical: &str, status: &str, reason: &str) -> String {
    format!(
        "<member><StackId>{STACK_ID}</StackId><EventId>{id}</EventId><StackName>demo</StackName><LogicalResourceId>{logical}</LogicalResourceId><ResourceType>AWS::S3::Bucket</ResourceType><Timestamp>2026-01-01T00:00:{second:02}Z</Timestamp><ResourceStatus>{status}</ResourceStatus><ResourceStatusReason>{reason}</ResourceStatusReason></member>"
    )
}

/// Answers every call of one CloudFormation action with `response`.
async fn reply(server: &MockServer, action_name: &str, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(action(action_name))
        .respond_with(response)
        .mount(server)
        .await;
}

fn action(name: &str) -> wiremock::matchers::BodyContainsMatcher {
    body_string_contains(format!("Action={name}&"))
}

#[tokio::test]
async fn throttling_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(action("DescribeStacks"))
        .respond_with(error(400, "Throttling", "Rate exceeded"))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(action("DescribeStacks"))
        .respond_with(ok("DescribeStacks", &stack("CREATE_COMPLETE")))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    let state = client(&server).state().await.unwrap().unwrap();
    assert_eq!(state.status, "CREATE_COMPLETE");
    assert_eq!(state.output("Url"), Some("https://pypi.example.com/"));
}

#[tokio::test]
async fn a_change_set_without_changes_means_no_changes() {
    let server = MockServer::start().await;
    reply(
        &server,
        "DescribeStacks",
        ok("DescribeStacks", &stack("UPDATE_COMPLETE")),
    )
    .await;
    Mock::given(method("POST"))
        .and(action("CreateChangeSet"))
        .and(body_string_contains("ChangeSetType=UPDATE"))
        .respond_with(ok(
            "CreateChangeSet",
            &format!("<Id>arn:aws:cloudformation:us-east-1:123456789012:changeSet/w/1</Id><StackId>{STACK_ID}</StackId>"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    reply(&server, "DescribeChangeSet", ok(
            "DescribeChangeSet",
            "<ChangeSetName>w</ChangeSetName><StackName>demo</StackName><Status>FAILED</Status><ExecutionStatus>UNAVAILABLE</ExecutionStatus><StatusReason>The submitted information didn't contain changes. Submit different information to create a change set.</StatusReason><Changes/>",
        )).await;
    Mock::given(method("POST"))
        .and(action("DeleteChangeSet"))
        .respond_with(ok("DeleteChangeSet", ""))
        .expect(1)
        .mount(&server)
        .await;
    let stack = client(&server);
    let preview = stack.preview("{}").await.unwrap();
    assert!(preview.change_set_id.is_none());
    assert!(preview.changes.is_empty());
    assert_eq!(render::diff("demo", &preview), "Stack demo: no changes\n");
}

#[tokio::test]
async fn a_change_set_is_read_across_pages_and_rendered_as_a_diff() {
    let server = MockServer::start().await;
    reply(
        &server,
        "DescribeStacks",
        ok("DescribeStacks", &stack("UPDATE_COMPLETE")),
    )
    .await;
    reply(
        &server,
        "CreateChangeSet",
        ok("CreateChangeSet", "<Id>cs-1</Id>"),
    )
    .await;
    let change = |action: &str, logical: &str, ty: &str, replacement: &str| {
        format!("<member><Type>Resource</Type><ResourceChange><Action>{action}</Action><LogicalResourceId>{logical}</LogicalResourceId><ResourceType>{ty}</ResourceType>{replacement}</ResourceChange></member>")
    };
    Mock::given(method("POST"))
        .and(action("DescribeChangeSet"))
        .and(body_string_contains("NextToken=more"))
        .respond_with(ok(
            "DescribeChangeSet",
            &format!(
                "<Status>CREATE_COMPLETE</Status><Changes>{}</Changes>",
                change("Remove", "OldAlarm", "AWS::CloudWatch::Alarm", "")
            ),
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(action("DescribeChangeSet"))
        .respond_with(ok(
            "DescribeChangeSet",
            &format!(
                "<Status>CREATE_COMPLETE</Status><Changes>{}{}</Changes><NextToken>more</NextToken>",
                change("Add", "NewAlarm", "AWS::CloudWatch::Alarm", ""),
                change("Modify", "TaskDefinition", "AWS::ECS::TaskDefinition", "<Replacement>True</Replacement>")
            ),
        ))
        .with_priority(2)
        .mount(&server)
        .await;
    let preview = client(&server).preview("{}").await.unwrap();
    let actions: Vec<(DiffAction, &str)> = preview
        .changes
        .iter()
        .map(|c| (c.action, c.logical_id.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            (DiffAction::Add, "NewAlarm"),
            (DiffAction::Modify, "TaskDefinition"),
            (DiffAction::Remove, "OldAlarm"),
        ]
    );
    let diff = console::strip_ansi_codes(&render::diff("demo", &preview)).into_owned();
    assert!(
        diff.starts_with("Stack demo (update): 1 to add, 1 to change (1 replaced), 1 to remove"),
        "{diff}"
    );
    assert!(
        diff.contains("AWS::CloudWatch::Alarm\n  + NewAlarm\n  - OldAlarm\n"),
        "{diff}"
    );
    assert!(diff.contains("  ~ TaskDefinition (replacement)"), "{diff}");
}

#[tokio::test]
async fn a_failed_create_reports_its_reasons_and_the_rollback() {
    let server = MockServer::start().await;
    reply(
        &server,
        "DescribeStackEvents",
        ok(
            "DescribeStackEvents",
            &format!(
                "<StackEvents>{}{}{}{}</StackEvents>",
                event("e4", 9, "demo", "ROLLBACK_COMPLETE", ""),
                event(
                    "e3",
                    7,
                    "demo",
                    "ROLLBACK_IN_PROGRESS",
                    "The following resource(s) failed to create: [Bucket]."
                ),
                event(
                    "e2",
                    5,
                    "Bucket",
                    "CREATE_FAILED",
                    "Bucket name already exists"
                ),
                event("e1", 3, "Bucket", "CREATE_IN_PROGRESS", ""),
            ),
        ),
    )
    .await;
    reply(
        &server,
        "DescribeStacks",
        ok("DescribeStacks", &stack("ROLLBACK_COMPLETE")),
    )
    .await;
    let stack = client(&server);
    let mut seen = Vec::new();
    let state = stack
        .follow(aws_smithy_types::DateTime::from_secs(0), |e| {
            seen.push(e.clone())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.status, "ROLLBACK_COMPLETE");
    assert!(!is_success(&state.status));
    let statuses: Vec<&str> = seen.iter().map(|e| e.status.as_str()).collect();
    assert_eq!(
        statuses,
        [
            "CREATE_IN_PROGRESS",
            "CREATE_FAILED",
            "ROLLBACK_IN_PROGRESS",
            "ROLLBACK_COMPLETE"
        ]
    );
    assert_eq!(
        render::failures(&seen),
        "  Bucket (AWS::S3::Bucket): Bucket name already exists\n"
    );
    // The next deploy must not try to update a stack that never got created.
    let err = stack.preview("{}").await.unwrap_err();
    assert!(matches!(err, DeployError::NeedsRecreate { .. }), "{err}");
    assert!(err.to_string().contains("ROLLBACK_COMPLETE"));
}

#[tokio::test]
async fn stack_events_are_read_across_pages_and_stop_at_the_start() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(action("DescribeStackEvents"))
        .and(body_string_contains("NextToken=page2"))
        .respond_with(ok(
            "DescribeStackEvents",
            &format!(
                "<StackEvents>{}{}{}</StackEvents><NextToken>page3</NextToken>",
                event("e2", 20, "Queue", "CREATE_COMPLETE", ""),
                event("e1", 10, "Queue", "CREATE_IN_PROGRESS", ""),
                event("e0", 2, "Previous", "UPDATE_COMPLETE", ""),
            ),
        ))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    // Older than the start: the third page must never be asked for.
    Mock::given(method("POST"))
        .and(action("DescribeStackEvents"))
        .and(body_string_contains("NextToken=page3"))
        .respond_with(ok("DescribeStackEvents", "<StackEvents/>"))
        .with_priority(1)
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(action("DescribeStackEvents"))
        .respond_with(ok(
            "DescribeStackEvents",
            &format!(
                "<StackEvents>{}{}</StackEvents><NextToken>page2</NextToken>",
                event("e4", 40, "Topic", "CREATE_COMPLETE", ""),
                event("e3", 30, "Topic", "CREATE_IN_PROGRESS", ""),
            ),
        ))
        .with_priority(2)
        .mount(&server)
        .await;
    let since = aws_smithy_types::DateTime::from_secs(1_767_225_600 + 5);
    let events = client(&server).events_since(&since).await.unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4"]);

    // Starting later stops within the first page.
    let later = aws_smithy_types::DateTime::from_secs(1_767_225_600 + 35);
    let events = client(&server).events_since(&later).await.unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e4"]);
}

#[tokio::test]
async fn aws_errors_show_code_and_message() {
    let server = MockServer::start().await;
    reply(&server, "DescribeStacks", error(403, "AccessDenied", "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: cloudformation:DescribeStacks")).await;
    let err = client(&server).state().await.unwrap_err().to_string();
    assert_eq!(
        err,
        "DescribeStacks failed: AccessDenied: User: arn:aws:iam::123456789012:user/ci is not authorized to perform: cloudformation:DescribeStacks"
    );
}

#[tokio::test]
async fn a_missing_stack_is_none_not_an_error() {
    let server = MockServer::start().await;
    reply(
        &server,
        "DescribeStacks",
        error(400, "ValidationError", "Stack with id demo does not exist"),
    )
    .await;
    assert_eq!(client(&server).state().await.unwrap(), None);
}

#[tokio::test]
async fn drift_is_reported_per_resource() {
    let server = MockServer::start().await;
    let detection = |status: &str| {
        ok(
            "DescribeStackDriftDetectionStatus",
            &format!("<StackId>{STACK_ID}</StackId><StackDriftDetectionId>d-1</StackDriftDetectionId><StackDriftStatus>DRIFTED</StackDriftStatus><DetectionStatus>{status}</DetectionStatus><DriftedStackResourceCount>1</DriftedStackResourceCount><Timestamp>2026-01-01T00:00:00Z</Timestamp>"),
        )
    };
    Mock::given(method("POST"))
        .and(action("DetectStackDrift"))
        .respond_with(ok(
            "DetectStackDrift",
            "<StackDriftDetectionId>d-1</StackDriftDetectionId>",
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(action("DescribeStackDriftDetectionStatus"))
        .respond_with(detection("DETECTION_IN_PROGRESS"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(action("DescribeStackDriftDetectionStatus"))
        .respond_with(detection("DETECTION_COMPLETE"))
        .with_priority(2)
        .mount(&server)
        .await;
    let drift = |logical: &str, status: &str, differences: &str| {
        format!("<member><StackId>{STACK_ID}</StackId><LogicalResourceId>{logical}</LogicalResourceId><ResourceType>AWS::EC2::SecurityGroup</ResourceType><StackResourceDriftStatus>{status}</StackResourceDriftStatus><PropertyDifferences>{differences}</PropertyDifferences><Timestamp>2026-01-01T00:00:00Z</Timestamp></member>")
    };
    reply(&server, "DescribeStackResourceDrifts", ok(
            "DescribeStackResourceDrifts",
            &format!(
                "<StackResourceDrifts>{}{}</StackResourceDrifts>",
                drift("LoadBalancerSecurityGroup", "MODIFIED", "<member><PropertyPath>/SecurityGroupIngress/2</PropertyPath><ExpectedValue>null</ExpectedValue><ActualValue>{\"CidrIp\":\"0.0.0.0/0\",\"FromPort\":22}</ActualValue><DifferenceType>ADD</DifferenceType></member>"),
                drift("FileSystemSecurityGroup", "IN_SYNC", ""),
            ),
        )).await;
    let report = client(&server).detect_drift().await.unwrap();
    assert_eq!(report.stack_status, "DRIFTED");
    assert_eq!(report.drifted_resources, 1);
    let text = console::strip_ansi_codes(&render::drift("demo", &report)).into_owned();
    assert_eq!(
        text,
        "Stack demo: DRIFTED (1 resource(s) drifted)\n  IN_SYNC      FileSystemSecurityGroup (AWS::EC2::SecurityGroup)\n  MODIFIED     LoadBalancerSecurityGroup (AWS::EC2::SecurityGroup)\n      ADD /SecurityGroupIngress/2: expected null, actual {\"CidrIp\":\"0.0.0.0/0\",\"FromPort\":22}\n"
    );
}

mod ecs_service_linked_role {
    use super::*;
    use wheelhouse::deploy::account::{create_ecs_role, has_ecs_role};

    const IAM_NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

    fn iam(server: &MockServer) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&super::sdk_config(server))
    }

    fn iam_ok(action: &str, result: &str) -> ResponseTemplate {
        query_ok(IAM_NS, action, result)
    }

    fn iam_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
        query_error(IAM_NS, status, code, message)
    }

    const ROLE: &str = "<Role><Path>/aws-service-role/ecs.amazonaws.com/</Path><RoleName>AWSServiceRoleForECS</RoleName><RoleId>AROAEXAMPLE</RoleId><Arn>arn:aws:iam::123456789012:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS</Arn><CreateDate>2026-01-01T00:00:00Z</CreateDate></Role>";

    #[tokio::test]
    async fn a_fresh_account_lacks_the_role_and_it_is_created_for_ecs() {
        let server = MockServer::start().await;
        reply(
            &server,
            "GetRole",
            iam_error(
                404,
                "NoSuchEntity",
                "The role with name AWSServiceRoleForECS cannot be found.",
            ),
        )
        .await;
        Mock::given(method("POST"))
            .and(action("CreateServiceLinkedRole"))
            .and(body_string_contains("AWSServiceName=ecs.amazonaws.com"))
            .respond_with(iam_ok("CreateServiceLinkedRole", ROLE))
            .expect(1)
            .mount(&server)
            .await;
        let client = iam(&server);
        assert!(!has_ecs_role(&client).await.unwrap());
        create_ecs_role(&client).await.unwrap();
    }

    #[tokio::test]
    async fn an_account_with_the_role_is_left_alone() {
        let server = MockServer::start().await;
        reply(&server, "GetRole", iam_ok("GetRole", ROLE)).await;
        Mock::given(method("POST"))
            .and(action("CreateServiceLinkedRole"))
            .respond_with(iam_ok("CreateServiceLinkedRole", ROLE))
            .expect(0)
            .mount(&server)
            .await;
        assert!(has_ecs_role(&iam(&server)).await.unwrap());
    }

    #[tokio::test]
    async fn a_role_created_meanwhile_is_as_good_and_a_refusal_is_reported() {
        let server = MockServer::start().await;
        reply(
            &server,
            "CreateServiceLinkedRole",
            iam_error(400, "InvalidInput", "Service role name AWSServiceRoleForECS has been taken in this account, please try a different suffix."),
        )
        .await;
        create_ecs_role(&iam(&server)).await.unwrap();

        let denied = MockServer::start().await;
        reply(
            &denied,
            "GetRole",
            iam_error(
                403,
                "AccessDenied",
                "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: iam:GetRole",
            ),
        )
        .await;
        let err = has_ecs_role(&iam(&denied)).await.unwrap_err().to_string();
        assert_eq!(
            err,
            "GetRole (the ECS service-linked role) failed: AccessDenied: User: arn:aws:iam::123456789012:user/ci is not authorized to perform: iam:GetRole"
        );
    }
}

mod protection {
    use super::*;
    use wheelhouse::deploy::protection::{release, Released};

    const ELB_NS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";
    const ALB: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/demo/50dc6c495c0c9188";

    fn elb(server: &MockServer) -> aws_sdk_elasticloadbalancingv2::Client {
        aws_sdk_elasticloadbalancingv2::Client::new(&super::sdk_config(server))
    }

    fn protected_stack(termination: bool, alb: bool) -> String {
        format!(
            "<Stacks><member><StackName>demo</StackName><StackId>{STACK_ID}</StackId><CreationTime>2026-01-01T00:00:00Z</CreationTime><StackStatus>CREATE_COMPLETE</StackStatus><EnableTerminationProtection>{termination}</EnableTerminationProtection><Outputs><member><OutputKey>Protected</OutputKey><OutputValue>{alb}</OutputValue></member><member><OutputKey>LoadBalancerArn</OutputKey><OutputValue>{ALB}</OutputValue></member></Outputs></member></Stacks>"
        )
    }

    fn elb_reply(action: &str) -> ResponseTemplate {
        query_ok(
            ELB_NS,
            action,
            "<Attributes><member><Key>deletion_protection.enabled</Key><Value>false</Value></member></Attributes>",
        )
    }

    /// Expects one call turning the load balancer's deletion protection off.
    async fn expect_load_balancer_released(server: &MockServer) {
        Mock::given(method("POST"))
            .and(action("ModifyLoadBalancerAttributes"))
            .and(body_string_contains("deletion_protection.enabled"))
            .and(body_string_contains("Value=false"))
            .respond_with(elb_reply("ModifyLoadBalancerAttributes"))
            .expect(1)
            .mount(server)
            .await;
    }

    #[tokio::test]
    async fn destroy_turns_off_both_protections_of_a_protected_stack() {
        let server = MockServer::start().await;
        reply(
            &server,
            "DescribeStacks",
            ok("DescribeStacks", &protected_stack(true, true)),
        )
        .await;
        Mock::given(method("POST"))
            .and(action("UpdateTerminationProtection"))
            .and(body_string_contains("EnableTerminationProtection=false"))
            .respond_with(ok(
                "UpdateTerminationProtection",
                &format!("<StackId>{STACK_ID}</StackId>"),
            ))
            .expect(1)
            .mount(&server)
            .await;
        expect_load_balancer_released(&server).await;
        let stack = client(&server);
        let state = stack.require_state().await.unwrap();
        assert!(state.termination_protection);
        let released = release(&stack, &state, &elb(&server)).await.unwrap();
        assert_eq!(
            released,
            Released {
                termination_protection: true,
                load_balancer: true
            }
        );
    }

    #[tokio::test]
    async fn a_failed_first_create_without_outputs_has_its_load_balancer_found_and_released() {
        let server = MockServer::start().await;
        let failed = format!(
            "<Stacks><member><StackName>demo</StackName><StackId>{STACK_ID}</StackId><CreationTime>2026-01-01T00:00:00Z</CreationTime><StackStatus>ROLLBACK_FAILED</StackStatus></member></Stacks>"
        );
        reply(&server, "DescribeStacks", ok("DescribeStacks", &failed)).await;
        Mock::given(method("POST"))
            .and(action("DescribeStackResource"))
            .and(body_string_contains("LogicalResourceId=LoadBalancer"))
            .respond_with(ok(
                "DescribeStackResource",
                &format!("<StackResourceDetail><StackName>demo</StackName><StackId>{STACK_ID}</StackId><LogicalResourceId>LoadBalancer</LogicalResourceId><PhysicalResourceId>{ALB}</PhysicalResourceId><ResourceType>AWS::ElasticLoadBalancingV2::LoadBalancer</ResourceType><LastUpdatedTimestamp>2026-01-01T00:00:00Z</LastUpdatedTimestamp><ResourceStatus>DELETE_FAILED</ResourceStatus></StackResourceDetail>"),
            ))
            .expect(1)
            .mount(&server)
            .await;
        expect_load_balancer_released(&server).await;
        let stack = client(&server);
        let state = stack.require_state().await.unwrap();
        assert_eq!(
            release(&stack, &state, &elb(&server)).await.unwrap(),
            Released {
                termination_protection: false,
                load_balancer: true
            }
        );
    }

    #[tokio::test]
    async fn an_unprotected_stack_is_left_alone_and_a_vanished_load_balancer_is_no_obstacle() {
        let server = MockServer::start().await;
        reply(
            &server,
            "DescribeStacks",
            ok("DescribeStacks", &protected_stack(false, false)),
        )
        .await;
        Mock::given(method("POST"))
            .and(action("UpdateTerminationProtection"))
            .respond_with(ok("UpdateTerminationProtection", ""))
            .expect(0)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(action("ModifyLoadBalancerAttributes"))
            .respond_with(elb_reply("ModifyLoadBalancerAttributes"))
            .expect(0)
            .mount(&server)
            .await;
        let stack = client(&server);
        let state = stack.require_state().await.unwrap();
        let released = release(&stack, &state, &elb(&server)).await.unwrap();
        assert_eq!(released, Released::default());

        let gone = MockServer::start().await;
        reply(
            &gone,
            "DescribeStacks",
            ok("DescribeStacks", &protected_stack(false, true)),
        )
        .await;
        reply(
            &gone,
            "ModifyLoadBalancerAttributes",
            error(
                400,
                "LoadBalancerNotFound",
                "One or more load balancers not found",
            ),
        )
        .await;
        let stack = client(&gone);
        let state = stack.require_state().await.unwrap();
        let released = release(&stack, &state, &elb(&gone)).await.unwrap();
        assert_eq!(released, Released::default());
    }
}

/// The preflight against EC2's query protocol: each way a real account's network can be
/// wrong, with the exact message the user gets.
mod preflight {
    use wiremock::matchers::{body_string_contains, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use wheelhouse::deploy::preflight::{
        check, check_hosted_zone, check_image, stack_name_problem,
    };
    use wheelhouse::deploy::settings::{example, Settings};

    const NS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

    fn ec2(server: &MockServer) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&super::sdk_config(server))
    }

    fn response(action: &str, body: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_string(format!(
            "<{action}Response xmlns=\"{NS}\"><requestId>r</requestId>{body}</{action}Response>"
        ))
    }

    /// Answers `action` (and, when given, only requests whose body holds `also`) with `body`;
    /// a lower `priority` wins over the healthy network's answers.
    async fn answer(server: &MockServer, action: &str, also: &str, body: &str, priority: u8) {
        Mock::given(method("POST"))
            .and(body_string_contains(format!("Action={action}&")))
            .and(body_string_contains(also))
            .respond_with(response(action, body))
            .with_priority(priority)
            .mount(server)
            .await;
    }

    fn subnets(list: &[(&str, &str, &str)]) -> String {
        let items: String = list
            .iter()
            .map(|(id, vpc, az)| {
                format!("<item><subnetId>{id}</subnetId><vpcId>{vpc}</vpcId><availabilityZone>{az}</availabilityZone></item>")
            })
            .collect();
        format!("<subnetSet>{items}</subnetSet>")
    }

    fn route_table(id: &str, subnets: &[&str], main: bool, default_route: &str) -> String {
        let associations: String = subnets
            .iter()
            .map(|s| format!("<item><routeTableAssociationId>a-{s}</routeTableAssociationId><routeTableId>{id}</routeTableId><subnetId>{s}</subnetId><main>false</main></item>"))
            .chain(main.then(|| format!("<item><routeTableAssociationId>a-main</routeTableAssociationId><routeTableId>{id}</routeTableId><main>true</main></item>")))
            .collect();
        format!("<item><routeTableId>{id}</routeTableId><vpcId>vpc-1</vpcId><routeSet><item><destinationCidrBlock>10.0.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId><state>active</state></item>{default_route}</routeSet><associationSet>{associations}</associationSet></item>")
    }

    const TO_IGW: &str = "<item><destinationCidrBlock>0.0.0.0/0</destinationCidrBlock><gatewayId>igw-1</gatewayId><state>active</state></item>";
    const TO_NAT: &str = "<item><destinationCidrBlock>0.0.0.0/0</destinationCidrBlock><natGatewayId>nat-1</natGatewayId><state>active</state></item>";

    #[tokio::test]
    async fn an_instance_type_outside_the_table_is_sized_from_ec2() {
        use wheelhouse::deploy::instance_types::resolve;
        let server = MockServer::start().await;
        answer(
            &server,
            "DescribeInstanceTypes",
            "x8g.large",
            "<instanceTypeSet><item><instanceType>x8g.large</instanceType><vCpuInfo><defaultVCpus>2</defaultVCpus></vCpuInfo><memoryInfo><sizeInMiB>16384</sizeInMiB></memoryInfo></item></instanceTypeSet>",
            1,
        )
        .await;
        let mut unknown = Settings {
            instance_type: "x8g.large".into(),
            ..settings()
        };
        assert!(unknown.validate().is_err(), "the table does not know x8g");
        resolve(&mut unknown, &ec2(&server)).await.unwrap();
        assert_eq!(
            (unknown.instance_vcpus, unknown.instance_memory_mib),
            (Some(2), Some(16384))
        );
        unknown.validate().unwrap();
        assert_eq!(unknown.sizing().workers, settings().sizing().workers);

        // A type the table knows is not asked about.
        let asked = server.received_requests().await.unwrap().len();
        let mut known = settings();
        resolve(&mut known, &ec2(&server)).await.unwrap();
        assert_eq!(known.instance_vcpus, None);
        assert_eq!(server.received_requests().await.unwrap().len(), asked);

        // One EC2 does not know either is left for validation to name.
        let nowhere = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_string(
                "<Response><Errors><Error><Code>InvalidInstanceType</Code><Message>The following supplied instance types do not exist: [z9.mega]</Message></Error></Errors><RequestID>r</RequestID></Response>",
            ))
            .mount(&nowhere)
            .await;
        let mut typo = Settings {
            instance_type: "z9.mega".into(),
            ..settings()
        };
        resolve(&mut typo, &ec2(&nowhere)).await.unwrap();
        let errors = typo.validate().unwrap_err();
        assert!(
            errors[0]
                .to_string()
                .starts_with("instance_type = \"z9.mega\": not in the built-in table"),
            "{}",
            errors[0]
        );
    }

    fn settings() -> Settings {
        Settings {
            asg_subnets: vec!["subnet-a1".into(), "subnet-a2".into()],
            lb_subnets: vec!["subnet-b1".into(), "subnet-b2".into()],
            vpc_id: Some("vpc-1".into()),
            ..example()
        }
    }

    /// A network as the appliance wants it: private subnets behind a NAT, public ones routed to
    /// an internet gateway, one per zone, DNS on, the type offered everywhere.
    async fn healthy_network() -> MockServer {
        let server = MockServer::start().await;
        answer(
            &server,
            "DescribeSubnets",
            "",
            &subnets(&[
                ("subnet-a1", "vpc-1", "us-east-1a"),
                ("subnet-a2", "vpc-1", "us-east-1b"),
                ("subnet-b1", "vpc-1", "us-east-1a"),
                ("subnet-b2", "vpc-1", "us-east-1b"),
            ]),
            5,
        )
        .await;
        let tables = route_table("rtb-public", &["subnet-b1", "subnet-b2"], false, TO_IGW)
            + &route_table("rtb-private", &["subnet-a1", "subnet-a2"], false, TO_NAT)
            + &route_table("rtb-main", &[], true, "");
        answer(
            &server,
            "DescribeRouteTables",
            "",
            &format!("<routeTableSet>{tables}</routeTableSet>"),
            5,
        )
        .await;
        answer(&server, "DescribeVpcEndpoints", "", "<vpcEndpointSet/>", 5).await;
        for attribute in ["enableDnsSupport", "enableDnsHostnames"] {
            answer(
                &server,
                "DescribeVpcAttribute",
                &format!("Attribute={attribute}"),
                &format!("<vpcId>vpc-1</vpcId><{attribute}><value>true</value></{attribute}>"),
                5,
            )
            .await;
        }
        let offered: String = ["us-east-1a", "us-east-1b", "us-east-1c"]
            .iter()
            .map(|az| format!("<item><instanceType>t3.small</instanceType><locationType>availability-zone</locationType><location>{az}</location></item>"))
            .collect();
        answer(
            &server,
            "DescribeInstanceTypeOfferings",
            "",
            &format!("<instanceTypeOfferingSet>{offered}</instanceTypeOfferingSet>"),
            5,
        )
        .await;
        server
    }

    fn lines(problems: Vec<wheelhouse::deploy::preflight::Problem>) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    #[tokio::test]
    async fn a_network_as_the_appliance_wants_it_passes() {
        let server = healthy_network().await;
        assert_eq!(
            lines(check(&settings(), &ec2(&server)).await.unwrap()),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn every_problem_of_a_wrong_network_is_named_at_once() {
        let server = healthy_network().await;
        // Both host subnets in one zone, one load balancer subnet missing, the other private.
        answer(
            &server,
            "DescribeSubnets",
            "",
            &subnets(&[
                ("subnet-a1", "vpc-1", "us-east-1a"),
                ("subnet-a2", "vpc-1", "us-east-1a"),
                ("subnet-b1", "vpc-1", "us-east-1c"),
            ]),
            1,
        )
        .await;
        // No NAT, no endpoints; the load balancer subnet falls back to the main table (private).
        let tables = route_table("rtb-private", &["subnet-a1", "subnet-a2"], false, "")
            + &route_table("rtb-main", &[], true, "");
        answer(
            &server,
            "DescribeRouteTables",
            "",
            &format!("<routeTableSet>{tables}</routeTableSet>"),
            1,
        )
        .await;
        answer(
            &server,
            "DescribeVpcAttribute",
            "Attribute=enableDnsHostnames",
            "<vpcId>vpc-1</vpcId><enableDnsHostnames><value>false</value></enableDnsHostnames>",
            1,
        )
        .await;
        answer(
            &server,
            "DescribeInstanceTypeOfferings",
            "",
            "<instanceTypeOfferingSet><item><instanceType>t3.small</instanceType><locationType>availability-zone</locationType><location>us-east-1c</location></item></instanceTypeOfferingSet>",
            1,
        )
        .await;
        let wrong = Settings {
            vpc_id: Some("vpc-9".into()),
            ..settings()
        };
        let endpoints = "com.amazonaws.us-east-1.ecr.api, com.amazonaws.us-east-1.ecr.dkr, com.amazonaws.us-east-1.ecs, com.amazonaws.us-east-1.ecs-agent, com.amazonaws.us-east-1.ecs-telemetry, com.amazonaws.us-east-1.logs, com.amazonaws.us-east-1.s3 (a gateway endpoint on the subnet's route table), com.amazonaws.us-east-1.secretsmanager";
        assert_eq!(
            lines(check(&wrong, &ec2(&server)).await.unwrap()),
            [
                "lb_subnets: subnet-b2 does not exist in us-east-1: check the id and the region".to_owned(),
                "vpc_id: is vpc-9, but the subnets are in vpc-1: leave vpc_id out, or use that VPC's subnets".into(),
                "asg_subnets: subnet-a1 and subnet-a2 are all in us-east-1a: EFS takes one mount target per Availability Zone, so the second fails (MountTargetConflict); keep one subnet per zone".into(),
                "lb_subnets: every subnet is in us-east-1c: a load balancer needs subnets in at least two Availability Zones".into(),
                "asg_subnets: no subnet of lb_subnets is in us-east-1a (the zone of subnet-a1 and subnet-a2): the load balancer would not send traffic to tasks there, and they would never pass its health check; add a subnet in us-east-1a to lb_subnets".into(),
                "lb_subnets: subnet-b1 has no route to an internet gateway (0.0.0.0/0 via igw-...): an internet-facing load balancer cannot be reached in it; use public subnets".into(),
                format!("asg_subnets: subnet-a1 reaches AWS neither through a NAT (0.0.0.0/0 via a NAT gateway) nor through VPC endpoints (missing, interface endpoints with private DNS: {endpoints}): the hosts could not pull the image, join the cluster or send logs, and would be replaced forever"),
                format!("asg_subnets: subnet-a2 reaches AWS neither through a NAT (0.0.0.0/0 via a NAT gateway) nor through VPC endpoints (missing, interface endpoints with private DNS: {endpoints}): the hosts could not pull the image, join the cluster or send logs, and would be replaced forever"),
                "asg_subnets: their VPC vpc-1 has enableDnsHostnames off: the hosts mount EFS by its DNS name; turn on DNS support and DNS hostnames in the VPC".into(),
                "instance_type: t3.small is not offered in us-east-1a (the zone of subnet-a1 and subnet-a2): choose a type offered in every zone of asg_subnets, or other subnets".into(),
            ]
        );
    }

    #[tokio::test]
    async fn vpc_endpoints_stand_in_for_a_nat_when_they_really_serve_the_hosts() {
        let server = healthy_network().await;
        let tables = route_table("rtb-public", &["subnet-b1", "subnet-b2"], false, TO_IGW)
            + &route_table("rtb-main", &[], true, "");
        answer(
            &server,
            "DescribeRouteTables",
            "",
            &format!("<routeTableSet>{tables}</routeTableSet>"),
            1,
        )
        .await;
        let endpoint = |service: &str, extra: &str| {
            format!("<item><vpcEndpointId>vpce-{service}</vpcEndpointId><serviceName>com.amazonaws.us-east-1.{service}</serviceName><state>available</state>{extra}</item>")
        };
        let interfaces: String = [
            "ecr.api",
            "ecr.dkr",
            "ecs",
            "ecs-agent",
            "ecs-telemetry",
            "logs",
            "secretsmanager",
        ]
        .iter()
        .map(|service| endpoint(service, "<privateDnsEnabled>true</privateDnsEnabled>"))
        .collect();
        let image_here = Settings {
            image_repository: "123456789012.dkr.ecr.us-east-1.amazonaws.com/wheelhouse".into(),
            ..settings()
        };
        let message = |missing: &str| {
            format!("asg_subnets: {{}} reaches AWS neither through a NAT (0.0.0.0/0 via a NAT gateway) nor through VPC endpoints (missing, interface endpoints with private DNS: {missing}): the hosts could not pull the image, join the cluster or send logs, and would be replaced forever")
        };

        // An S3 endpoint that is not on the hosts' route table serves them nothing.
        let elsewhere = interfaces.clone()
            + &endpoint(
                "s3",
                "<routeTableIdSet><item>rtb-public</item></routeTableIdSet>",
            );
        answer(
            &server,
            "DescribeVpcEndpoints",
            "",
            &format!("<vpcEndpointSet>{elsewhere}</vpcEndpointSet>"),
            2,
        )
        .await;
        let expected =
            message("com.amazonaws.us-east-1.s3 (a gateway endpoint on the subnet's route table)");
        assert_eq!(
            lines(check(&image_here, &ec2(&server)).await.unwrap()),
            [
                expected.replace("{}", "subnet-a1"),
                expected.replace("{}", "subnet-a2")
            ]
        );

        // On the hosts' table, with private DNS on every interface endpoint: enough.
        let serving = interfaces.clone()
            + &endpoint(
                "s3",
                "<routeTableIdSet><item>rtb-main</item></routeTableIdSet>",
            );
        answer(
            &server,
            "DescribeVpcEndpoints",
            "",
            &format!("<vpcEndpointSet>{serving}</vpcEndpointSet>"),
            1,
        )
        .await;
        assert_eq!(
            lines(check(&image_here, &ec2(&server)).await.unwrap()),
            Vec::<String>::new()
        );

        // ... but not for an image in another region's registry.
        let problems = lines(check(&settings(), &ec2(&server)).await.unwrap());
        assert_eq!(
            problems[0],
            "image_repository: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/wheelhouse is not in this region's ECR, and subnet-a1 reaches AWS only through VPC endpoints: the hosts could not pull it; copy the image to ECR in us-east-1, or give the subnet a NAT"
        );
    }

    #[tokio::test]
    async fn public_hosts_go_out_through_the_internet_gateway_and_a_zone_takes_one_lb_subnet() {
        let server = healthy_network().await;
        let tables = route_table(
            "rtb-public",
            &["subnet-a1", "subnet-a2", "subnet-b1", "subnet-b2"],
            false,
            TO_IGW,
        ) + &route_table("rtb-main", &[], true, "");
        answer(
            &server,
            "DescribeRouteTables",
            "",
            &format!("<routeTableSet>{tables}</routeTableSet>"),
            1,
        )
        .await;
        // Hosts in public subnets without public addresses have no way out.
        let expected = "reaches AWS neither through a NAT";
        let problems = lines(check(&settings(), &ec2(&server)).await.unwrap());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().all(|p| p.contains(expected)),
            "{problems:?}"
        );
        // With public addresses, the internet gateway is their way out.
        let public: String = [("subnet-a1", "us-east-1a"), ("subnet-a2", "us-east-1b"), ("subnet-b1", "us-east-1a"), ("subnet-b2", "us-east-1b")]
            .iter()
            .map(|(id, az)| format!("<item><subnetId>{id}</subnetId><vpcId>vpc-1</vpcId><availabilityZone>{az}</availabilityZone><mapPublicIpOnLaunch>true</mapPublicIpOnLaunch></item>"))
            .collect();
        answer(
            &server,
            "DescribeSubnets",
            "",
            &format!("<subnetSet>{public}</subnetSet>"),
            1,
        )
        .await;
        assert_eq!(
            lines(check(&settings(), &ec2(&server)).await.unwrap()),
            Vec::<String>::new()
        );
        // Two load balancer subnets in one zone are refused by ELB.
        let same_zone = Settings {
            lb_subnets: vec!["subnet-b1".into(), "subnet-a1".into(), "subnet-b2".into()],
            ..settings()
        };
        assert_eq!(
            lines(check(&same_zone, &ec2(&server)).await.unwrap()),
            ["lb_subnets: subnet-b1 and subnet-a1 are all in us-east-1a: a load balancer takes one subnet per Availability Zone; keep one subnet per zone"]
        );
    }

    #[tokio::test]
    async fn subnets_of_two_vpcs_are_refused() {
        let server = healthy_network().await;
        answer(
            &server,
            "DescribeSubnets",
            "",
            &subnets(&[
                ("subnet-a1", "vpc-1", "us-east-1a"),
                ("subnet-a2", "vpc-1", "us-east-1b"),
                ("subnet-b1", "vpc-2", "us-east-1a"),
                ("subnet-b2", "vpc-2", "us-east-1b"),
            ]),
            1,
        )
        .await;
        assert_eq!(
            lines(check(&settings(), &ec2(&server)).await.unwrap()),
            ["asg_subnets: every subnet (asg_subnets and lb_subnets) must be in one VPC: subnet-a1 in vpc-1, subnet-a2 in vpc-1, subnet-b1 in vpc-2, subnet-b2 in vpc-2"]
        );
    }

    fn zone(status: u16, body: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_string(format!(
            "<?xml version=\"1.0\"?>{}",
            body.replace("NS", "https://route53.amazonaws.com/doc/2013-04-01/")
        ))
    }

    fn described_zone(name: &str, private: bool) -> ResponseTemplate {
        zone(200, &format!("<GetHostedZoneResponse xmlns=\"NS\"><HostedZone><Id>/hostedzone/Z0123456789ABCDEFGHIJ</Id><Name>{name}</Name><CallerReference>c</CallerReference><Config><PrivateZone>{private}</PrivateZone></Config><ResourceRecordSetCount>2</ResourceRecordSetCount></HostedZone><DelegationSet><NameServers><NameServer>ns-1.awsdns-00.com</NameServer></NameServers></DelegationSet></GetHostedZoneResponse>"))
    }

    /// The problems with the hosted zone when Route 53 answers `answer`.
    async fn zone_problems(answer: ResponseTemplate) -> Vec<String> {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(wiremock::matchers::path(
                "/2013-04-01/hostedzone/Z0123456789ABCDEFGHIJ",
            ))
            .respond_with(answer)
            .expect(1)
            .mount(&server)
            .await;
        let route53 = aws_sdk_route53::Client::new(&super::sdk_config(&server));
        lines(check_hosted_zone(&settings(), &route53).await.unwrap())
    }

    #[tokio::test]
    async fn the_hosted_zone_must_exist_be_public_and_have_the_settings_name() {
        assert_eq!(
            zone_problems(described_zone("example.com.", false)).await,
            Vec::<String>::new()
        );
        assert_eq!(
            zone_problems(described_zone("example.com.", true)).await,
            ["hosted_zone_id: Z0123456789ABCDEFGHIJ (example.com.) is a private zone: the certificate is validated and the index reached through public DNS; use the public zone of that name"]
        );
        assert_eq!(
            zone_problems(described_zone("other.org.", false)).await,
            ["hosted_zone_name: \"example.com\", but hosted zone Z0123456789ABCDEFGHIJ is \"other.org\": set hosted_zone_name = \"other.org\", or the id of the \"example.com\" zone"]
        );
        let missing = zone(404, "<ErrorResponse xmlns=\"NS\"><Error><Type>Sender</Type><Code>NoSuchHostedZone</Code><Message>No hosted zone found with ID: Z0123456789ABCDEFGHIJ</Message></Error><RequestId>r</RequestId></ErrorResponse>");
        assert_eq!(
            zone_problems(missing).await,
            ["hosted_zone_id: Z0123456789ABCDEFGHIJ is not a hosted zone of this account (NoSuchHostedZone): copy the id from Route 53, without /hostedzone/"]
        );
    }

    /// The problems with the image when ECR answers `answer`; `calls` requests expected.
    async fn image_problems(
        settings: &Settings,
        answer: ResponseTemplate,
        calls: u64,
    ) -> Vec<String> {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(wiremock::matchers::header(
                "x-amz-target",
                "AmazonEC2ContainerRegistry_V20150921.DescribeImages",
            ))
            .and(body_string_contains("\"registryId\":\"123456789012\""))
            .and(body_string_contains("\"repositoryName\":\"wheelhouse\""))
            .and(body_string_contains("\"imageTag\":\"0.1.0\""))
            .respond_with(answer)
            .expect(calls)
            .mount(&server)
            .await;
        lines(
            check_image(settings, &super::sdk_config(&server))
                .await
                .unwrap(),
        )
    }

    fn ecr_error(code: &str) -> ResponseTemplate {
        ResponseTemplate::new(400)
            .insert_header("content-type", "application/x-amz-json-1.1")
            .set_body_string(format!(
                "{{\"__type\":\"{code}\",\"message\":\"not here\"}}"
            ))
    }

    #[tokio::test]
    async fn an_image_in_ecr_must_exist_with_its_tag() {
        let found = ResponseTemplate::new(200)
            .insert_header("content-type", "application/x-amz-json-1.1")
            .set_body_string("{\"imageDetails\":[{\"imageTags\":[\"0.1.0\"]}]}");
        assert_eq!(
            image_problems(&settings(), found, 1).await,
            Vec::<String>::new()
        );
        assert_eq!(
            image_problems(&settings(), ecr_error("RepositoryNotFoundException"), 1).await,
            ["image_repository: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/wheelhouse does not exist in ECR (account 123456789012, eu-west-1): push the server image there first"]
        );
        assert_eq!(
            image_problems(&settings(), ecr_error("ImageNotFoundException"), 1).await,
            ["image_tag: \"0.1.0\" is not a tag of 123456789012.dkr.ecr.eu-west-1.amazonaws.com/wheelhouse: push the server image with that tag first"]
        );
        // An image in another registry is not looked up.
        let elsewhere = Settings {
            image_repository: "ghcr.io/acme/wheelhouse".into(),
            ..settings()
        };
        assert_eq!(
            image_problems(&elsewhere, ecr_error("RepositoryNotFoundException"), 0).await,
            Vec::<String>::new()
        );
    }

    #[test]
    fn stack_names_cloudformation_refuses_are_named() {
        assert_eq!(stack_name_problem("prod"), None);
        assert_eq!(stack_name_problem("ecs-index-2"), None);
        for bad in ["2prod", "prod_1", "", &"a".repeat(129)] {
            let problem = stack_name_problem(bad).expect(bad);
            assert_eq!(
                problem.to_string(),
                format!("--stack: {bad:?} is not a CloudFormation stack name: a letter, then letters, digits and -, at most 128 characters")
            );
        }
    }
}

/// The command line as a user runs it, against the stand-in or, with no AWS to reach, alone.
mod command_line {
    use std::path::Path;
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer};

    use super::{action, ok, reply, stack};
    use crate::common::text;

    /// `wheelhouse-deploy` as the LocalStack tests run it, against `endpoint`, its output kept.
    fn deploy(endpoint: &str, config: &Path, args: &[&str]) -> Command {
        let binary = Path::new(env!("CARGO_BIN_EXE_wheelhouse-deploy"));
        let mut command = crate::localstack::deploy_command(binary, "demo", endpoint, config, args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    /// A settings file destroy never reads.
    const NO_SETTINGS: &str = "unused-settings.toml";

    /// `sizing` reads only the sizing inputs: a settings file with nothing else is enough,
    /// and no AWS call is made for an instance type the built-in table knows.
    #[test]
    fn sizing_works_from_an_incomplete_settings_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = dir.path().join("partial.toml");
        std::fs::write(&settings, "instance_type = \"t3.small\"\n").unwrap();
        // Nothing listens there: a call to AWS would fail the command.
        let nowhere = "http://127.0.0.1:9";
        let small = deploy(nowhere, &settings, &["sizing"]).output().unwrap();
        assert!(small.status.success(), "{}", text(&small));
        let small = String::from_utf8_lossy(&small.stdout).into_owned();
        assert!(small.contains("tasks per instance"), "{small}");
        assert!(small.contains("t3.small"), "{small}");

        let large = deploy(
            nowhere,
            &settings,
            &["sizing", "--instance-type", "m7g.large"],
        )
        .output()
        .unwrap();
        assert!(large.status.success(), "{}", text(&large));
        let large = String::from_utf8_lossy(&large.stdout).into_owned();
        assert!(large.contains("m7g.large"), "{large}");
        assert_ne!(small, large);
    }

    /// Exit codes: 1 when a destroy is declined (no terminal to confirm on) or fails, 130
    /// when Ctrl-C stops the following, which leaves the stack operation running.
    #[tokio::test]
    async fn destroy_exits_1_when_declined_or_failed_and_130_when_interrupted() {
        let server = MockServer::start().await;
        // Before the delete the stack is complete; after it, it stays in DELETE_IN_PROGRESS
        // or fails, as each case below needs.
        let complete = stack("CREATE_COMPLETE").replace(
            "</Outputs>",
            "<member><OutputKey>Protected</OutputKey><OutputValue>false</OutputValue></member></Outputs>",
        );
        reply(
            &server,
            "DescribeStackEvents",
            ok("DescribeStackEvents", "<StackEvents></StackEvents>"),
        )
        .await;
        reply(&server, "DeleteStack", ok("DeleteStack", "")).await;
        let endpoint = server.uri();

        let describe_once = |status: &str| {
            let body = complete.replace("CREATE_COMPLETE", status);
            Mock::given(method("POST"))
                .and(action("DescribeStacks"))
                .respond_with(ok("DescribeStacks", &body))
        };

        // No --yes and no terminal: declined, nothing deleted.
        describe_once("CREATE_COMPLETE")
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        let declined = deploy(&endpoint, Path::new(NO_SETTINGS), &["destroy"])
            .output()
            .unwrap();
        assert_eq!(declined.status.code(), Some(1), "{}", text(&declined));
        assert!(
            text(&declined).contains("pass --yes"),
            "{}",
            text(&declined)
        );
        assert_eq!(deletes(&server).await, 0);

        // The delete fails.
        describe_once("CREATE_COMPLETE")
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        describe_once("DELETE_FAILED")
            .up_to_n_times(1)
            .with_priority(2)
            .mount(&server)
            .await;
        let failed = deploy(&endpoint, Path::new(NO_SETTINGS), &["destroy", "--yes"])
            .output()
            .unwrap();
        assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
        assert!(text(&failed).contains("DELETE_FAILED"), "{}", text(&failed));
        assert_eq!(deletes(&server).await, 1);

        // Interrupted while following: 130, and the user told how to follow on.
        describe_once("CREATE_COMPLETE")
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        describe_once("DELETE_IN_PROGRESS")
            .with_priority(3)
            .mount(&server)
            .await;
        let child = deploy(&endpoint, Path::new(NO_SETTINGS), &["destroy", "--yes"])
            .spawn()
            .unwrap();
        // Following has begun (and with it the Ctrl-C handler, polled alongside it) once the
        // stack is described after the second delete.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !described_after_delete(&server, 2).await {
            assert!(
                Instant::now() < deadline,
                "the destroy did not start following"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SAFETY: kill only sends a signal to the child this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let interrupted = exit_within(child, Duration::from_secs(20));
        assert_eq!(
            interrupted.status.code(),
            Some(130),
            "{}",
            text(&interrupted)
        );
        assert!(
            text(&interrupted).contains("Interrupted"),
            "{}",
            text(&interrupted)
        );
    }

    /// The child's output once it exits, or a failure (and the child killed) if it has not
    /// within `limit`: a Ctrl-C that stopped working must fail the test, not hang it.
    fn exit_within(mut child: std::process::Child, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("wheelhouse-deploy did not exit within {limit:?} of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }

    /// The actions the stand-in was asked for, in order.
    async fn actions(server: &MockServer) -> Vec<String> {
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|request| {
                let body = String::from_utf8_lossy(&request.body).into_owned();
                let action = body.strip_prefix("Action=")?.split('&').next()?.to_owned();
                Some(action)
            })
            .collect()
    }

    async fn deletes(server: &MockServer) -> usize {
        actions(server)
            .await
            .iter()
            .filter(|action| *action == "DeleteStack")
            .count()
    }

    /// Whether DescribeStacks was asked for after the `nth` DeleteStack.
    async fn described_after_delete(server: &MockServer, nth: usize) -> bool {
        let actions = actions(server).await;
        let Some(delete) = actions
            .iter()
            .enumerate()
            .filter(|(_, action)| *action == "DeleteStack")
            .nth(nth - 1)
            .map(|(i, _)| i)
        else {
            return false;
        };
        actions[delete..]
            .iter()
            .any(|action| action == "DescribeStacks")
    }
}
