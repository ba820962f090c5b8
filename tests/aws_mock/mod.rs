//! Wiremock stand-ins for AWS services: one SDK configuration pointed at the mock, and answers
//! in each protocol the services speak (query XML, JSON, CBOR).
#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use aws_sdk_cloudformation::config::{BehaviorVersion, Credentials, Region};
use wiremock::{MockServer, ResponseTemplate};

/// One AWS configuration pointed at a wiremock server, for the clients of every service.
pub fn sdk_config(server: &MockServer) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(server.uri())
        .credentials_provider(
            aws_sdk_cloudformation::config::SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "test",
            )),
        )
        .build()
}

/// A successful answer in the query protocol of the service whose namespace is `ns`.
pub fn query_ok(ns: &str, action: &str, result: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_string(format!(
        "<{action}Response xmlns=\"{ns}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></{action}Response>"
    ))
}

pub fn query_error(ns: &str, status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_string(format!(
        "<ErrorResponse xmlns=\"{ns}\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    ))
}

/// A JSON answer (the awsJson and restJson protocols).
pub fn json_ok(body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/x-amz-json-1.1")
        .set_body_string(body.to_string())
}

/// A JSON error: restJson services name the error in a header.
pub fn json_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("x-amzn-errortype", code)
        .insert_header("content-type", "application/json")
        .set_body_string(serde_json::json!({ "message": message }).to_string())
}

/// An answer in Smithy's RPC v2 CBOR protocol (CloudWatch), from the same value as JSON.
pub fn cbor_ok(body: &serde_json::Value) -> ResponseTemplate {
    let mut encoder = aws_smithy_cbor::Encoder::new(Vec::new());
    encode(&mut encoder, body);
    ResponseTemplate::new(200)
        .insert_header("smithy-protocol", "rpc-v2-cbor")
        .insert_header("content-type", "application/cbor")
        .set_body_bytes(encoder.into_writer())
}

fn encode(encoder: &mut aws_smithy_cbor::Encoder, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => {
            encoder.null();
        }
        Value::Bool(b) => {
            encoder.boolean(*b);
        }
        Value::Number(n) => {
            encoder.long(n.as_i64().expect("integers only"));
        }
        Value::String(s) => {
            encoder.str(s);
        }
        Value::Array(items) => {
            encoder.array(items.len());
            for item in items {
                encode(encoder, item);
            }
        }
        Value::Object(map) => {
            encoder.map(map.len());
            for (key, item) in map {
                encoder.str(key);
                encode(encoder, item);
            }
        }
    }
}
