//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::{
    openapi::{
        path::Parameter,
        schema::{SchemaType, Type},
        ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Schema,
    },
    Modify, Number, OpenApi,
};

use crate::{
    extract::MAX_ID,
    routes::{admin, writes},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "GistFans API",
        description = "Profiles of a code-snippet site, served by the hpdb data layer. Writes name the acting user in X-User-Id (the demo has no login; put real authentication in front)."
    ),
    components(schemas(crate::error::ErrorBody, writes::NewPostBody, admin::AdminAction))
)]
struct ApiDoc;

/// What holds for every operation, written once here rather than on each
/// handler: the id parameters' range, the limits on the request head (414,
/// 431), the request timeout and overload (503), the database's deadline
/// (504), and the answers of operations with parameters (400) or a body
/// (400, 413, 415).
struct CommonRules;

/// Routes that never touch the database (they cannot answer 504).
const NO_DATABASE: [&str; 7] = [
    "/healthz",
    "/api/ping",
    "/metrics",
    "/openapi.json",
    "/admin",
    "/assets/{file}",
    "/api/admin/stream",
];

/// Parameters that carry an id (see `extract::parse_id`).
const ID_PARAMETERS: [&str; 3] = ["id", "userId", "X-User-Id"];

impl Modify for CommonRules {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let touches_database = !NO_DATABASE.contains(&path.as_str());
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                let mut has_parameters = false;
                for p in op.parameters.iter_mut().flatten() {
                    has_parameters = true;
                    // Parameters may be references to shared components
                    // (OpenAPI 3.2); ours are all written inline.
                    if let RefOr::T(p) = p {
                        if ID_PARAMETERS.contains(&p.name.as_str()) {
                            constrain_id(p);
                        }
                    }
                }
                let mut codes = vec![
                    ("414", "The request target is longer than 8 KiB"),
                    ("431", "More than 64 headers, or more than 32 KiB of them"),
                    ("503", "Overloaded or the database unavailable (a request timeout, the pool or the circuit breaker); see Retry-After"),
                ];
                if touches_database {
                    codes.push(("504", "The database did not answer in time"));
                }
                if has_parameters || op.request_body.is_some() {
                    codes.push(("400", "A malformed parameter, header or body"));
                }
                if op.request_body.is_some() {
                    codes.push(("413", "The body is larger than the limit"));
                    codes.push(("415", "The body is not `application/json`"));
                }
                for (code, description) in codes {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

/// An id: an integer from 1 to `MAX_ID`, or a string spelling one.
fn constrain_id(p: &mut Parameter) {
    if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
        if o.schema_type == SchemaType::Type(Type::Integer) {
            o.minimum = Some(Number::Int(1));
            o.maximum = Some(Number::Int(MAX_ID as isize));
        } else {
            o.pattern = Some("^[1-9][0-9]{0,15}$".into());
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// The document's frame: its description and shared schemas. The
/// operations come with the routes (`routes::api`), so the route list is
/// written once.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The finished document: `operations` with the rules that hold for every
/// operation added.
pub fn finish(mut operations: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    CommonRules.modify(&mut operations);
    operations
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn param<'a>(op: &'a Value, name: &str) -> &'a Value {
        op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no parameter {name} in {op}"))
    }

    #[test]
    fn ids_carry_their_range_and_every_operation_the_common_errors() {
        let doc = serde_json::to_value(crate::routes::document()).unwrap();
        let stats = &doc["paths"]["/api/users/{id}/stats"]["get"];
        assert_eq!(param(stats, "id")["schema"]["minimum"], 1);
        assert_eq!(param(stats, "id")["schema"]["maximum"], MAX_ID);
        let create = &doc["paths"]["/api/posts"]["post"];
        assert_eq!(param(create, "X-User-Id")["schema"]["minimum"], 1);
        for code in ["400", "413", "415"] {
            assert!(
                create["responses"][code].is_object(),
                "POST /api/posts {code}"
            );
        }
        let profile = &doc["paths"]["/api/user/stats-optimized"]["get"];
        assert!(param(profile, "userId")["schema"]["pattern"].is_string());
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for code in ["414", "431"] {
                    assert!(op["responses"][code].is_object(), "{method} {path} {code}");
                }
            }
        }
    }
}
