//! The page's files, embedded in the binary (`src/web/assets/`), so the service is
//! one file to deploy and the page works offline: no CDN.
//!
//! Files under `/assets/` are cached for a year. That is safe because the page links
//! each with its content hash (`app.js?v=…`): `index.html` writes `{{app.js}}` where
//! the hash goes, and [`index`] fills it in. A new build therefore means new URLs,
//! and the page itself is never cached.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::{EmbeddedFile, RustEmbed};

use super::WebError;

#[derive(RustEmbed)]
#[folder = "src/web/assets/"]
struct Assets;

/// Hex digits of the content hash used in URLs and ETags.
const HASH_LEN: usize = 16;

fn hash(file: &EmbeddedFile) -> String {
    file.metadata
        .sha256_hash()
        .iter()
        .take(HASH_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `index.html` with every `{{path}}` replaced by that file's hash. A placeholder
/// naming no file is left as it is, and a test keeps that from shipping.
fn render_index() -> String {
    let Some(file) = Assets::get("index.html") else {
        return String::from("index.html is missing from this build");
    };
    let template = String::from_utf8_lossy(&file.data);
    let mut out = String::with_capacity(template.len());
    let mut rest = template.as_ref();
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let name = &rest[start + 2..start + len];
        out.push_str(&rest[..start]);
        match Assets::get(name) {
            Some(f) => out.push_str(&hash(&f)),
            None => out.push_str(&rest[start..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// `GET /`.
pub(super) async fn index() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(render_index).as_str();
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // Always revalidated: it names the current assets.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        page,
    )
        .into_response()
}

/// `GET /favicon.ico`: browsers ask for it whatever the page says; answer with the
/// page's SVG icon rather than a 404.
pub(super) async fn favicon(headers: HeaderMap) -> Result<Response, WebError> {
    serve("favicon.svg", &headers, "public, max-age=86400")
}

/// `GET /assets/{*path}`.
pub(super) async fn asset(
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    serve(&path, &headers, "public, max-age=31536000, immutable")
}

fn serve(path: &str, headers: &HeaderMap, cache: &'static str) -> Result<Response, WebError> {
    let file = Assets::get(path)
        .ok_or_else(|| WebError::NotFound(format!("/assets/{path}: no such file")))?;
    let etag = format!("\"{}\"", hash(&file));
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    // Hex digits in quotes are always a valid header value.
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if cached {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            ],
        )
            .into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, content_type(path, &file)),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        file.data,
    )
        .into_response())
}

/// The file's media type, with `charset=utf-8` on text: our files are UTF-8, and a
/// browser guessing otherwise garbles `→` and `µ`.
fn content_type(path: &str, file: &EmbeddedFile) -> HeaderValue {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mime = if name.ends_with(".js") || name.ends_with(".mjs") {
        // mime_guess says `application/javascript`, which RFC 9239 made obsolete.
        "text/javascript".to_owned()
    } else if !name.contains('.') {
        // LICENSE and the like.
        "text/plain".to_owned()
    } else {
        file.metadata.mimetype().to_owned()
    };
    let value = if mime.starts_with("text/") || mime == "image/svg+xml" {
        format!("{mime}; charset=utf-8")
    } else {
        mime
    };
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_every_asset_by_hash() {
        let page = render_index();
        assert!(!page.contains("{{"), "unfilled placeholder in {page}");
        for name in [
            "app.js",
            "app.css",
            "vendor/uplot/uPlot.iife.min.js",
            "vendor/uplot/uPlot.min.css",
        ] {
            let f = Assets::get(name).unwrap_or_else(|| panic!("{name} not embedded"));
            assert!(
                page.contains(&format!("/assets/{name}?v={}", hash(&f))),
                "{name} not linked with its hash"
            );
        }
    }

    #[test]
    fn media_types_are_right() {
        for (path, want) in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml; charset=utf-8"),
            (
                "vendor/uplot/uPlot.iife.min.js",
                "text/javascript; charset=utf-8",
            ),
            ("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
        ] {
            let f = Assets::get(path).unwrap_or_else(|| panic!("{path} not embedded"));
            assert_eq!(content_type(path, &f), want, "{path}");
        }
    }
}
