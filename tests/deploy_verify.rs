//! `wheelhouse-deploy verify`: its client-side checks against real replicas sharing one
//! directory, and every AWS row, passing and failing, against wiremock stand-ins of ECS,
//! ELBv2, EFS, Backup and CloudWatch.

use crate::aws_mock;
use crate::common;

use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use aws_mock::{cbor_ok, json_error, json_ok, query_error, query_ok, sdk_config};
use common::replica::Replica;
use wheelhouse::deploy::verify::endpoint::{self, Endpoint, Replicas};
use wheelhouse::deploy::verify::probe::Probe;
use wheelhouse::deploy::verify::services::{self, Parts};
use wheelhouse::deploy::verify::Row;

const ELB_NS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";
const USER: &str = "deployer";
const PASSWORD: &str = "s3cret-pass";

fn parts() -> Parts {
    Parts {
        cluster: Some("wh-cluster".into()),
        service: Some("wh-service".into()),
        target_group: Some(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/wh/1".into(),
        ),
        file_system: Some("fs-0123".into()),
        backup_plan: Some("plan-1".into()),
        alarms: vec!["wh-5xx".into(), "wh-unhealthy".into()],
    }
}

fn ecs(services: serde_json::Value) -> Mock {
    Mock::given(method("POST"))
        .and(header(
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.DescribeServices",
        ))
        .respond_with(json_ok(
            serde_json::json!({ "services": services, "failures": [] }),
        ))
}

fn target_health(members: &str) -> Mock {
    Mock::given(method("POST"))
        .and(body_string_contains("Action=DescribeTargetHealth"))
        .respond_with(query_ok(
            ELB_NS,
            "DescribeTargetHealth",
            &format!("<TargetHealthDescriptions>{members}</TargetHealthDescriptions>"),
        ))
}

fn target(id: &str, state: &str, reason: &str) -> String {
    format!("<member><Target><Id>{id}</Id><Port>32768</Port></Target><TargetHealth><State>{state}</State>{reason}</TargetHealth></member>")
}

fn mount_targets(states: &[(&str, &str)]) -> Mock {
    let targets: Vec<_> = states
        .iter()
        .enumerate()
        .map(|(i, (zone, state))| {
            serde_json::json!({
                "MountTargetId": format!("fsmt-{i}"), "FileSystemId": "fs-0123",
                "SubnetId": format!("subnet-{i}"), "LifeCycleState": state,
                "AvailabilityZoneName": zone, "OwnerId": "123456789012",
            })
        })
        .collect();
    Mock::given(method("GET"))
        .and(path("/2015-02-01/mount-targets"))
        .and(query_param("FileSystemId", "fs-0123"))
        .respond_with(json_ok(serde_json::json!({ "MountTargets": targets })))
}

fn backup_plan(response: ResponseTemplate) -> Mock {
    Mock::given(method("GET"))
        .and(path("/backup/plans/plan-1"))
        .respond_with(response)
}

fn selections(count: usize) -> Mock {
    let list: Vec<_> = (0..count)
        .map(|i| serde_json::json!({ "SelectionId": format!("s{i}"), "SelectionName": "packages" }))
        .collect();
    Mock::given(method("GET"))
        .and(path("/backup/plans/plan-1/selections"))
        .respond_with(json_ok(serde_json::json!({ "BackupSelectionsList": list })))
}

fn alarms(states: &[(&str, &str)]) -> Mock {
    let alarms: Vec<_> = states
        .iter()
        .map(|(name, state)| {
            serde_json::json!({ "AlarmName": name, "StateValue": state, "StateReason": format!("{name} is {state}") })
        })
        .collect();
    Mock::given(method("POST"))
        .and(path(
            "/service/GraniteServiceVersion20100801/operation/DescribeAlarms",
        ))
        .respond_with(cbor_ok(&serde_json::json!({ "MetricAlarms": alarms })))
}

