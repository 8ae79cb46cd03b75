//! A lenient form body, `application/x-www-form-urlencoded` or `multipart/form-data` (as
//! FastAPI's `OAuth2PasswordRequestForm` takes both): documented from a schema type, but
//! parsed into plain fields that never fail, so that a malformed request is answered in
//! the OAuth2 error format instead of the framework's.

use std::marker::PhantomData;

use poem::{FromRequest, Request, RequestBody, web::Multipart};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    payload::{Form, Payload},
    registry::{MetaMediaType, MetaRequest, Registry},
    types::Type,
};

use crate::{
    auth::{FieldError, FieldErrorKind},
    error,
};

/// The media type of a multipart form.
const MULTIPART: &str = "multipart/form-data";

/// The fields of a form body, in order; documented in OpenAPI as `T`.
pub struct UrlEncoded<T> {
    /// `None` when there is no body at all.
    fields: Option<Vec<(String, String)>>,
    schema: PhantomData<T>,
}

impl<T> UrlEncoded<T> {
    /// The value of `name`: `Ok(None)` when absent or empty (as FastAPI treats an empty
    /// form value), an error when it is given more than once.
    pub fn get(&self, name: &'static str) -> Result<Option<&str>, FieldError> {
        let mut values = self
            .fields
            .iter()
            .flatten()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(FieldError {
                kind: FieldErrorKind::Repeated,
                field: name,
            });
        }
        // `str::is_empty`, spelled out: poem-openapi's `Type::is_empty` is in scope too.
        Ok(first.filter(|value| !str::is_empty(value)))
    }

    /// Reads several fields at once, collecting every missing or repeated one.
    /// `required` fields that are absent count as missing.
    pub fn get_all<const N: usize>(
        &self,
        names: [(&'static str, bool); N],
    ) -> Result<[Option<&str>; N], Vec<FieldError>> {
        let mut errors = Vec::new();
        let values = names.map(|(name, required)| match self.get(name) {
            Ok(None) if required => {
                errors.push(FieldError {
                    kind: FieldErrorKind::Missing,
                    field: name,
                });
                None
            }
            Ok(value) => value,
            Err(err) => {
                errors.push(err);
                None
            }
        });
        if errors.is_empty() {
            Ok(values)
        } else {
            Err(errors)
        }
    }
}

impl<'a, T: Type> ApiExtractor<'a> for UrlEncoded<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: [Form::<T>::CONTENT_TYPE, MULTIPART]
                .into_iter()
                .map(|content_type| MetaMediaType {
                    content_type,
                    schema: T::schema_ref(),
                })
                .collect(),
            required: true,
        })
    }

    /// A request without a body has no fields (each required one is then missing); a
    /// body that is no form (JSON, text) is refused, saying what a form is.
    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let content_type = req.content_type();
        let fields = if content_type.is_some_and(Form::<T>::check_content_type) {
            let bytes = body.take()?.into_bytes().await?;
            // Parsing pairs cannot fail: bad escapes are decoded leniently.
            Some(serde_urlencoded::from_bytes(&bytes).unwrap_or_default())
        } else if content_type.is_some_and(is_multipart) {
            Some(multipart_fields(req, body).await?)
        } else if content_type.is_none() && body.take().map_or(true, |body| body.is_empty()) {
            None
        } else {
            return Err(poem::Error::from_response(error::not_a_form()));
        };
        Ok(Self {
            fields,
            schema: PhantomData,
        })
    }
}

fn is_multipart(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case(MULTIPART))
}

/// Every part of a multipart form as a text field (a file's content included), in order.
/// The body was read within the size limit before it got here.
async fn multipart_fields(
    req: &Request,
    body: &mut RequestBody,
) -> poem::Result<Vec<(String, String)>> {
    fn malformed(_: impl std::fmt::Display) -> poem::Error {
        poem::Error::from_response(error::malformed_multipart())
    }
    let mut multipart = <Multipart as FromRequest>::from_request(req, body)
        .await
        .map_err(malformed)?;
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(malformed)?;
        fields.push((name, String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> UrlEncoded<String> {
        UrlEncoded {
            fields: Some(serde_urlencoded::from_str(body).unwrap()),
            schema: PhantomData,
        }
    }

    #[test]
    fn empty_values_count_as_missing() {
        let form = form("username=&password=x");
        assert_eq!(form.get("username"), Ok(None));
        assert_eq!(form.get("password"), Ok(Some("x")));
    }
}
