//! The deploy tool's tests, in one binary: AWS edges against wiremock (`deploy_aws`), the
//! tool against LocalStack (`deploy_localstack`), `verify` (`deploy_verify`) and the
//! CloudFormation template (`template`).

mod aws_mock;
mod common;
mod localstack;

#[path = "deploy_aws.rs"]
mod deploy_aws;
#[path = "deploy_localstack.rs"]
mod deploy_localstack;
#[path = "deploy_verify.rs"]
mod deploy_verify;
#[path = "template.rs"]
mod template;