fn row<'a>(rows: &'a [Row], check: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.check == check)
        .unwrap_or_else(|| panic!("no row {check:?} in {rows:#?}"))
}

#[tokio::test]
async fn a_healthy_stack_passes_every_aws_row() {
    let server = MockServer::start().await;
    ecs(serde_json::json!([{
        "serviceName": "wh-service", "runningCount": 2, "desiredCount": 2,
        "deployments": [{ "id": "d1", "status": "PRIMARY", "rolloutState": "COMPLETED" }]
    }]))
    .mount(&server)
    .await;
    target_health(
        &(target("i-1", "healthy", "")
            + &target("i-2", "healthy", "")
            + &target("i-3", "draining", "")),
    )
    .mount(&server)
    .await;
    mount_targets(&[("us-east-1a", "available"), ("us-east-1b", "available")])
        .mount(&server)
        .await;
    backup_plan(json_ok(serde_json::json!({
        "BackupPlanId": "plan-1",
        "BackupPlan": { "BackupPlanName": "wh-daily", "Rules": [{ "RuleName": "daily", "TargetBackupVaultName": "wh" }] }
    })))
    .mount(&server)
    .await;
    selections(1).mount(&server).await;
    alarms(&[("wh-5xx", "OK"), ("wh-unhealthy", "INSUFFICIENT_DATA")])
        .mount(&server)
        .await;

    let (rows, healthy) = services::check(&sdk_config(&server), &parts()).await;
    assert_eq!(healthy, Some(2));
    let details: Vec<(&str, bool, &str)> = rows
        .iter()
        .map(|r| (r.check.as_str(), r.passed, r.detail.as_str()))
        .collect();
    assert_eq!(
        details,
        [
            ("ECS tasks running", true, "2 running of 2 desired"),
            (
                "load balancer targets healthy",
                true,
                "2 of 2 healthy (1 more draining)"
            ),
            (
                "EFS mount targets available",
                true,
                "fs-0123 in us-east-1a, us-east-1b"
            ),
            ("backup plan", true, "wh-daily, 1 rule(s), 1 selection(s)"),
            (
                "alarms not in ALARM",
                true,
                "2 alarm(s), none firing (1 without data yet)"
            ),
        ]
    );
}

#[tokio::test]
async fn each_broken_part_is_a_failing_row_that_says_what_is_wrong() {
    let server = MockServer::start().await;
    ecs(serde_json::json!([{
        "serviceName": "wh-service", "runningCount": 1, "desiredCount": 2,
        "events": [{ "id": "e1", "message": "(service wh-service) was unable to place a task because no container instance met all of its requirements." }]
    }]))
    .mount(&server)
    .await;
    target_health(
        &(target("i-1", "healthy", "")
            + &target(
                "i-2",
                "unhealthy",
                "<Reason>Target.ResponseCodeMismatch</Reason><Description>Health checks failed with these codes: [503]</Description>",
            )),
    )
    .mount(&server)
    .await;
    mount_targets(&[("us-east-1a", "available"), ("us-east-1b", "creating")])
        .mount(&server)
        .await;
    backup_plan(json_error(
        404,
        "ResourceNotFoundException",
        "Failed reading Backup plan with provided version",
    ))
    .mount(&server)
    .await;
    alarms(&[("wh-5xx", "ALARM")]).mount(&server).await;

    let (rows, healthy) = services::check(&sdk_config(&server), &parts()).await;
    assert_eq!(healthy, Some(1));
    assert!(rows.iter().all(|r| !r.passed), "{rows:#?}");
    assert_eq!(
        row(&rows, "ECS tasks running").detail,
        "1 running of 2 desired; latest event: (service wh-service) was unable to place a task because no container instance met all of its requirements."
    );
    assert_eq!(
        row(&rows, "load balancer targets healthy").detail,
        "1 of 2 healthy; i-2:32768 unhealthy (Health checks failed with these codes: [503])"
    );
    assert_eq!(
        row(&rows, "EFS mount targets available").detail,
        "fs-0123: us-east-1b creating"
    );
    let backup = &row(&rows, "backup plan").detail;
    assert!(
        backup.contains("GetBackupPlan") && backup.contains("ResourceNotFoundException"),
        "{backup}"
    );
    assert_eq!(
        row(&rows, "alarms not in ALARM").detail,
        "in ALARM: wh-5xx (wh-5xx is ALARM)"
    );
}

