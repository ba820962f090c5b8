//! The LocalStack harness itself: start it, build the network fixture, put a small stack up
//! and take it down again through boto3.

mod common;
mod localstack;

use std::time::Instant;

use localstack::LocalStack;
use serde_json::json;

/// Creates the stack, waits for it to settle and prints its status, outputs and resources.
/// Expects `args` (template and parameters) to be defined before it.
const DEPLOY: &str = r#"
import json, os, time, boto3
cf = boto3.client("cloudformation", endpoint_url=os.environ["ENDPOINT"])
stack_id = cf.create_stack(
    StackName="harness",
    TemplateBody=json.dumps(args["template"]),
    Parameters=[dict(ParameterKey=k, ParameterValue=v) for k, v in args["parameters"].items()],
)["StackId"]
deadline = time.time() + 60
while True:
    stack = cf.describe_stacks(StackName=stack_id)["Stacks"][0]
    if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.time() > deadline:
        break
    time.sleep(0.2)
resources = cf.describe_stack_resources(StackName=stack_id)["StackResources"]
print(json.dumps(dict(
    stack_id=stack_id,
    status=stack["StackStatus"],
    outputs=dict((o["OutputKey"], o["OutputValue"]) for o in stack.get("Outputs", [])),
    resources=dict((r["LogicalResourceId"], [r["ResourceStatus"], r.get("ResourceStatusReason")]) for r in resources),
)))
"#;

/// Deletes the stack and prints the status it ends in. Expects `stack_id` to be defined before it.
const DELETE: &str = r#"
import os, time, boto3
cf = boto3.client("cloudformation", endpoint_url=os.environ["ENDPOINT"])
cf.delete_stack(StackName=stack_id)
deadline = time.time() + 60
while True:
    # By id: once deleted, the stack's name no longer resolves.
    status = cf.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"]
    if not status.endswith("_IN_PROGRESS") or time.time() > deadline:
        break
    time.sleep(0.2)
print(status)
"#;

fn template() -> serde_json::Value {
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {
            "VpcId": { "Type": "AWS::EC2::VPC::Id" },
            "HostedZoneId": { "Type": "String" },
            "ZoneName": { "Type": "String" }
        },
        "Resources": {
            "Password": {
                "Type": "AWS::SecretsManager::Secret",
                "Properties": {
                    "GenerateSecretString": {
                        "SecretStringTemplate": "{\"username\":\"wheelhouse\"}",
                        "GenerateStringKey": "password",
                        "PasswordLength": 32,
                        "ExcludePunctuation": true
                    }
                }
            },
            "SecurityGroup": {
                "Type": "AWS::EC2::SecurityGroup",
                "Properties": {
                    "GroupDescription": "harness",
                    "VpcId": { "Ref": "VpcId" },
                    "SecurityGroupIngress": [
                        { "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "10.30.0.0/16" }
                    ]
                }
            },
            "Logs": {
                "Type": "AWS::Logs::LogGroup",
                "Properties": { "RetentionInDays": 7 }
            },
            "Record": {
                "Type": "AWS::Route53::RecordSet",
                "Properties": {
                    "HostedZoneId": { "Ref": "HostedZoneId" },
                    "Name": { "Fn::Sub": "pypi.${ZoneName}." },
                    "Type": "A",
                    "TTL": "60",
                    // TEST-NET-1: a documentation address, never contacted.
                    "ResourceRecords": ["192.0.2.10"]
                }
            },
            "Certificate": {
                "Type": "AWS::CertificateManager::Certificate",
                "Properties": {
                    "DomainName": { "Fn::Sub": "pypi.${ZoneName}" },
                    "ValidationMethod": "DNS",
                    "DomainValidationOptions": [{
                        "DomainName": { "Fn::Sub": "pypi.${ZoneName}" },
                        "HostedZoneId": { "Ref": "HostedZoneId" }
                    }]
                }
            }
        },
        "Outputs": {
            "PasswordArn": { "Value": { "Ref": "Password" } },
            "SecurityGroupVpc": { "Value": { "Fn::GetAtt": ["SecurityGroup", "VpcId"] } },
            "CertificateArn": { "Value": { "Ref": "Certificate" } }
        }
    })
}

#[test]
fn deploys_and_deletes_a_small_stack() {
    let started = Instant::now();
    let localstack = LocalStack::start();
    eprintln!("LocalStack ready after {:?}", started.elapsed());
    let network = localstack.create_network();
    assert_eq!(network.vpc_cidr, "10.30.0.0/16");
    assert_eq!(network.asg_subnets.len(), 2, "{network:?}");
    assert_eq!(network.lb_subnets.len(), 2, "{network:?}");
    assert_eq!(network.hosted_zone_name, "wheelhouse-test.example");

    let args = json!({
        "template": template(),
        "parameters": {
            "VpcId": network.vpc_id,
            "HostedZoneId": network.hosted_zone_id,
            "ZoneName": network.hosted_zone_name,
        }
    });
    // A JSON string literal is also a valid Python string literal.
    let stdout = localstack.python(&format!(
        "import json\nargs = json.loads({})\n{DEPLOY}",
        serde_json::to_string(&args.to_string()).unwrap()
    ));
    let deployed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        deployed["status"],
        "CREATE_COMPLETE",
        "{deployed:#}\n{}",
        localstack.log()
    );
    for (logical_id, state) in deployed["resources"].as_object().unwrap() {
        assert_eq!(state[0], "CREATE_COMPLETE", "{logical_id}: {state}");
    }
    assert_eq!(deployed["resources"].as_object().unwrap().len(), 5);
    assert_eq!(
        deployed["outputs"]["SecurityGroupVpc"],
        network.vpc_id.as_str()
    );
    assert!(deployed["outputs"]["CertificateArn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:acm:us-east-1:"));

    let secret = localstack.secret_value(deployed["outputs"]["PasswordArn"].as_str().unwrap());
    assert_eq!(secret["username"], "wheelhouse");
    let password = secret["password"].as_str().unwrap();
    assert_eq!(password.len(), 32, "{secret}");
    assert!(
        password.chars().all(|c| c.is_ascii_alphanumeric()),
        "{secret}"
    );

    let stack_id = serde_json::to_string(deployed["stack_id"].as_str().unwrap()).unwrap();
    let status = localstack.python(&format!("stack_id = {stack_id}\n{DELETE}"));
    assert_eq!(status.trim(), "DELETE_COMPLETE");
    eprintln!("done after {:?}", started.elapsed());
}
