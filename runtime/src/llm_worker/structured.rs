//! `response_format`: what a chat request asks its output to be, checked and turned
//! into a grammar (or a 400 naming `response_format`); and the OpenAI chat parameters
//! surge cannot honour, refused by name rather than dropped.

use serde_json::Value;

use crate::llm::GrammarSpec;
use crate::server::ApiError;

const PARAM: &str = "response_format";

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid(message, PARAM)
}

/// What OpenAI allows as a schema's or a function's name.
pub const NAME_RULE: &str = "1 to 64 of a-z, A-Z, 0-9, _ and -";

pub fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The grammar `response_format` asks for: none for `text` (or when absent),
/// any JSON object for `json_object`, the schema of `json_schema`. `strict` is
/// accepted either way: the output always matches the schema.
pub fn response_format(v: Option<&Value>) -> Result<Option<GrammarSpec>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let o = v
        .as_object()
        .ok_or_else(|| invalid("response_format must be an object with a 'type'"))?;
    let kind = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("response_format.type is required"))?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(GrammarSpec::JsonObject)),
        "json_schema" => {
            let js = o
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    invalid("response_format.json_schema is required for type 'json_schema'")
                })?;
            let name = js.get("name").and_then(Value::as_str).unwrap_or_default();
            if !is_name(name) {
                return Err(invalid(format!(
                    "response_format.json_schema.name is required: {NAME_RULE}"
                )));
            }
            if let Some(s) = js.get("strict").filter(|s| !s.is_null() && !s.is_boolean()) {
                return Err(invalid(format!(
                    "response_format.json_schema.strict must be a boolean, not {s}"
                )));
            }
            // No schema: any JSON value, as OpenAI documents.
            let schema = js
                .get("schema")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            if !schema.is_object() && !schema.is_boolean() {
                return Err(invalid(
                    "response_format.json_schema.schema must be a JSON Schema object",
                ));
            }
            Ok(Some(GrammarSpec::JsonSchema(schema)))
        }
        other => Err(invalid(format!(
            "response_format.type '{other}' is not one of text, json_object, json_schema"
        ))),
    }
}

/// OpenAI chat parameters surge does not implement, with what to do instead. Sent with
/// any value but null, they get a 400 naming them.
const UNSUPPORTED: [(&str, &str); 7] = [
    ("functions", "use tools"),
    ("function_call", "use tool_choice"),
    ("audio", "this model writes text only"),
    ("prediction", "predicted outputs are not implemented"),
    ("web_search_options", "surge does not search the web"),
    ("reasoning_effort", "this model has no reasoning mode"),
    ("verbosity", "this model has no verbosity setting"),
];

/// Refuses the request's fields that ask for something surge cannot do (`other`: the
/// fields the request types do not name). `modalities` may only be `["text"]`; `store`
/// may not be true (surge stores no completions). `metadata` and `service_tier` change
/// nothing here and pass; unknown fields are other servers' extensions and pass too.
pub fn refuse_unsupported(other: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    for (name, instead) in UNSUPPORTED {
        if other.get(name).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                format!("{name} is not supported: {instead}"),
                name,
            ));
        }
    }
    match other.get("modalities") {
        None | Some(Value::Null) => {}
        Some(m) if *m == serde_json::json!(["text"]) => {}
        Some(m) => {
            return Err(ApiError::invalid(
                format!("modalities {m} is not supported: this model writes text only"),
                "modalities",
            ))
        }
    }
    if other.get("store") == Some(&Value::Bool(true)) {
        return Err(ApiError::invalid(
            "store: true is not supported: surge does not store completions",
            "store",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unsupported_parameters_are_refused_by_name() {
        let ok = json!({"modalities": ["text"], "store": false, "metadata": {"a": "b"},
            "service_tier": "auto", "functions": null, "x_vendor": 1});
        refuse_unsupported(ok.as_object().unwrap()).unwrap();
        for (body, name) in [
            (json!({"functions": []}), "functions"),
            (json!({"function_call": "auto"}), "function_call"),
            (json!({"audio": {"voice": "alloy"}}), "audio"),
            (json!({"modalities": ["text", "audio"]}), "modalities"),
            (json!({"store": true}), "store"),
            (json!({"reasoning_effort": "low"}), "reasoning_effort"),
        ] {
            let e = refuse_unsupported(body.as_object().unwrap()).expect_err("refused");
            let ApiError::InvalidRequest { param, .. } = e else {
                panic!("{e:?}")
            };
            assert_eq!(param.as_deref(), Some(name));
        }
    }

    #[test]
    fn formats_are_read_or_refused_by_name() {
        assert_eq!(response_format(None).unwrap(), None);
        assert_eq!(
            response_format(Some(&json!({"type": "text"}))).unwrap(),
            None
        );
        assert_eq!(
            response_format(Some(&json!({"type": "json_object"}))).unwrap(),
            Some(GrammarSpec::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let v = json!({"type": "json_schema", "json_schema": {"name": "A", "schema": schema, "strict": true}});
        assert_eq!(
            response_format(Some(&v)).unwrap(),
            Some(GrammarSpec::JsonSchema(schema))
        );
        for bad in [
            json!("json"),
            json!({}),
            json!({"type": "yaml"}),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"schema": {}}}),
            json!({"type": "json_schema", "json_schema": {"name": "a b"}}),
            json!({"type": "json_schema", "json_schema": {"name": "a", "strict": "yes"}}),
            json!({"type": "json_schema", "json_schema": {"name": "a", "schema": 3}}),
        ] {
            let e = response_format(Some(&bad)).expect_err("refused");
            let ApiError::InvalidRequest { param, .. } = e else {
                panic!("{e:?}")
            };
            assert_eq!(param.as_deref(), Some(PARAM), "{bad}");
        }
    }
}
