//! The model-serving APIs a listener on any port can be recognised by,
//! when the agent probes it (`agent/src/detect/serving_probe.rs` asks; this
//! says what each answer means).

/// An API a probed listener answered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServingApi {
    /// `GET /v1/models` answered 200 with an OpenAI list object.
    OpenAi,
    /// `GET /v1/models` answered 401 or 403 with an OpenAI error object
    /// (`{"error": {"message": ..., "type": ...}}`): a server that wants a key.
    OpenAiKeyRequired,
    /// `GET /api/tags` answered 200 with `{"models": [...]}` (Ollama).
    Ollama,
    /// `GET /v2` answered 200 with KServe v2 server metadata (`name`,
    /// `version`, `extensions`): Triton, KServe, Seldon MLServer.
    KServeV2,
}

impl ServingApi {
    /// A short stable name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ServingApi::OpenAi => "openai",
            ServingApi::OpenAiKeyRequired => "openai-key-required",
            ServingApi::Ollama => "ollama",
            ServingApi::KServeV2 => "kserve-v2",
        }
    }

    /// What the listener serves, for a finding's summary.
    pub fn describe(self) -> &'static str {
        match self {
            ServingApi::OpenAi => "an OpenAI-style API (GET /v1/models)",
            ServingApi::OpenAiKeyRequired => {
                "an OpenAI-style API that asks for a key (GET /v1/models: 401 with an OpenAI error)"
            }
            ServingApi::Ollama => "the Ollama API (GET /api/tags)",
            ServingApi::KServeV2 => "the KServe v2 inference protocol (GET /v2)",
        }
    }

    /// Reads `body` as the answer to this API's probe (`status` and the
    /// whole body): whether it is one.
    pub fn answers(self, status: u16, body: &[u8]) -> bool {
        let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(body)
        else {
            return false;
        };
        let text = |k: &str| o.get(k).is_some_and(serde_json::Value::is_string);
        match self {
            ServingApi::OpenAi => {
                status == 200 && o.contains_key("object") && o.contains_key("data")
            }
            ServingApi::OpenAiKeyRequired => {
                matches!(status, 401 | 403)
                    && o.get("error").and_then(|e| e.as_object()).is_some_and(|e| {
                        e.get("message").is_some_and(serde_json::Value::is_string)
                            && e.contains_key("type")
                    })
            }
            ServingApi::Ollama => {
                status == 200
                    && o.get("models")
                        .and_then(|m| m.as_array())
                        .is_some_and(|models| {
                            models.iter().all(|m| {
                                m.get("name")
                                    .or_else(|| m.get("model"))
                                    .is_some_and(serde_json::Value::is_string)
                            })
                        })
            }
            ServingApi::KServeV2 => {
                status == 200
                    && text("name")
                    && text("version")
                    && o.get("extensions").is_some_and(serde_json::Value::is_array)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_is_known_by_its_own_answer_only() {
        let list = br#"{"object":"list","data":[{"id":"m","object":"model"}]}"#;
        assert!(ServingApi::OpenAi.answers(200, list));
        assert!(!ServingApi::OpenAi.answers(404, list));
        let key =
            br#"{"error":{"message":"Invalid API Key","type":"authentication_error","code":401}}"#;
        assert!(ServingApi::OpenAiKeyRequired.answers(401, key));
        assert!(ServingApi::OpenAiKeyRequired.answers(403, key));
        assert!(!ServingApi::OpenAiKeyRequired.answers(200, key));
        // The common `{"error": "..."}` of every other web API is not one.
        assert!(!ServingApi::OpenAiKeyRequired.answers(401, br#"{"error":"Unauthorized"}"#));
        let tags = br#"{"models":[{"name":"llama3:8b","model":"llama3:8b","size":4661224676}]}"#;
        assert!(ServingApi::Ollama.answers(200, tags));
        assert!(ServingApi::Ollama.answers(200, br#"{"models":[]}"#));
        assert!(!ServingApi::Ollama.answers(200, br#"{"models":[1,2]}"#));
        let triton =
            br#"{"name":"triton","version":"2.41.0","extensions":["classification","sequence"]}"#;
        assert!(ServingApi::KServeV2.answers(200, triton));
        assert!(!ServingApi::KServeV2.answers(200, br#"{"name":"my-app","version":"1.0"}"#));
        // A catch-all page answers every path with 200: none of them.
        for api in [
            ServingApi::OpenAi,
            ServingApi::OpenAiKeyRequired,
            ServingApi::Ollama,
            ServingApi::KServeV2,
        ] {
            assert!(!api.answers(200, b"<html>OK</html>"), "{api:?}");
            assert!(!api.answers(200, br#"{"status":"ok"}"#), "{api:?}");
            assert!(!api.answers(200, b""), "{api:?}");
        }
    }
}