#[tokio::test]
async fn a_rollout_under_way_a_rolled_back_one_and_a_plan_selecting_nothing_fail() {
    let rows_with = |deployments: serde_json::Value| async move {
        let server = MockServer::start().await;
        ecs(serde_json::json!([{
            "serviceName": "wh-service", "runningCount": 4, "desiredCount": 2,
            "deployments": deployments
        }]))
        .mount(&server)
        .await;
        backup_plan(json_ok(serde_json::json!({
            "BackupPlanId": "plan-1",
            "BackupPlan": { "BackupPlanName": "wh-daily", "Rules": [{ "RuleName": "daily", "TargetBackupVaultName": "wh" }] }
        })))
        .mount(&server)
        .await;
        selections(0).mount(&server).await;
        services::check(&sdk_config(&server), &parts()).await.0
    };
    let rows = rows_with(serde_json::json!([
        { "id": "d2", "status": "PRIMARY", "rolloutState": "IN_PROGRESS" },
        { "id": "d1", "status": "ACTIVE", "rolloutState": "COMPLETED" }
    ]))
    .await;
    let tasks = row(&rows, "ECS tasks running");
    assert!(
        !tasks.passed,
        "4 running of 2 mid-rollout is no proof: {tasks:?}"
    );
    assert_eq!(
        tasks.detail,
        "a deployment is in progress (2 deployments, 4 tasks running): run verify again when it settles"
    );
    let backup = row(&rows, "backup plan");
    assert!(!backup.passed);
    assert_eq!(
        backup.detail,
        "wh-daily (plan-1) selects no resource: nothing is backed up"
    );

    let rows = rows_with(serde_json::json!([{
        "id": "d1", "status": "PRIMARY", "rolloutState": "FAILED",
        "rolloutStateReason": "ECS deployment circuit breaker: tasks failed to start."
    }]))
    .await;
    assert_eq!(
        row(&rows, "ECS tasks running").detail,
        "the deployment is FAILED: ECS deployment circuit breaker: tasks failed to start."
    );
}

#[tokio::test]
async fn no_targets_no_mount_targets_and_a_missing_alarm_fail() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header(
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.DescribeServices",
        ))
        .respond_with(json_ok(serde_json::json!({
            "services": [],
            "failures": [{ "arn": "wh-service", "reason": "MISSING" }]
        })))
        .mount(&server)
        .await;
    target_health("").mount(&server).await;
    mount_targets(&[]).mount(&server).await;
    alarms(&[("wh-5xx", "OK")]).mount(&server).await;
    Mock::given(method("POST"))
        .and(body_string_contains("Action=DescribeTargetGroups"))
        .respond_with(query_error(
            ELB_NS,
            400,
            "TargetGroupNotFound",
            "no such group",
        ))
        .mount(&server)
        .await;
    let parts = Parts {
        backup_plan: None,
        ..parts()
    };

    let (rows, healthy) = services::check(&sdk_config(&server), &parts).await;
    assert_eq!(healthy, Some(0));
    assert_eq!(
        row(&rows, "ECS tasks running").detail,
        "service wh-service in cluster wh-cluster: MISSING"
    );
    assert_eq!(
        row(&rows, "load balancer targets healthy").detail,
        "no target is registered: no task is running"
    );
    assert_eq!(
        row(&rows, "EFS mount targets available").detail,
        "fs-0123 has no mount target: no host can mount it"
    );
    let backup = row(&rows, "backup plan");
    assert!(backup.passed, "backup off is not a failure: {backup:?}");
    assert_eq!(backup.detail, "none: backup is off in the settings");
    assert_eq!(
        row(&rows, "alarms not in ALARM").detail,
        "missing: wh-unhealthy"
    );
}

