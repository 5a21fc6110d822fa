//! The dashboard's routes over HTTP: the redirects, the files with their
//! content types, validators and security headers, 304 and 404, and that
//! the files need no token while the API does. (The page itself is driven
//! in a real browser in the workspace's tests/ crate, `dashboard`.)

use queue_server::ServerConfig;

use crate::common::{Backend, TestServer};

async fn the_root_and_the_folder_without_slash_redirect_to_the_dashboard(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in ["/", "/ui"] {
        let reply = server.client.get(path).await;
        assert_eq!(reply.status, 302, "{path}");
        assert_eq!(reply.header("location"), Some("/ui/"), "{path}");
    }
    server.stop().await;
}

async fn every_file_has_its_content_type_an_etag_and_no_cache(backend: Backend) {
    let server = TestServer::start(backend).await;
    for (path, content_type, starts) in [
        ("/ui/", "text/html; charset=utf-8", "<!doctype html>"),
        (
            "/ui/index.html",
            "text/html; charset=utf-8",
            "<!doctype html>",
        ),
        ("/ui/app.js", "text/javascript; charset=utf-8", "//"),
        ("/ui/app.css", "text/css; charset=utf-8", "/*"),
        ("/ui/favicon.svg", "image/svg+xml", "<svg"),
        (
            "/ui/vendor/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
            "/*! https://github.com/leeoniya/uPlot (v1.6.32)",
        ),
        (
            "/ui/vendor/uPlot.min.css",
            "text/css; charset=utf-8",
            ".uplot",
        ),
        (
            "/ui/vendor/uPlot.LICENSE",
            "text/plain; charset=utf-8",
            "The MIT License",
        ),
    ] {
        let reply = server.client.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
        assert!(reply.text.starts_with(starts), "{path}: {:.60}", reply.text);
        assert_eq!(reply.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        let etag = reply.header("etag").expect("an etag").to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

        // Revalidation: the same tag is a 304 without a body, another a 200.
        let again = server
            .client
            .send("GET", path, None, &[("if-none-match", &etag)])
            .await;
        assert_eq!((again.status, again.text.as_str()), (304, ""), "{path}");
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        let other = server
            .client
            .send("GET", path, None, &[("if-none-match", "\"other\"")])
            .await;
        assert_eq!(other.status, 200, "{path}");
    }
    // The page may run scripts from the server only.
    let page = server.client.get("/ui/").await;
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert!(
        !csp.split(';')
            .any(|d| d.contains("script-src") && d.contains("unsafe-inline")),
        "{csp}"
    );
    server.stop().await;
}

async fn an_unknown_file_is_a_404_and_other_methods_a_405(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in [
        "/ui/nope.js",
        "/ui/vendor/",
        "/ui/../Cargo.toml",
        "/ui/vendor/../app.js",
        "/ui/README.md",
    ] {
        let reply = server.client.get(path).await;
        assert_eq!((reply.status, reply.code()), (404, "not_found"), "{path}");
    }
    let reply = server.client.post("/ui/", serde_json::json!({})).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    let reply = server.client.get("/ui/?debug=1").await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_request"));
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("debug")
    );
    server.stop().await;
}

async fn with_a_token_the_files_are_public_and_the_api_is_not(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            token: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    )
    .await;
    for path in [
        "/",
        "/ui",
        "/ui/",
        "/ui/app.js",
        "/ui/vendor/uPlot.iife.min.js",
    ] {
        let reply = server.client.get(path).await;
        assert!(
            matches!(reply.status, 200 | 302),
            "{path}: {}",
            reply.status
        );
    }
    // Under /ui/ an unknown file is the dashboard's own 404: no data.
    assert_eq!(server.client.get("/ui/nope.js").await.status, 404);
    let api = server.client.get("/v1/queues").await;
    assert_eq!((api.status, api.code()), (401, "unauthorized"));
    let api = server
        .client
        .send(
            "GET",
            "/v1/queues",
            None,
            &[("authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(api.status, 200);
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test]
    async fn the_root_and_the_folder_without_slash_redirect_to_the_dashboard;
    #[tokio::test]
    async fn every_file_has_its_content_type_an_etag_and_no_cache;
    #[tokio::test]
    async fn an_unknown_file_is_a_404_and_other_methods_a_405;
    #[tokio::test]
    async fn with_a_token_the_files_are_public_and_the_api_is_not;
}
