//! A lenient `application/x-www-form-urlencoded` body: documented from a schema type, but
//! parsed into plain fields that never fail, so that a malformed request is answered in
//! the OAuth2 error format instead of the framework's.

use std::marker::PhantomData;

use poem::{Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    payload::{Form, Payload},
    registry::{MetaMediaType, MetaRequest, Registry},
    types::Type,
};

use crate::auth::{FieldError, FieldErrorKind};

/// The fields of a form body, in order; documented in OpenAPI as `T`.
pub struct UrlEncoded<T> {
    /// `None` when the body is not a form at all (another content type, or none).
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
            content: vec![MetaMediaType {
                content_type: Form::<T>::CONTENT_TYPE,
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let is_form = req
            .content_type()
            .is_some_and(Form::<T>::check_content_type);
        let fields = if is_form {
            let bytes = body.take()?.into_bytes().await?;
            // Parsing pairs cannot fail: bad escapes are decoded leniently.
            Some(serde_urlencoded::from_bytes(&bytes).unwrap_or_default())
        } else {
            None
        };
        Ok(Self {
            fields,
            schema: PhantomData,
        })
    }
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