/// Two replicas sharing one directory, with the credentials the stack would give them.
struct Pair {
    packages: tempfile::TempDir,
    _logs: tempfile::TempDir,
    replicas: Vec<Replica>,
}

fn pair(args: &[&str]) -> Pair {
    let packages = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let replicas = (0..2)
        .map(|i| {
            Replica::start_with_env(
                &format!("replica{i}"),
                packages.path(),
                logs.path(),
                args,
                &[
                    ("WHEELHOUSE_USERNAME", USER),
                    ("WHEELHOUSE_PASSWORD", PASSWORD),
                ],
            )
        })
        .collect();
    Pair {
        packages,
        _logs: logs,
        replicas,
    }
}

fn url(text: &str) -> reqwest::Url {
    reqwest::Url::parse(text).unwrap()
}

fn endpoint(base: &str, password: &str, replicas: Replicas) -> Endpoint {
    Endpoint {
        base: url(base),
        names: vec!["127.0.0.1".into()],
        username: USER.into(),
        password: password.into(),
        replicas,
    }
}

/// The endpoint checks, from a test that is not async: the replicas' helper waits for them
/// with a blocking client, which may not run inside a runtime.
fn check(endpoint: &Endpoint, probe: &Probe) -> Vec<Row> {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(endpoint::check(endpoint, probe))
}

const PROTECTED: &[&str] = &["-a", "download,list,update"];

#[test]
fn the_probe_goes_up_is_read_from_every_replica_and_is_removed() {
    let pair = pair(PROTECTED);
    let targets: Vec<_> = pair.replicas.iter().map(|r| url(&r.url())).collect();
    let probe = Probe::new(1_700_000_001);
    let rows = check(
        &endpoint(&pair.replicas[0].url(), PASSWORD, Replicas::Each(targets)),
        &probe,
    );

    assert!(rows.iter().all(|r| r.passed), "{rows:#?}");
    let checks: Vec<&str> = rows.iter().map(|r| r.check.as_str()).collect();
    assert_eq!(
        checks[..5],
        [
            "DNS 127.0.0.1",
            "/simple/ without credentials is 401",
            "probe upload",
            "probe listed",
            "probe .metadata (PEP 658)",
        ]
    );
    // Each download names the replica that sent it: two processes, two names.
    for replica in &pair.replicas {
        let download = rows
            .iter()
            .find(|r| {
                r.check
                    .starts_with(&format!("download from {}/", replica.url()))
            })
            .unwrap_or_else(|| panic!("no download row for {}: {rows:#?}", replica.url()));
        assert!(
            download.check.ends_with(&format!("/{})", replica.pid())),
            "{download:?}"
        );
        assert!(download
            .detail
            .starts_with(&format!("sha256 {}", &probe.sha256[..16])));
    }
    assert_eq!(rows.last().unwrap().check, "probe removed");
    let left: Vec<_> = std::fs::read_dir(pair.packages.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("verify_probe"))
        .collect();
    assert!(left.is_empty(), "the probe is still on disk: {left:?}");
}

#[test]
fn through_one_address_it_counts_the_replicas_that_answered() {
    let pair = pair(PROTECTED);
    let base = pair.replicas[1].url();

    let rows = check(
        &endpoint(&base, PASSWORD, Replicas::Through(Some(1))),
        &Probe::new(1_700_000_002),
    );
    assert!(rows.iter().all(|r| r.passed), "{rows:#?}");
    assert_eq!(
        row(&rows, "every healthy target answered").detail,
        "1 of 1 in 1 requests"
    );
    let answered: Vec<_> = rows
        .iter()
        .filter(|r| r.check.starts_with("download via replica "))
        .collect();
    assert_eq!(answered.len(), 1, "{rows:#?}");
    assert!(answered[0]
        .check
        .ends_with(&format!("/{}", pair.replicas[1].pid())));

    // Two healthy targets, but only one ever answers at this address.
    let rows = check(
        &endpoint(&base, PASSWORD, Replicas::Through(Some(2))),
        &Probe::new(1_700_000_003),
    );
    let all = row(&rows, "every healthy target answered");
    assert!(!all.passed);
    assert_eq!(all.detail, "1 of 2 answered in 20 requests");
    assert!(row(&rows, "probe removed").passed, "{rows:#?}");
}

