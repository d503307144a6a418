//! The committed OpenAPI document is the one the code describes.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

#[test]
fn the_committed_openapi_document_is_current() {
    let generated = grantwatch_access_service::api::openapi_json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/access_api.openapi.json");
    if std::env::var_os("GRANTWATCH_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/access_api.openapi.json is stale: run `GRANTWATCH_UPDATE_OPENAPI=1 cargo test -p grantwatch-access-service --test openapi`"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/v1/requests", "/v1/requests/{id}", "/v1/requests/{id}/approve", "/v1/requests/{id}/revoke"] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    assert!(doc["components"]["schemas"]["AccessRecord"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}
