//! CloudFormation templates built from Rust values. Adding a resource returns a [`Handle`]
//! that is the only way to `Ref` or `GetAtt` it, so a reference to a resource that is not in
//! the template cannot be written. Output is deterministic JSON (keys sorted), so the same
//! settings always give the same bytes and a golden file can pin them.

mod appliance;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

/// The largest template CloudFormation takes inline.
pub const TEMPLATE_BODY_MAX: usize = 51_200;

pub use appliance::{
    appliance, user_secret_output, Network, LOAD_BALANCER_OUTPUT, LOAD_BALANCER_RESOURCE,
    PROTECTED_OUTPUT,
};

/// A resource in the template, to refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    id: String,
}

impl Handle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `{"Ref": id}`
    pub fn r#ref(&self) -> Value {
        json!({ "Ref": self.id })
    }

    /// `{"Fn::GetAtt": [id, attribute]}`
    pub fn get_att(&self, attribute: &str) -> Value {
        json!({ "Fn::GetAtt": [self.id, attribute] })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resource {
    #[serde(rename = "Type")]
    pub resource_type: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub properties: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_replace_policy: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Output {
    pub description: String,
    pub value: Value,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Template {
    #[serde(rename = "AWSTemplateFormatVersion")]
    pub format_version: &'static str,
    pub description: String,
    pub resources: BTreeMap<String, Resource>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, Output>,
}

impl Template {
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            format_version: "2010-09-09",
            description: description.into(),
            resources: BTreeMap::new(),
            outputs: BTreeMap::new(),
        }
    }

    /// Adds a resource. Logical ids are alphanumeric and unique; breaking that is a bug in the
    /// template code, caught by its tests, not a user error.
    pub fn add(&mut self, id: &str, resource_type: &str, properties: Value) -> Handle {
        self.insert(
            id,
            Resource {
                resource_type: resource_type.to_owned(),
                properties,
                depends_on: Vec::new(),
                deletion_policy: None,
                update_replace_policy: None,
            },
        )
    }

    /// Adds a fully described resource (dependencies, deletion policy).
    pub fn insert(&mut self, id: &str, resource: Resource) -> Handle {
        assert!(
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "logical id {id:?} must be alphanumeric"
        );
        let previous = self.resources.insert(id.to_owned(), resource);
        assert!(previous.is_none(), "logical id {id:?} added twice");
        Handle { id: id.to_owned() }
    }

    /// Makes `resource` wait for `dependency` where no reference says so.
    pub fn depends_on(&mut self, resource: &Handle, dependency: &Handle) {
        if let Some(r) = self.resources.get_mut(&resource.id) {
            r.depends_on.push(dependency.id.clone());
        }
    }

    pub fn output(&mut self, id: &str, description: &str, value: Value) {
        assert!(
            id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "output id {id:?} must be alphanumeric"
        );
        self.outputs.insert(
            id.to_owned(),
            Output {
                description: description.to_owned(),
                value,
            },
        );
    }

    /// The template as CloudFormation reads it: pretty JSON with sorted keys.
    /// The template as CloudFormation takes it inline (`TemplateBody`, at most
    /// [`TEMPLATE_BODY_MAX`] bytes): without the indentation, which would cost a third of that.
    pub fn to_compact_json(&self) -> String {
        let value = serde_json::to_value(self).expect("templates serialize");
        serde_json::to_string(&value).expect("values serialize")
    }

    /// The template, indented for people.
    pub fn to_json(&self) -> String {
        // serde_json's maps are ordered (no `preserve_order`), so the bytes are deterministic.
        let value = serde_json::to_value(self).expect("templates serialize");
        let mut text = serde_json::to_string_pretty(&value).expect("values serialize");
        text.push('\n');
        text
    }
}

/// `{"Fn::Sub": text}`
pub fn sub(text: &str) -> Value {
    json!({ "Fn::Sub": text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_reference_and_output_is_sorted() {
        let mut t = Template::new("test");
        let b = t.add("Bucket", "AWS::S3::Bucket", Value::Null);
        let a = t.add(
            "Alarm",
            "AWS::CloudWatch::Alarm",
            json!({"Z": 1, "A": b.r#ref()}),
        );
        t.depends_on(&a, &b);
        t.output("BucketArn", "the bucket", b.get_att("Arn"));
        let text = t.to_json();
        assert!(text.find("\"Alarm\": {").unwrap() < text.find("\"Bucket\": {").unwrap());
        assert!(
            text.contains("\"DependsOn\": [\n        \"Bucket\""),
            "{text}"
        );
        assert_eq!(text, t.to_json());
    }

    #[test]
    #[should_panic(expected = "added twice")]
    fn duplicate_ids_are_a_bug() {
        let mut t = Template::new("test");
        t.add("A", "AWS::S3::Bucket", Value::Null);
        t.add("A", "AWS::S3::Bucket", Value::Null);
    }
}