#[test]
fn an_open_index_and_wrong_credentials_are_failing_rows() {
    let open = pair(&["-P", ".", "-a", "."]);
    let rows = check(
        &endpoint(
            &open.replicas[0].url(),
            PASSWORD,
            Replicas::Through(Some(1)),
        ),
        &Probe::new(1_700_000_004),
    );
    let credentials = row(&rows, "/simple/ without credentials is 401");
    assert!(!credentials.passed);
    assert_eq!(
        credentials.detail,
        format!(
            "{}/simple/ answered 200 OK to a request without credentials: the index is open to anyone who reaches it",
            open.replicas[0].url()
        )
    );

    let protected = pair(PROTECTED);
    let rows = check(
        &endpoint(
            &protected.replicas[0].url(),
            "wrong",
            Replicas::Through(Some(1)),
        ),
        &Probe::new(1_700_000_005),
    );
    let upload = row(&rows, "probe upload");
    assert!(!upload.passed);
    assert_eq!(
        upload.detail,
        "403 Forbidden: access denied: these credentials may not do this"
    );
    let rest = row(&rows, "probe listed, read and downloaded");
    assert_eq!(rest.detail, "not tried: the upload failed");
    assert!(!std::fs::read_dir(protected.packages.path())
        .unwrap()
        .any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("verify_probe")));
}

#[test]
fn a_name_that_does_not_resolve_is_a_failing_row() {
    let rows = check(
        &Endpoint {
            names: vec!["no-such-host.invalid".into()],
            ..endpoint("http://127.0.0.1:9/", PASSWORD, Replicas::Through(Some(1)))
        },
        &Probe::new(1_700_000_006),
    );
    let dns = row(&rows, "DNS no-such-host.invalid");
    assert!(!dns.passed);
    assert!(dns.detail.starts_with("does not resolve ("), "{dns:?}");
    let upload = row(&rows, "probe upload");
    assert!(
        !upload.passed && upload.detail.contains("127.0.0.1:9"),
        "{upload:?}"
    );
}

/// A TLS server whose certificate no authority signed, killed when dropped.
struct SelfSigned {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HTTPS_SERVER: &str = "
import http.server, ssl, sys
server = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.BaseHTTPRequestHandler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
";

fn self_signed() -> SelfSigned {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian's openssl package) makes the test certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = common::free_port();
    let child = std::process::Command::new("python3")
        .args(["-c", HTTPS_SERVER, &port.to_string()])
        .arg(&cert)
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let server = SelfSigned {
        child,
        port,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the TLS server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server
}

#[test]
fn a_certificate_no_authority_signed_is_a_failing_row() {
    let server = self_signed();
    let rows = check(
        &Endpoint {
            names: vec!["localhost".into()],
            ..endpoint(
                &format!("https://localhost:{}/", server.port),
                PASSWORD,
                Replicas::Through(Some(1)),
            )
        },
        &Probe::new(1_700_000_007),
    );
    assert!(row(&rows, "DNS localhost").passed, "{rows:#?}");
    let certificate = row(&rows, "certificate localhost");
    assert!(!certificate.passed);
    assert!(
        certificate.detail.contains("invalid peer certificate"),
        "{certificate:?}"
    );
    // Plain HTTP on port 80 of this machine answers nothing, and certainly no redirect.
    assert!(!row(&rows, "HTTP redirects to HTTPS").passed, "{rows:#?}");
    assert!(!row(&rows, "probe upload").passed, "{rows:#?}");
}
