//! The CloudFormation edges a real service cannot be made to produce on demand, against a
//! wiremock stand-in speaking CloudFormation's query protocol: throttling, an empty change
//! set, a failed create that rolls back, paginated events, and error reporting.

use std::time::Duration;

use aws_sdk_cloudformation::config::{BehaviorVersion, Credentials, Region};
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

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
    ResponseTemplate::new(200).set_body_string(format!(
        "<{action}Response xmlns=\"{NS}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></{action}Response>"
    ))
}

fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_string(format!(
        "<ErrorResponse xmlns=\"{NS}\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    ))
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
        let config = aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .endpoint_url(server.uri())
            .credentials_provider(aws_sdk_iam::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build();
        aws_sdk_iam::Client::from_conf(config)
    }

    fn iam_ok(action: &str, result: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_string(format!(
            "<{action}Response xmlns=\"{IAM_NS}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></{action}Response>"
        ))
    }

    fn iam_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_string(format!(
            "<ErrorResponse xmlns=\"{IAM_NS}\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
        ))
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
