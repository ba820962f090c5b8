//! `POST /RPC2`: the XML-RPC `search` call behind `pip search --index URL QUERY`, which
//! pypiserver answers and PyPI no longer does. Projects whose name contains a query term are
//! returned with their latest version, one entry each.

use quick_xml::events::Event;
use quick_xml::Reader;
use rocket::data::{Data, ToByteUnit};
use rocket::http::{ContentType, Status};
use rocket::State;

use super::error::{blocking, ApiError};
use super::guards::CanList;
use super::render::escape_html;
use super::App;
use crate::names::ProjectName;

/// An XML-RPC call: its method and the string values of its first parameter, grouped by the
/// struct member they belong to (`name`, `summary`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) terms: Vec<(String, String)>,
}

/// Why a request body is not a call `search` can answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("invalid XML-RPC text: {0}")]
    Text(String),
    #[error("malformed XML-RPC request at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("malformed XML-RPC request: no methodName")]
    NoMethod,
}

/// Reads the parts of a call that `search` needs. Anything that is not well-formed XML is an
/// error quoting the parser's complaint.
pub(crate) fn parse_call(body: &str) -> Result<Call, CallError> {
    let mut reader = Reader::from_str(body);
    reader.config_mut().trim_text(true);
    let mut call = Call::default();
    let mut path: Vec<String> = Vec::new();
    let mut param = 0usize;
    let mut member = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(tag)) => {
                let name = String::from_utf8_lossy(tag.name().as_ref()).into_owned();
                if name == "param" {
                    param += 1;
                }
                path.push(name);
            }
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Text(text)) => {
                let value = text
                    .decode()
                    .map_err(|err| CallError::Text(err.to_string()))?
                    .into_owned();
                let value = quick_xml::escape::unescape(&value)
                    .map_err(|err| CallError::Text(err.to_string()))?
                    .into_owned();
                match path.last().map(String::as_str) {
                    Some("methodName") => call.method = value,
                    Some("name") if path.iter().any(|p| p == "member") => member = value,
                    // A value is a <string> or, for strings, bare text inside <value>.
                    Some("string" | "value") if param == 1 && !member.is_empty() => {
                        call.terms.push((member.clone(), value));
                    }
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(err) => {
                return Err(CallError::Malformed {
                    position: reader.buffer_position(),
                    message: err.to_string(),
                })
            }
        }
    }
    if call.method.is_empty() {
        return Err(CallError::NoMethod);
    }
    Ok(call)
}

fn response(body: &str) -> String {
    format!("<?xml version='1.0'?>\n<methodResponse>\n{body}\n</methodResponse>\n")
}

fn fault(code: i32, message: &str) -> String {
    response(&format!(
        "<fault><value><struct><member><name>faultCode</name><value><int>{code}</int></value></member><member><name>faultString</name><value><string>{}</string></value></member></struct></value></fault>",
        escape_html(message)
    ))
}

fn results(hits: &[(ProjectName, String)]) -> String {
    let mut values = String::new();
    for (name, version) in hits {
        values.push_str(&format!(
            "<value><struct><member><name>name</name><value><string>{}</string></value></member><member><name>version</name><value><string>{}</string></value></member><member><name>summary</name><value><string></string></value></member><member><name>_pypi_ordering</name><value><int>0</int></value></member></struct></value>",
            escape_html(name.as_str()),
            escape_html(version)
        ));
    }
    response(&format!(
        "<params><param><value><array><data>{values}</data></array></value></param></params>"
    ))
}

/// Largest XML-RPC request read: a search is a few hundred bytes.
const MAX_CALL_BYTES: usize = 64 * 1024;

#[post("/RPC2", data = "<data>")]
pub(crate) async fn rpc(
    _allowed: CanList,
    data: Data<'_>,
    app: &State<App>,
) -> Result<(ContentType, String), ApiError> {
    let xml = ContentType::new("text", "xml");
    let body = data
        .open(MAX_CALL_BYTES.bytes())
        .into_string()
        .await
        .map_err(|err| ApiError::bad_request(format!("unreadable XML-RPC request: {err}")))?;
    if !body.is_complete() {
        return Err(ApiError::new(
            Status::PayloadTooLarge,
            format!("an XML-RPC request may be at most {MAX_CALL_BYTES} bytes"),
        ));
    }
    let call = parse_call(&body.value).map_err(|err| ApiError::bad_request(err.to_string()))?;
    if call.method != "search" {
        // XML-RPC reports unknown methods as faults inside a 200, as xmlrpc servers do.
        return Ok((
            xml,
            fault(
                1,
                &format!("method {:?} is not supported (only search)", call.method),
            ),
        ));
    }
    let terms: Vec<String> = call
        .terms
        .iter()
        .filter(|(member, _)| member == "name")
        .map(|(_, value)| value.to_ascii_lowercase().replace(['_', '.'], "-"))
        .filter(|value| !value.is_empty())
        .collect();
    let index = app.index.clone();
    let hits = blocking(move || -> std::io::Result<_> {
        let snapshot = index.snapshot()?;
        Ok(snapshot
            .projects()
            .filter(|(name, _)| terms.iter().any(|t| name.as_str().contains(t.as_str())))
            .filter_map(|(name, files)| {
                files
                    .last()
                    .map(|latest| (name.clone(), latest.name.version().to_owned()))
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok((xml, results(&hits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pip sends for `pip search Demo_Pkg`.
    const PIP_SEARCH: &str = "<?xml version='1.0'?>\n<methodCall>\n<methodName>search</methodName>\n<params>\n<param>\n<value><struct>\n<member>\n<name>name</name>\n<value><array><data>\n<value><string>Demo_Pkg</string></value>\n</data></array></value>\n</member>\n<member>\n<name>summary</name>\n<value><array><data>\n<value><string>Demo_Pkg</string></value>\n</data></array></value>\n</member>\n</struct></value>\n</param>\n<param>\n<value><string>or</string></value>\n</param>\n</params>\n</methodCall>\n";

    #[test]
    fn parses_pips_search_call() {
        let call = parse_call(PIP_SEARCH).unwrap();
        assert_eq!(call.method, "search");
        assert_eq!(
            call.terms,
            vec![
                ("name".to_owned(), "Demo_Pkg".to_owned()),
                ("summary".to_owned(), "Demo_Pkg".to_owned())
            ]
        );
    }

    #[test]
    fn err_malformed_xml_is_reported() {
        let err = parse_call("<methodCall><methodName>search</methodName></oops>")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("malformed XML-RPC request at byte"),
            "{err}"
        );
        assert!(parse_call("<methodCall/>").is_err());
    }
}
