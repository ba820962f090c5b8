//! The appliance's CloudFormation template: a golden file of the example stack, the security
//! properties asserted on the parsed JSON, and cfn-lint (errors and warnings) on every branch.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use wheelhouse::deploy::settings::{example, IaTransition, Settings, ThroughputMode};
use wheelhouse::deploy::template::{appliance, Network};

fn network() -> Network {
    Network {
        region: "eu-west-1".into(),
        vpc_id: "vpc-0f1e2d3c".into(),
        vpc_cidr: "10.20.0.0/16".into(),
    }
}

/// The template of `settings`, as CloudFormation would read it.
fn template(settings: &Settings) -> Value {
    settings.validate().expect("test settings are valid");
    let text = appliance(settings, &settings.sizing(), &network()).to_json();
    serde_json::from_str(&text).expect("the template is JSON")
}

/// Bursting throughput, no backup, no dashboard, no access logs, files never move to IA.
fn bursting() -> Settings {
    Settings {
        efs_throughput_mode: ThroughputMode::Bursting,
        efs_transition_to_ia: IaTransition::Word("never".into()),
        backup: false,
        dashboard: false,
        access_logs: false,
        ..example()
    }
}

/// Provisioned throughput, and every list setting with more than one entry.
fn provisioned() -> Settings {
    Settings {
        efs_throughput_mode: ThroughputMode::Provisioned,
        efs_provisioned_throughput_mibps: Some(64),
        backup: false,
        dashboard: false,
        instance_type: "m7g.large".into(),
        container_memory: 1024,
        dns_names: vec!["pypi".into(), "packages.example.com".into()],
        alarm_emails: vec!["ops@example.com".into(), "oncall@example.com".into()],
        alarm_topic_arns: vec!["arn:aws:sns:eu-west-1:123456789012:pager".into()],
        secret_readers: vec!["arn:aws:iam::123456789012:role/deployer".into()],
        users: vec!["alice".into(), "ci-bot".into()],
        instance_policy_arns: vec!["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore".into()],
        instance_policy_statements: vec![serde_json::json!({
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": "arn:aws:s3:::acme-host-config/*",
        })],
        host_files: vec![wheelhouse::deploy::settings::HostFile {
            path: "/etc/acme/agent.conf".into(),
            content:
                "endpoint = \"https://acme.example\"\nkey = ${NOT_A_TEMPLATE_REF}\n'quoted'\nEOF\n"
                    .into(),
            mode: "0600".into(),
        }],
        host_commands: vec![
            "systemctl enable --now amazon-ssm-agent".into(),
            "echo \"${HOSTNAME}\" > /etc/acme/host".into(),
        ],
        allowed_cidrs: vec!["203.0.113.0/24".into(), "2001:db8::/32".into()],
        ..example()
    }
}

fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"].as_object().expect("Resources")
}

/// `(logical id, properties)` of every resource of `resource_type`.
fn of_type<'a>(template: &'a Value, resource_type: &str) -> Vec<(&'a str, &'a Value)> {
    resources(template)
        .iter()
        .filter(|(_, r)| r["Type"] == resource_type)
        .map(|(id, r)| (id.as_str(), &r["Properties"]))
        .collect()
}

/// The properties of the one resource of `resource_type`.
fn only<'a>(template: &'a Value, resource_type: &str) -> &'a Value {
    let found = of_type(template, resource_type);
    assert_eq!(found.len(), 1, "one {resource_type} expected: {found:?}");
    found[0].1
}

fn count(template: &Value, resource_type: &str) -> usize {
    of_type(template, resource_type).len()
}

/// Every value in the tree, depth first, with the key it sits under (if any).
fn walk<'a>(
    value: &'a Value,
    key: Option<&'a str>,
    visit: &mut dyn FnMut(Option<&'a str>, &'a Value),
) {
    visit(key, value);
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| walk(v, Some(k), visit)),
        Value::Array(items) => items.iter().for_each(|v| walk(v, key, visit)),
        _ => {}
    }
}

/// Every statement of every policy document in the template.
fn statements(template: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    walk(template, None, &mut |key, value| {
        if key == Some("Statement") && !value.is_array() {
            found.push(value);
        }
        if let (Some("Statement"), Value::Array(items)) = (key, value) {
            found.extend(items.iter());
        }
    });
    found.sort_by_key(|v| v.to_string());
    found.dedup();
    found
}

/// A container's `Secrets`: each variable and the secret key (`Fn::Sub`) it is filled from.
fn secret_entries(container: &Value) -> Vec<(&str, &str)> {
    container["Secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["Name"].as_str().unwrap(),
                s["ValueFrom"]["Fn::Sub"].as_str().unwrap(),
            )
        })
        .collect()
}

fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn golden() {
    let settings = example();
    let text = appliance(&settings, &settings.sizing(), &network()).to_json();
    insta::assert_snapshot!("appliance", text);
}

#[test]
fn output_is_deterministic() {
    let settings = example();
    let first = appliance(&settings, &settings.sizing(), &network()).to_json();
    let second = appliance(&settings, &settings.sizing(), &network()).to_json();
    assert_eq!(first, second);
}

#[test]
fn file_system_is_encrypted_with_the_efs_key_and_retained() {
    let t = template(&example());
    let fs = only(&t, "AWS::EFS::FileSystem");
    assert_eq!(fs["Encrypted"], true);
    assert_eq!(fs["KmsKeyId"], "alias/aws/elasticfilesystem");
    assert_eq!(fs["ThroughputMode"], "elastic");
    // Kept when the stack goes or the file system would be replaced, but not after a failed
    // first create, which would leave an empty, billed file system behind.
    for id in ["FileSystem", "BackupVault"] {
        let resource = &resources(&t)[id];
        assert_eq!(resource["DeletionPolicy"], "RetainExceptOnCreate", "{id}");
        assert_eq!(resource["UpdateReplacePolicy"], "Retain", "{id}");
    }
}

#[test]
fn nfs_is_open_only_to_the_vpc() {
    let t = template(&example());
    let groups: Vec<&str> = of_type(&t, "AWS::EFS::MountTarget")
        .iter()
        .flat_map(|(_, mt)| mt["SecurityGroups"].as_array().unwrap())
        .map(|g| g["Ref"].as_str().unwrap())
        .collect();
    assert!(groups.iter().all(|g| *g == groups[0]), "{groups:?}");
    let sg = &resources(&t)[groups[0]]["Properties"];
    assert_eq!(
        sg["SecurityGroupIngress"],
        serde_json::json!([{
            "IpProtocol": "tcp",
            "FromPort": 2049,
            "ToPort": 2049,
            "CidrIp": "10.20.0.0/16",
            "Description": "NFS from the VPC",
        }])
    );
    // No other ingress rule anywhere points at the file system's group.
    assert_eq!(count(&t, "AWS::EC2::SecurityGroupIngress"), 0);
}

#[test]
fn subnets_are_kept_apart() {
    let settings = example();
    let t = template(&settings);
    let mut mount_subnets: Vec<&str> = of_type(&t, "AWS::EFS::MountTarget")
        .iter()
        .map(|(_, mt)| mt["SubnetId"].as_str().unwrap())
        .collect();
    mount_subnets.sort_unstable();
    assert_eq!(mount_subnets, settings.asg_subnets);
    let asg = only(&t, "AWS::AutoScaling::AutoScalingGroup");
    assert_eq!(strings(&asg["VPCZoneIdentifier"]), settings.asg_subnets);
    let lb = only(&t, "AWS::ElasticLoadBalancingV2::LoadBalancer");
    assert_eq!(strings(&lb["Subnets"]), settings.lb_subnets);
    assert_eq!(lb["Scheme"], "internet-facing");
}

#[test]
fn load_balancer_takes_only_http_and_https_from_the_allowed_networks() {
    let settings = provisioned();
    let t = template(&settings);
    let sg = &resources(&t)["LoadBalancerSecurityGroup"]["Properties"];
    let rules = sg["SecurityGroupIngress"].as_array().unwrap();
    assert_eq!(rules.len(), 2 * settings.allowed_cidrs.len());
    for rule in rules {
        let port = rule["FromPort"].as_u64().unwrap();
        assert!(port == 443 || port == 80, "{rule}");
        assert_eq!(rule["ToPort"], rule["FromPort"]);
        let cidr = rule
            .get("CidrIp")
            .or(rule.get("CidrIpv6"))
            .unwrap()
            .as_str()
            .unwrap();
        assert!(settings.allowed_cidrs.iter().any(|c| c == cidr), "{rule}");
    }
}

#[test]
fn security_group_descriptions_use_only_the_characters_ec2_takes() {
    // EC2 refuses anything else in a group or rule description (an apostrophe, say) at deploy
    // time, which no linter catches.
    let allowed = |text: &str| {
        text.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c))
    };
    for settings in [example(), provisioned()] {
        let t = template(&settings);
        for (id, group) in of_type(&t, "AWS::EC2::SecurityGroup") {
            let description = group["GroupDescription"].as_str().unwrap();
            assert!(allowed(description), "{id}: {description}");
            for rule in ["SecurityGroupIngress", "SecurityGroupEgress"]
                .iter()
                .filter_map(|key| group.get(*key))
                .flat_map(|rules| rules.as_array().unwrap())
            {
                let description = rule["Description"].as_str().unwrap();
                assert!(allowed(description), "{id}: {description}");
            }
        }
    }
}

#[test]
fn http_only_redirects_to_https() {
    let t = template(&example());
    let listeners = of_type(&t, "AWS::ElasticLoadBalancingV2::Listener");
    assert_eq!(listeners.len(), 2);
    let http = listeners
        .iter()
        .find(|(_, l)| l["Protocol"] == "HTTP")
        .unwrap()
        .1;
    assert_eq!(http["Port"], 80);
    let actions = http["DefaultActions"].as_array().unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["Type"], "redirect");
    assert_eq!(actions[0]["RedirectConfig"]["Protocol"], "HTTPS");
    assert_eq!(actions[0]["RedirectConfig"]["Port"], "443");
    assert_eq!(actions[0]["RedirectConfig"]["StatusCode"], "HTTP_301");
    assert_eq!(count(&t, "AWS::ElasticLoadBalancingV2::ListenerRule"), 0);

    let https = listeners
        .iter()
        .find(|(_, l)| l["Protocol"] == "HTTPS")
        .unwrap()
        .1;
    assert_eq!(https["Port"], 443);
    assert_eq!(
        https["Certificates"][0]["CertificateArn"]["Ref"],
        "Certificate"
    );
}

#[test]
fn certificate_covers_every_name_and_is_validated_in_the_zone() {
    let settings = provisioned();
    let t = template(&settings);
    let cert = only(&t, "AWS::CertificateManager::Certificate");
    let fqdns = settings.fqdns();
    assert_eq!(cert["DomainName"], fqdns[0]);
    assert_eq!(strings(&cert["SubjectAlternativeNames"]), fqdns[1..]);
    assert_eq!(cert["ValidationMethod"], "DNS");
    for (option, fqdn) in cert["DomainValidationOptions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&fqdns)
    {
        assert_eq!(option["DomainName"], *fqdn);
        assert_eq!(option["HostedZoneId"], settings.hosted_zone_id);
    }
    let records = of_type(&t, "AWS::Route53::RecordSet");
    let mut names: Vec<&str> = records
        .iter()
        .map(|(_, r)| r["Name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = fqdns.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for (_, record) in records {
        assert_eq!(record["Type"], "A");
        assert_eq!(
            record["AliasTarget"]["DNSName"]["Fn::GetAtt"][0],
            "LoadBalancer"
        );
    }
}

#[test]
fn no_iam_statement_has_a_wildcard_action() {
    for settings in [example(), bursting(), provisioned()] {
        let t = template(&settings);
        let found = statements(&t);
        assert!(found.len() >= 6, "{found:?}");
        for statement in found {
            // A deny takes away: its wildcard grants nothing.
            if statement["Effect"] != "Deny" {
                for action in strings(&statement["Action"]) {
                    assert!(action != "*" && !action.ends_with(":*"), "{statement}");
                }
            }
            assert!(statement.get("NotAction").is_none(), "{statement}");
            // "*" is only ever the resource a resource policy is attached to.
            if statement["Resource"] == "*" {
                assert!(
                    statement.get("Principal").is_some(),
                    "identity policy on *: {statement}"
                );
            }
        }
    }
}

#[test]
fn the_password_is_generated_and_never_written() {
    for settings in [example(), provisioned()] {
        let t = template(&settings);
        let secrets = of_type(&t, "AWS::SecretsManager::Secret");
        assert_eq!(secrets.len(), 1 + settings.users.len());
        let mut usernames = Vec::new();
        for (id, secret) in secrets {
            assert!(secret.get("SecretString").is_none(), "{id}");
            let generate = &secret["GenerateSecretString"];
            assert_eq!(generate["GenerateStringKey"], "password", "{id}");
            assert_eq!(generate["PasswordLength"], 32, "{id}");
            assert_eq!(generate["ExcludePunctuation"], true, "{id}");
            let template: Value =
                serde_json::from_str(generate["SecretStringTemplate"].as_str().unwrap()).unwrap();
            let fields = template.as_object().unwrap();
            assert_eq!(fields.len(), 1, "{id}: {template}");
            usernames.push(template["username"].as_str().unwrap().to_owned());
        }
        usernames.sort();
        let mut expected = settings.users.clone();
        expected.push("wheelhouse".into());
        expected.sort();
        assert_eq!(usernames, expected);

        walk(&t, None, &mut |key, value| {
            assert!(
                !key.is_some_and(|k| k.eq_ignore_ascii_case("password")),
                "a password key: {value}"
            );
            assert!(key != Some("SecretString"), "a secret string: {value}");
            if let Some(text) = value.as_str() {
                if text.to_ascii_lowercase().contains("password") {
                    let allowed = (key == Some("GenerateStringKey") && text == "password")
                        || text.starts_with("WHEELHOUSE_PASSWORD")
                        || text.ends_with(":password::")
                        || key == Some("Description");
                    assert!(allowed, "{key:?}: {text}");
                }
            }
        });
        let text = serde_json::to_string(&t).unwrap();
        assert!(
            !text.contains("\"password\":"),
            "a password value in the template"
        );
    }
}

#[test]
fn only_the_execution_role_and_the_readers_read_the_secrets() {
    let settings = provisioned();
    let t = template(&settings);
    let secrets: Vec<&str> = of_type(&t, "AWS::SecretsManager::Secret")
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        secrets,
        ["CredentialsSecret", "UserSecretAlice", "UserSecretCiBot"]
    );
    let mut guarded: Vec<&str> = Vec::new();
    for (id, policy) in of_type(&t, "AWS::SecretsManager::ResourcePolicy") {
        assert_eq!(policy["BlockPublicPolicy"], true, "{id}");
        guarded.push(policy["SecretId"]["Ref"].as_str().unwrap());
        let deny = policy["ResourcePolicy"]["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Effect"] == "Deny")
            .unwrap();
        assert_eq!(deny["Principal"]["AWS"], "*", "{id}");
        assert_eq!(deny["Action"], "secretsmanager:GetSecretValue", "{id}");
        let allowed = deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
            .as_array()
            .unwrap();
        assert_eq!(allowed[0]["Fn::GetAtt"][0], "TaskExecutionRole", "{id}");
        assert_eq!(
            strings(&Value::Array(allowed[1..].to_vec())),
            settings.secret_readers,
            "{id}"
        );
    }
    guarded.sort_unstable();
    assert_eq!(guarded, secrets, "one policy per secret");
    // The stack's own secret keeps its policy's logical id (upgrades replace nothing).
    assert!(resources(&t).contains_key("CredentialsSecretPolicy"));

    // The execution role reads exactly these secrets, nothing else.
    let execution = &resources(&t)["TaskExecutionRole"]["Properties"];
    let grants: Vec<&Value> = execution["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap())
        .collect();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0]["Action"], "secretsmanager:GetSecretValue");
    let read: Vec<&str> = grants[0]["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Ref"].as_str().unwrap())
        .collect();
    assert_eq!(read, secrets);

    // Without users, the one secret is named as it always was.
    let plain = template(&example());
    let grant = &resources(&plain)["TaskExecutionRole"]["Properties"]["Policies"][0]
        ["PolicyDocument"]["Statement"][0];
    assert_eq!(
        grant["Resource"],
        serde_json::json!({ "Ref": "CredentialsSecret" })
    );
}

#[test]
fn every_user_reaches_the_task_as_a_pair_of_secrets_and_has_an_output() {
    let settings = provisioned();
    let t = template(&settings);
    let container = &only(&t, "AWS::ECS::TaskDefinition")["ContainerDefinitions"][0];
    let secrets = secret_entries(container);
    assert_eq!(
        secrets,
        [
            ("WHEELHOUSE_USERNAME", "${CredentialsSecret}:username::"),
            ("WHEELHOUSE_PASSWORD", "${CredentialsSecret}:password::"),
            ("WHEELHOUSE_USERNAME_ALICE", "${UserSecretAlice}:username::"),
            ("WHEELHOUSE_PASSWORD_ALICE", "${UserSecretAlice}:password::"),
            ("WHEELHOUSE_USERNAME_CIBOT", "${UserSecretCiBot}:username::"),
            ("WHEELHOUSE_PASSWORD_CIBOT", "${UserSecretCiBot}:password::"),
        ]
    );
    // The server reads every pair as a user (the values stand in for what ECS reads from the
    // secrets: the secret's id as the user name).
    let env = secrets.iter().map(|(name, from)| {
        let secret = from
            .trim_start_matches("${")
            .split('}')
            .next()
            .unwrap()
            .to_owned();
        let value = if from.ends_with(":username::") {
            secret
        } else {
            "generated".to_owned()
        };
        ((*name).into(), value.into())
    });
    let users = wheelhouse::auth::StaticUser::from_vars(env).unwrap();
    assert_eq!(users.len(), 1 + settings.users.len());

    let outputs = t["Outputs"].as_object().unwrap();
    for (name, secret) in [
        ("wheelhouse", "CredentialsSecret"),
        ("alice", "UserSecretAlice"),
        ("ci-bot", "UserSecretCiBot"),
    ] {
        let key = wheelhouse::deploy::template::user_secret_output(name);
        assert_eq!(outputs[&key]["Value"]["Ref"], secret, "{name}: {key}");
    }
    assert_eq!(
        wheelhouse::deploy::template::user_secret_output("ci-bot"),
        "UserSecretCiBotArn"
    );
}

#[test]
fn the_task_runs_the_server_as_sized() {
    let settings = example();
    let sizing = settings.sizing();
    let t = template(&settings);
    let task = only(&t, "AWS::ECS::TaskDefinition");
    assert_eq!(task["NetworkMode"], "bridge");
    let container = &task["ContainerDefinitions"][0];
    let command = strings(&container["Command"]);
    let workers = command
        .iter()
        .position(|a| *a == "--workers")
        .expect("--workers");
    assert_eq!(command[workers + 1], sizing.workers.to_string());
    // The load balancer closes idle connections before the server does (else a request sent
    // on a connection the server is closing comes back as 502).
    let header_timeout: u32 = command[command
        .iter()
        .position(|a| *a == "--header-timeout")
        .expect("--header-timeout")
        + 1]
    .parse()
    .unwrap();
    let balancer = only(&t, "AWS::ElasticLoadBalancingV2::LoadBalancer");
    let idle: u32 = balancer["LoadBalancerAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["Key"] == "idle_timeout.timeout_seconds")
        .expect("an explicit idle timeout")["Value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(header_timeout > idle, "{header_timeout} <= {idle}");
    // The image's entrypoint is `/wheelhouse run`: the command holds only its arguments.
    assert_eq!(command[0], "--disable-fallback");
    assert_eq!(command.last(), Some(&"/data/packages"));
    assert_eq!(container["Cpu"], sizing.container_cpu);
    assert_eq!(container["Memory"], sizing.container_memory);
    assert_eq!(container["MemoryReservation"], sizing.memory_reservation);
    assert_eq!(
        container["Image"],
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/wheelhouse:0.1.0"
    );
    assert_eq!(
        strings(&container["HealthCheck"]["Command"]),
        ["CMD", "/wheelhouse", "healthcheck"]
    );
    assert_eq!(
        container["MountPoints"][0]["ContainerPath"],
        "/data/packages"
    );
    let volume = &task["Volumes"][0];
    assert_eq!(volume["Name"], container["MountPoints"][0]["SourceVolume"]);
    assert!(volume["Host"]["SourcePath"]
        .as_str()
        .unwrap()
        .starts_with("/mnt/"));
    let secrets = secret_entries(container);
    assert_eq!(
        secrets,
        [
            ("WHEELHOUSE_USERNAME", "${CredentialsSecret}:username::"),
            ("WHEELHOUSE_PASSWORD", "${CredentialsSecret}:password::"),
        ]
    );

    let service = only(&t, "AWS::ECS::Service");
    assert_eq!(service["DesiredCount"], sizing.task_min);
    let target = only(&t, "AWS::ApplicationAutoScaling::ScalableTarget");
    assert_eq!(target["MinCapacity"], sizing.task_min);
    assert_eq!(target["MaxCapacity"], sizing.task_max);
}

#[test]
fn hosts_mount_efs_with_a_short_directory_cache_and_require_imdsv2() {
    let t = template(&example());
    let data = &only(&t, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"];
    assert_eq!(data["MetadataOptions"]["HttpTokens"], "required");
    assert_eq!(
        data["ImageId"],
        "{{resolve:ssm:/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id}}"
    );
    let script = data["UserData"]["Fn::Base64"]["Fn::Sub"].as_str().unwrap();
    assert!(script.contains("acdirmin=1,acdirmax=1"), "{script}");
    assert!(script.contains("tls"), "{script}");
    assert!(script.contains("ECS_CLUSTER=${Cluster}"), "{script}");
    assert!(script.contains("${FileSystem}:/"), "{script}");
    // The host joins the cluster only once the shared directory is mounted.
    assert!(script.find("mountpoint").unwrap() < script.find("ECS_CLUSTER").unwrap());

    let graviton = template(&provisioned());
    let image = &only(&graviton, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["ImageId"];
    assert!(image.as_str().unwrap().contains("/arm64/"), "{image}");
}

#[test]
fn after_a_reboot_the_tasks_wait_for_the_volume_and_fail_health_without_it() {
    let t = template(&example());
    let data = &only(&t, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"];
    let script = data["UserData"]["Fn::Base64"]["Fn::Sub"].as_str().unwrap();
    // Docker and the agent are held by systemd until the fstab mount is up, on every boot
    // (the script itself runs on the first only).
    assert!(
        script.contains("for unit in docker.service ecs.service; do"),
        "{script}"
    );
    assert!(
        script.contains("RequiresMountsFor=/mnt/wheelhouse/packages")
            && script.contains("/etc/systemd/system/$unit.d/"),
        "{script}"
    );
    // A mount that fails at boot powers the host off, so the group replaces it.
    assert!(
        script.contains("/etc/systemd/system/mnt-wheelhouse-packages.mount.d/")
            && script.contains("OnFailure=poweroff.target"),
        "{script}"
    );
    assert!(script.find("systemctl daemon-reload").unwrap() < script.find("ECS_CLUSTER").unwrap());
    // The marker is written on the volume, only once it is known to be mounted ...
    let marker_line = script
        .lines()
        .find(|l| l.contains("touch "))
        .expect("the script writes the marker");
    let host_marker = marker_line.rsplit(' ').next().unwrap();
    assert!(script.find("mountpoint -q").unwrap() < script.find(marker_line).unwrap());
    // ... and the task requires the same file, seen through its bind mount.
    let task = only(&t, "AWS::ECS::TaskDefinition");
    let source = task["Volumes"][0]["Host"]["SourcePath"].as_str().unwrap();
    let container = &task["ContainerDefinitions"][0];
    let inside = container["MountPoints"][0]["ContainerPath"]
        .as_str()
        .unwrap();
    let command: Vec<&str> = container["Command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let required = command[command
        .iter()
        .position(|a| *a == "--health-requires")
        .unwrap()
        + 1];
    assert_eq!(
        required.replacen(inside, source, 1),
        host_marker,
        "the task requires {required}, the host writes {host_marker}"
    );
}

#[test]
fn health_check_path_is_health() {
    let t = template(&example());
    let group = only(&t, "AWS::ElasticLoadBalancingV2::TargetGroup");
    assert_eq!(group["HealthCheckPath"], "/health");
    assert_eq!(group["Port"], 8080);
    assert_eq!(group["Protocol"], "HTTP");
}

#[test]
fn backup_and_dashboard_follow_the_settings() {
    let on = template(&example());
    for resource_type in [
        "AWS::Backup::BackupVault",
        "AWS::Backup::BackupPlan",
        "AWS::Backup::BackupSelection",
        "AWS::CloudWatch::Dashboard",
    ] {
        assert_eq!(count(&on, resource_type), 1, "{resource_type}");
    }
    let plan = only(&on, "AWS::Backup::BackupPlan");
    let rule = &plan["BackupPlan"]["BackupPlanRule"][0];
    assert_eq!(rule["ScheduleExpression"], "cron(0 2 * * ? *)");
    assert_eq!(rule["Lifecycle"]["DeleteAfterDays"], 7);
    assert!(on["Outputs"].get("DashboardUrl").is_some());

    let off = template(&bursting());
    for resource_type in [
        "AWS::Backup::BackupVault",
        "AWS::Backup::BackupPlan",
        "AWS::Backup::BackupSelection",
        "AWS::CloudWatch::Dashboard",
    ] {
        assert_eq!(count(&off, resource_type), 0, "{resource_type}");
    }
    assert!(!resources(&off).contains_key("BackupRole"));
    assert!(off["Outputs"].get("DashboardUrl").is_none());
}

#[test]
fn efs_options_follow_the_settings() {
    let metric_names = |t: &Value| -> Vec<String> {
        of_type(t, "AWS::CloudWatch::Alarm")
            .iter()
            .filter_map(|(_, a)| a["MetricName"].as_str().map(str::to_owned))
            .collect()
    };

    let elastic = template(&example());
    let fs = only(&elastic, "AWS::EFS::FileSystem");
    assert!(fs.get("ProvisionedThroughputInMibps").is_none());
    assert_eq!(
        fs["LifecyclePolicies"][0]["TransitionToIA"],
        "AFTER_30_DAYS"
    );
    assert!(!metric_names(&elastic).contains(&"BurstCreditBalance".to_owned()));

    let bursting = template(&bursting());
    let fs = only(&bursting, "AWS::EFS::FileSystem");
    assert_eq!(fs["ThroughputMode"], "bursting");
    assert!(fs.get("ProvisionedThroughputInMibps").is_none());
    assert!(fs.get("LifecyclePolicies").is_none());
    assert!(metric_names(&bursting).contains(&"BurstCreditBalance".to_owned()));

    let provisioned = template(&provisioned());
    let fs = only(&provisioned, "AWS::EFS::FileSystem");
    assert_eq!(fs["ThroughputMode"], "provisioned");
    assert_eq!(fs["ProvisionedThroughputInMibps"], 64);
    assert!(!metric_names(&provisioned).contains(&"BurstCreditBalance".to_owned()));
}

#[test]
fn alarms_reach_the_topic_and_every_extra_topic() {
    let settings = provisioned();
    let t = template(&settings);
    let alarms = of_type(&t, "AWS::CloudWatch::Alarm");
    assert_eq!(alarms.len(), 5);
    for (id, alarm) in &alarms {
        let actions = alarm["AlarmActions"].as_array().unwrap();
        assert_eq!(actions[0]["Ref"], "AlarmTopic", "{id}");
        assert_eq!(
            strings(&Value::Array(actions[1..].to_vec())),
            settings.alarm_topic_arns,
            "{id}"
        );
        assert!(t["Outputs"].get(format!("{id}Arn")).is_some(), "{id}");
    }
    let mut emails: Vec<&str> = of_type(&t, "AWS::SNS::Subscription")
        .iter()
        .map(|(_, s)| s["Endpoint"].as_str().unwrap())
        .collect();
    emails.sort_unstable();
    let mut expected = settings.alarm_emails.clone();
    expected.sort_unstable();
    assert_eq!(emails, expected);
}

#[test]
fn outputs_give_addresses_and_sizing_but_no_password() {
    let settings = example();
    let sizing = settings.sizing();
    let t = template(&settings);
    let outputs = t["Outputs"].as_object().unwrap();
    assert_eq!(outputs["Url"]["Value"], "https://pypiserver.example.com/");
    assert_eq!(
        outputs["SimpleIndexUrl"]["Value"],
        "https://pypiserver.example.com/simple/"
    );
    assert_eq!(
        outputs["CredentialsSecretArn"]["Value"]["Ref"],
        "CredentialsSecret"
    );
    assert_eq!(
        outputs["SizingWorkers"]["Value"],
        sizing.workers.to_string()
    );
    assert_eq!(outputs["SizingLimit"]["Value"], sizing.limit.to_string());
    assert_eq!(
        outputs["SizingTaskMax"]["Value"],
        sizing.task_max.to_string()
    );
    for (id, output) in outputs {
        assert!(output["Value"] != Value::Null, "{id}");
    }
}

#[test]
fn logical_ids_are_readable_and_resources_tagged() {
    let t = template(&example());
    for (id, resource) in resources(&t) {
        assert!(
            id.bytes().all(|b| b.is_ascii_alphanumeric()) && id.as_bytes()[0].is_ascii_uppercase(),
            "{id}"
        );
        let properties = &resource["Properties"];
        let tags = properties
            .get("Tags")
            .or(properties.get("FileSystemTags"))
            .or(properties.get("AccessPointTags"))
            .map(Value::to_string)
            .or(properties.get("BackupVaultTags").map(Value::to_string))
            .or(properties.get("BackupPlanTags").map(Value::to_string));
        let untaggable = [
            "AWS::EFS::MountTarget",
            "AWS::IAM::InstanceProfile",
            "AWS::ElasticLoadBalancingV2::Listener",
            "AWS::Route53::RecordSet",
            "AWS::ECS::ClusterCapacityProviderAssociations",
            "AWS::ApplicationAutoScaling::ScalableTarget",
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            "AWS::SecretsManager::ResourcePolicy",
            "AWS::IAM::Policy",
            "AWS::S3::BucketPolicy",
            "AWS::SNS::Subscription",
            "AWS::Backup::BackupSelection",
            "AWS::CloudWatch::Dashboard",
            "AWS::EC2::LaunchTemplate",
        ];
        if untaggable.contains(&resource["Type"].as_str().unwrap()) {
            continue;
        }
        let tags = tags.unwrap_or_else(|| panic!("{id} has no tags"));
        assert!(
            tags.contains("Service") && tags.contains("Environment"),
            "{id}: {tags}"
        );
    }
}

/// Every resource a value refers to: `Ref`, `Fn::GetAtt` and `${...}` in `Fn::Sub`, leaving
/// out the pseudo parameters and `${!...}`, which `Fn::Sub` leaves as it is.
fn references(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(value, None, &mut |key, v| match (key, v) {
        (Some("Ref"), Value::String(id)) if !id.starts_with("AWS::") => found.push(id.clone()),
        (Some("Fn::GetAtt"), Value::Array(parts)) => {
            found.push(parts[0].as_str().unwrap().to_owned());
        }
        (Some("Fn::Sub"), text) => {
            let text = text
                .as_str()
                .or_else(|| text.get(0).and_then(Value::as_str))
                .unwrap_or_default();
            for piece in text.split("${").skip(1) {
                let name = piece.split('}').next().unwrap();
                if !name.starts_with('!') && !name.starts_with("AWS::") {
                    found.push(name.split('.').next().unwrap().to_owned());
                }
            }
        }
        _ => {}
    });
    found
}

#[test]
fn every_reference_names_a_resource_and_none_goes_round_in_a_cycle() {
    for settings in [example(), bursting(), provisioned()] {
        let t = template(&settings);
        let resources = resources(&t);
        let edges: std::collections::BTreeMap<&str, Vec<String>> = resources
            .iter()
            .map(|(id, resource)| {
                let mut to = references(&resource["Properties"]);
                to.extend(
                    strings(&resource["DependsOn"])
                        .iter()
                        .map(|d| (*d).to_owned()),
                );
                for target in &to {
                    assert!(resources.contains_key(target), "{id} refers to {target}");
                }
                (id.as_str(), to)
            })
            .collect();
        // Depth first; a resource met again while it is still on the path closes a cycle.
        fn visit<'a>(
            id: &'a str,
            edges: &'a std::collections::BTreeMap<&'a str, Vec<String>>,
            path: &mut Vec<&'a str>,
            done: &mut std::collections::BTreeSet<&'a str>,
        ) {
            if done.contains(id) {
                return;
            }
            assert!(!path.contains(&id), "cycle: {path:?} -> {id}");
            path.push(id);
            for next in &edges[id] {
                visit(next, edges, path, done);
            }
            path.pop();
            done.insert(id);
        }
        let mut done = std::collections::BTreeSet::new();
        for id in edges.keys() {
            visit(id, &edges, &mut Vec::new(), &mut done);
        }
    }
}

#[test]
fn the_file_system_admits_the_hosts_only_through_a_mount_target_and_never_as_root() {
    let t = template(&example());
    let policy = &only(&t, "AWS::EFS::FileSystem")["FileSystemPolicy"];
    let in_policy = policy["Statement"].as_array().unwrap();
    // The one grant: the hosts' role, through a mount target and an access point.
    let allows: Vec<&Value> = in_policy
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .collect();
    assert_eq!(allows.len(), 1, "{policy}");
    let allow = allows[0];
    assert_eq!(
        allow["Principal"]["AWS"],
        serde_json::json!({ "Fn::GetAtt": ["InstanceRole", "Arn"] })
    );
    assert_eq!(
        strings(&allow["Action"]),
        [
            "elasticfilesystem:ClientMount",
            "elasticfilesystem:ClientWrite"
        ]
    );
    assert_eq!(
        allow["Condition"]["Bool"]["elasticfilesystem:AccessedViaMountTarget"],
        "true"
    );
    assert!(
        allow["Condition"]["StringLike"]["elasticfilesystem:AccessPointArn"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .ends_with(":access-point/*")
    );
    // Root access is denied to everyone, without condition; so is every action without TLS.
    let denies: Vec<&Value> = in_policy.iter().filter(|s| s["Effect"] == "Deny").collect();
    assert_eq!(denies.len(), 2, "{policy}");
    for deny in &denies {
        assert_eq!(deny["Principal"]["AWS"], "*", "{deny}");
    }
    let root = denies
        .iter()
        .find(|d| d.get("Condition").is_none())
        .expect("an unconditional deny");
    assert_eq!(
        strings(&root["Action"]),
        ["elasticfilesystem:ClientRootAccess"]
    );
    let tls = denies
        .iter()
        .find(|d| d.get("Condition").is_some())
        .unwrap();
    assert_eq!(tls["Condition"]["Bool"]["aws:SecureTransport"], "false");
    assert_eq!(strings(&tls["Action"]).len(), 3, "{tls}");
    // Nothing anywhere grants root access.
    for statement in statements(&t) {
        if statement["Effect"] == "Allow" {
            assert!(
                !statement["Action"].to_string().contains("ClientRootAccess"),
                "{statement}"
            );
        }
    }

    // The role's own grant names the stack's access point, in a policy of its own (the file
    // system names the role), and the hosts boot only once it is attached.
    let mount = only(&t, "AWS::IAM::Policy");
    assert_eq!(
        mount["Roles"],
        serde_json::json!([{ "Ref": "InstanceRole" }])
    );
    let grant = &mount["PolicyDocument"]["Statement"][0];
    assert!(
        grant["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .ends_with(":access-point/${AccessPoint}")
    );
    let role = &resources(&t)["InstanceRole"]["Properties"];
    assert!(
        !references(role).contains(&"FileSystem".to_owned()),
        "{role}"
    );
    let asg = &resources(&t)["AutoScalingGroup"];
    assert!(
        strings(&asg["DependsOn"]).contains(&"InstanceMountPolicy"),
        "{asg}"
    );
}

#[test]
fn access_logs_go_to_a_private_bucket_that_expires_them() {
    let settings = Settings {
        access_logs_days: 30,
        ..example()
    };
    let t = template(&settings);
    let bucket = &resources(&t)["AccessLogsBucket"];
    assert_eq!(bucket["Type"], "AWS::S3::Bucket");
    // Kept always: it holds the load balancer's test file from its first minutes, and
    // CloudFormation cannot delete a bucket with objects in it.
    assert_eq!(bucket["DeletionPolicy"], "Retain");
    assert_eq!(bucket["UpdateReplacePolicy"], "Retain");
    let properties = &bucket["Properties"];
    assert_eq!(
        properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            ["ServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "AES256"
    );
    let block = &properties["PublicAccessBlockConfiguration"];
    for key in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[key], true, "{key}");
    }
    assert_eq!(
        properties["OwnershipControls"]["Rules"][0]["ObjectOwnership"],
        "BucketOwnerEnforced"
    );
    let rule = &properties["LifecycleConfiguration"]["Rules"][0];
    assert_eq!(rule["Status"], "Enabled");
    assert_eq!(rule["ExpirationInDays"], 30);

    // The load balancer writes under its prefix, and is created only once it may.
    let lb = &resources(&t)["LoadBalancer"];
    let attribute = |key: &str| {
        lb["Properties"]["LoadBalancerAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["Key"] == key)
            .map(|a| a["Value"].clone())
    };
    assert_eq!(attribute("access_logs.s3.enabled").unwrap(), "true");
    assert_eq!(
        attribute("access_logs.s3.bucket").unwrap(),
        serde_json::json!({ "Ref": "AccessLogsBucket" })
    );
    let prefix = attribute("access_logs.s3.prefix").unwrap();
    assert!(strings(&lb["DependsOn"]).contains(&"AccessLogsBucketPolicy"));

    let policy = only(&t, "AWS::S3::BucketPolicy");
    assert_eq!(policy["Bucket"]["Ref"], "AccessLogsBucket");
    let statements = policy["PolicyDocument"]["Statement"].as_array().unwrap();
    let allow = statements.iter().find(|s| s["Effect"] == "Allow").unwrap();
    // eu-west-1 opened before August 2022: its Elastic Load Balancing account delivers.
    assert_eq!(
        allow["Principal"]["AWS"]["Fn::Sub"],
        "arn:${AWS::Partition}:iam::156460612806:root"
    );
    assert_eq!(allow["Action"], "s3:PutObject");
    assert_eq!(
        allow["Resource"]["Fn::Sub"],
        format!(
            "${{AccessLogsBucket.Arn}}/{}/AWSLogs/${{AWS::AccountId}}/*",
            prefix.as_str().unwrap()
        )
    );
    let deny = statements.iter().find(|s| s["Effect"] == "Deny").unwrap();
    assert_eq!(deny["Condition"]["Bool"]["aws:SecureTransport"], "false");
    assert_eq!(
        t["Outputs"]["AccessLogsBucket"]["Value"]["Ref"],
        "AccessLogsBucket"
    );
}

#[test]
fn regions_opened_since_august_2022_take_the_log_delivery_service() {
    let settings = example();
    let zurich = Network {
        region: "eu-central-2".into(),
        ..network()
    };
    let t: Value =
        serde_json::from_str(&appliance(&settings, &settings.sizing(), &zurich).to_json()).unwrap();
    let policy = only(&t, "AWS::S3::BucketPolicy");
    let allow = &policy["PolicyDocument"]["Statement"][0];
    assert_eq!(allow["Effect"], "Allow");
    assert_eq!(
        allow["Principal"],
        serde_json::json!({ "Service": "logdelivery.elasticloadbalancing.amazonaws.com" })
    );
    // And an older region of another partition names its account in that partition.
    let beijing = Network {
        region: "cn-north-1".into(),
        ..network()
    };
    let t: Value =
        serde_json::from_str(&appliance(&settings, &settings.sizing(), &beijing).to_json())
            .unwrap();
    let allow = &only(&t, "AWS::S3::BucketPolicy")["PolicyDocument"]["Statement"][0];
    assert_eq!(
        allow["Principal"]["AWS"]["Fn::Sub"],
        "arn:${AWS::Partition}:iam::638102146993:root"
    );
}

#[test]
fn access_logs_off_leave_no_bucket_and_turn_the_logs_off() {
    let t = template(&Settings {
        access_logs: false,
        ..example()
    });
    assert_eq!(count(&t, "AWS::S3::Bucket"), 0);
    assert_eq!(count(&t, "AWS::S3::BucketPolicy"), 0);
    let lb = only(&t, "AWS::ElasticLoadBalancingV2::LoadBalancer");
    let keys: Vec<(&str, &Value)> = lb["LoadBalancerAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["Key"].as_str().unwrap(), &a["Value"]))
        .filter(|(k, _)| k.starts_with("access_logs"))
        .collect();
    assert_eq!(keys, [("access_logs.s3.enabled", &Value::from("false"))]);
    assert!(t["Outputs"].get("AccessLogsBucket").is_none());
}

/// The deploying principal's policy in the README, as JSON.
fn deployer_policy() -> Value {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- deployer-policy -->")
        .expect("the policy's start marker");
    let end = readme
        .find("<!-- /deployer-policy -->")
        .expect("the policy's end marker");
    let block = &readme[start..end];
    let json =
        &block[block.find("```json").expect("a json block") + 7..block.rfind("```").unwrap()];
    serde_json::from_str(json).expect("the README's policy is JSON")
}

/// The IAM service prefix of a CloudFormation resource type's namespace.
fn service_prefix(resource_type: &str) -> &'static str {
    match resource_type.split("::").nth(1).expect("AWS::Service::Type") {
        "ApplicationAutoScaling" => "application-autoscaling",
        "AutoScaling" => "autoscaling",
        "Backup" => "backup",
        "CertificateManager" => "acm",
        "CloudWatch" => "cloudwatch",
        "EC2" => "ec2",
        "ECS" => "ecs",
        "EFS" => "elasticfilesystem",
        "ElasticLoadBalancingV2" => "elasticloadbalancing",
        "IAM" => "iam",
        "Logs" => "logs",
        "Route53" => "route53",
        "S3" => "s3",
        "SecretsManager" => "secretsmanager",
        "SNS" => "sns",
        other => panic!("{resource_type}: add the IAM prefix of {other} here and its actions to the README's deployer policy"),
    }
}

#[test]
fn the_readme_policy_lets_the_deployer_create_every_resource_and_pass_the_four_roles() {
    let policy = deployer_policy();
    let statements = policy["Statement"].as_array().expect("statements");
    let actions: Vec<&str> = statements
        .iter()
        .flat_map(|s| strings(&s["Action"]))
        .collect();
    assert!(actions.contains(&"cloudformation:*"));
    for settings in [example(), bursting(), provisioned()] {
        for resource in resources(&template(&settings)).values() {
            let kind = resource["Type"].as_str().unwrap();
            let prefix = format!("{}:", service_prefix(kind));
            assert!(
                actions.iter().any(|a| a.starts_with(&prefix)),
                "{kind}: the README's deployer policy has no {prefix} action"
            );
        }
    }
    let pass_role = statements
        .iter()
        .find(|s| s["Action"] == "iam:PassRole")
        .expect("an iam:PassRole statement");
    let example_template = template(&example());
    let roles = of_type(&example_template, "AWS::IAM::Role");
    assert_eq!(roles.len(), 4, "the README speaks of four roles");
    let services: Vec<&str> =
        strings(&pass_role["Condition"]["StringEquals"]["iam:PassedToService"]);
    for (id, role) in roles {
        let principal = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"]
            .as_str()
            .expect("a service principal");
        assert!(
            services.contains(&principal),
            "{id} is passed to {principal}, which the policy does not allow"
        );
    }
    assert_eq!(pass_role["Resource"], "arn:aws:iam::ACCOUNT:role/STACK-*");
}

/// The pinned cfn-lint, from a venv made once and reused.
fn cfn_lint() -> &'static Path {
    static LINT: OnceLock<PathBuf> = OnceLock::new();
    LINT.get_or_init(|| {
        common::venv::locked("cfn-lint-venv", include_str!("python/cfn-lint.txt"))
            .join("bin/cfn-lint")
    })
}

/// Lints the template of `settings`; any error or warning fails.
fn assert_lints_clean(name: &str, settings: &Settings) {
    assert_lints_clean_in(name, settings, &network());
}

fn assert_lints_clean_in(name: &str, settings: &Settings, network: &Network) {
    let text = appliance(settings, &settings.sizing(), network).to_json();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.json"));
    std::fs::write(&path, text).unwrap();
    let output = Command::new(cfn_lint())
        .args(["--format", "parseable"])
        .arg(&path)
        .output()
        .expect("run cfn-lint");
    assert!(
        output.status.success(),
        "cfn-lint on the {name} template (exit {:?}):\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn cfn_lint_is_clean() {
    assert_lints_clean("example", &example());
    assert_lints_clean("bursting", &bursting());
    assert_lints_clean("provisioned", &provisioned());
    // Logs delivered by the service principal, as in regions opened since August 2022.
    let zurich = Network {
        region: "eu-central-2".into(),
        ..network()
    };
    assert_lints_clean_in("zurich", &example(), &zurich);
}

#[test]
fn names_that_must_be_unique_come_from_the_stack_name() {
    let t = template(&example());
    let by_stack = |value: &serde_json::Value| {
        value["Fn::Sub"]
            .as_str()
            .is_some_and(|name| name.contains("${AWS::StackName}"))
    };
    assert!(by_stack(&only(&t, "AWS::ECS::Cluster")["ClusterName"]));
    assert!(by_stack(
        &only(&t, "AWS::CloudWatch::Dashboard")["DashboardName"]
    ));
    assert!(by_stack(&only(&t, "AWS::Logs::LogGroup")["LogGroupName"]));
    let alarms = of_type(&t, "AWS::CloudWatch::Alarm");
    assert!(!alarms.is_empty());
    for (id, alarm) in alarms {
        assert!(
            by_stack(&alarm["AlarmName"]),
            "{id}: {}",
            alarm["AlarmName"]
        );
    }
    // A capacity provider's name may not start with aws, ecs or fargate, as a stack's may,
    // and holds the stack id's head (a deleted provider's name may stay taken a while).
    let parts = &only(&t, "AWS::ECS::CapacityProvider")["Name"]["Fn::Join"][1];
    assert_eq!(parts[0], "hosts");
    assert_eq!(parts[1], serde_json::json!({ "Ref": "AWS::StackName" }));
    assert!(parts[2].to_string().contains("AWS::StackId"), "{parts}");
}

#[test]
fn hosts_reach_the_packages_only_through_an_access_point_as_the_server_user() {
    let t = template(&example());
    let point = only(&t, "AWS::EFS::AccessPoint");
    assert_eq!(
        point["FileSystemId"],
        serde_json::json!({ "Ref": "FileSystem" })
    );
    assert_eq!(
        point["PosixUser"],
        serde_json::json!({ "Uid": "10001", "Gid": "10001" })
    );
    assert_eq!(point["RootDirectory"]["Path"], "/packages");
    assert_eq!(point["RootDirectory"]["CreationInfo"]["OwnerUid"], "10001");
    // The hosts' role may mount and write through the access point, never as root.
    let mount = only(&t, "AWS::IAM::Policy");
    let statement = &mount["PolicyDocument"]["Statement"][0];
    let actions = statement["Action"].to_string();
    assert!(!actions.contains("ClientRootAccess"), "{actions}");
    assert!(
        statement["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .ends_with(":access-point/${AccessPoint}"),
        "{statement}"
    );
    // The mount goes through it, and nothing is chowned by root.
    let script = only(&t, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["UserData"]
        ["Fn::Base64"]["Fn::Sub"]
        .as_str()
        .unwrap();
    assert!(script.contains("accesspoint=${AccessPoint}"), "{script}");
    assert!(!script.contains("chown"), "{script}");
    // The task's user is the access point's.
    let task = only(&t, "AWS::ECS::TaskDefinition");
    assert_eq!(task["ContainerDefinitions"][0]["User"], "10001:10001");
}

#[test]
fn host_files_commands_statements_and_ami_come_from_the_settings() {
    let settings = provisioned();
    let t = template(&settings);
    let data = &only(&t, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"];
    let script = data["UserData"]["Fn::Base64"]["Fn::Sub"].as_str().unwrap();
    // The file's bytes arrive intact whatever they hold (quotes, a here-document's end,
    // `${` that Fn::Sub must not read).
    let line = script
        .lines()
        .find(|l| l.starts_with("echo '") && l.ends_with("/etc/acme/agent.conf'"))
        .expect("the file is written");
    use base64::Engine;
    let encoded = line.split('\'').nth(1).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        settings.host_files[0].content
    );
    assert!(
        script.contains("chmod 0600 '/etc/acme/agent.conf'"),
        "{script}"
    );
    // Commands run in order, after the mount and before the host joins the cluster; `${` is
    // escaped for Fn::Sub.
    let first = script
        .find("systemctl enable --now amazon-ssm-agent")
        .unwrap();
    let second = script
        .find("echo \"${!HOSTNAME}\" > /etc/acme/host")
        .unwrap();
    assert!(script.find("mountpoint -q").unwrap() < first);
    assert!(first < second && second < script.find("ECS_CLUSTER").unwrap());
    // The statements go to the instance role, in a policy of their own.
    let role = &resources(&t)["InstanceRole"]["Properties"];
    assert_eq!(role["Policies"][0]["PolicyName"], "from-settings");
    assert_eq!(
        role["Policies"][0]["PolicyDocument"]["Statement"][0],
        settings.instance_policy_statements[0]
    );
    // An AMI of one's own replaces the SSM parameter.
    let own = template(&Settings {
        ami_id: Some("ami-0123456789abcdef0".into()),
        ..example()
    });
    let image = &only(&own, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["ImageId"];
    assert_eq!(image, "ami-0123456789abcdef0");
}

#[test]
fn production_is_protected_from_deletion_unless_the_settings_say_otherwise() {
    let attribute = |settings: &Settings| {
        let t = template(settings);
        let lb = only(&t, "AWS::ElasticLoadBalancingV2::LoadBalancer");
        let value = lb["LoadBalancerAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["Key"] == "deletion_protection.enabled")
            .expect("the attribute is always set")["Value"]
            .clone();
        assert_eq!(t["Outputs"]["Protected"]["Value"], value);
        value
    };
    assert_eq!(attribute(&example()), "true");
    let staging = Settings {
        environment: "staging".into(),
        ..example()
    };
    assert_eq!(attribute(&staging), "false");
    let protected_staging = Settings {
        protection: Some(true),
        ..staging
    };
    assert_eq!(attribute(&protected_staging), "true");
    let unprotected = Settings {
        protection: Some(false),
        ..example()
    };
    assert_eq!(attribute(&unprotected), "false");
}

#[test]
fn the_largest_host_extras_the_settings_accept_fit_in_ec2_user_data() {
    // As many users as the settings take, each with its secret, policy and output, fit when
    // the hosts take no extras.
    let mut settings = provisioned();
    settings.users = (1..=10).map(|i| format!("user-{i}")).collect();
    settings.validate().expect("ten users");
    settings.host_files.clear();
    settings.host_commands.clear();
    let body = template(&settings).to_string();
    assert!(
        body.len() <= wheelhouse::deploy::template::TEMPLATE_BODY_MAX,
        "{} bytes of template with ten users",
        body.len()
    );
    let mut settings = provisioned();
    // Grow the file until one more kilobyte would be refused.
    let mut size = 1024;
    loop {
        settings.host_files[0].content = "x".repeat(size + 1024);
        if settings.validate().is_err() {
            break;
        }
        size += 1024;
    }
    settings.host_files[0].content = "x".repeat(size);
    settings.validate().expect("the last size that passed");
    let t = template(&settings);
    let script = only(&t, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["UserData"]
        ["Fn::Base64"]["Fn::Sub"]
        .as_str()
        .unwrap()
        .to_owned();
    // References resolve to ids shorter than 256 bytes in all.
    assert!(
        script.len() + 256 <= 16 * 1024,
        "{} bytes of user data",
        script.len()
    );
    // And the whole template still goes to CloudFormation inline.
    let body = appliance(&settings, &settings.sizing(), &network()).to_compact_json();
    assert!(
        body.len() <= wheelhouse::deploy::template::TEMPLATE_BODY_MAX,
        "{} bytes of template",
        body.len()
    );
}
