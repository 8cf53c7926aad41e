//! Logging in and out of the admin: notices, throttled guessing (also
//! behind trusted proxies), and logging out as a POST.

use crate::admin_ui::text;
use crate::helpers::{spawn_app, spawn_app_with, ADMIN_PASS};

#[actix_web::test]
async fn notices_come_from_the_server_never_from_the_query_and_a_failed_login_keeps_the_username() {
    let app = spawn_app().await;
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let html = text(&app.page("/admin/keys?notice=Your+account+is+locked.+Call+555-0100", &cookie).await);
    assert!(!html.contains("555-0100") && !html.contains("banner info"), "{html}");
    let html = text(&app.page("/admin/logs?notice=logs_cleared&n=7", &cookie).await);
    assert!(html.contains("Deleted 7 log rows."), "{html}");
    let html = text(&app.page("/admin/logs?notice=logs_cleared&n=%3Cb%3E", &cookie).await);
    assert!(!html.contains("Deleted") && !html.contains("<b>"));

    let r = app.login("someone-else", "wrong").await.unwrap_err();
    assert_eq!(r.status, 401);
    let html = text(&r);
    assert!(html.contains(r#"value="someone-else""#) && !html.contains("wrong\""), "{html}");
}

#[actix_web::test]
async fn logging_out_is_a_post_with_the_csrf_token() {
    let app = spawn_app().await;
    let cookie = app.login("admin", ADMIN_PASS).await.expect("login");
    // A GET (a link, an <img> elsewhere) does not log anyone out.
    let r = app.page("/logout", &cookie).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.page("/admin", &cookie).await.status, 200, "still logged in");
    assert_eq!(app.post_form("/logout", &cookie, &[]).await.status, 403, "no CSRF token");
    assert_eq!(app.page("/admin", &cookie).await.status, 200);
    let csrf = crate::admin_ui::csrf_of(&r);
    let r = app.post_form("/logout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(app.page("/admin", &cookie).await.status, 303, "logged out");
}

#[actix_web::test]
async fn sixty_wrong_passwords_at_once_get_at_most_the_allowed_checks() {
    let hash = siliconflow_proxy::credentials::hash_password("the-right-one").unwrap();
    let app = spawn_app_with(&[("ADMIN_PASSWORD", &hash), ("LOGIN_MAX_FAILURES", "5")]).await;
    let logins = (0..60).map(|i| {
        let req = app
            .client
            .post(app.url("/login"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"));
        app.send(req, Some(format!("username=admin&password=wrong-{i}").into()))
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(logins).await.into_iter().map(|r| r.status).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(checked <= 5, "{checked} passwords checked: {statuses:?}");
    assert_eq!(checked + refused, 60, "{statuses:?}");
    // Then through HTTP Basic, which shares the throttle: still at most 5 checks in all.
    let basics = (0..20).map(|i| {
        let req = app
            .client
            .get(app.url("/api/keys"))
            .insert_header(("Authorization", crate::helpers::basic("admin", &format!("wrong-{i}"))));
        app.send(req, None)
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(basics).await.into_iter().map(|r| r.status).collect();
    let more = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked + more <= 5, "{checked} + {more} passwords checked: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
}

/// A login through a (claimed) proxy: wrong, or with `proto`, right.
async fn login_via(app: &crate::helpers::TestApp, xff: &str, proto: Option<&str>) -> crate::helpers::Resp {
    let mut req = app
        .client
        .post(app.url("/login"))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .insert_header(("X-Forwarded-For", xff.to_string()));
    if let Some(p) = proto {
        req = req.insert_header(("X-Forwarded-Proto", p.to_string()));
    }
    let password = if proto.is_some() { ADMIN_PASS } else { "wrong" };
    app.send(req, Some(format!("username=admin&password={password}").into())).await
}

/// A guesser behind a proxy that sets X-Forwarded-For sends its own
/// `Forwarded: for=` with a new address each time (nginx passes it on):
/// only TRUSTED_PROXY_HEADER counts, so it is throttled all the same, and
/// cannot lock out the address it names.
#[actix_web::test]
async fn a_clients_own_forwarded_header_neither_escapes_the_throttle_nor_locks_others_out() {
    let app = spawn_app_with(&[("TRUSTED_PROXIES", "127.0.0.1/32, ::1")]).await;
    let guess = |forged: String| {
        let req = app
            .client
            .post(app.url("/login"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .insert_header(("Forwarded", format!("for={forged}")))
            .insert_header(("X-Forwarded-For", "203.0.113.50"));
        app.send(req, Some("username=admin&password=wrong".into()))
    };
    let mut statuses = Vec::new();
    for i in 0..30 {
        statuses.push(guess(format!("198.51.100.{i}")).await.status);
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "throttled by its X-Forwarded-For: {statuses:?}");
    // The addresses it named are not locked out.
    assert_eq!(login_via(&app, "198.51.100.3", None).await.status, 401);
}

#[actix_web::test]
async fn behind_trusted_proxies_the_forwarded_client_address_is_throttled_not_the_proxys() {
    let wrong = login_via;
    let app = spawn_app_with(&[("TRUSTED_PROXIES", "127.0.0.1/32, ::1")]).await;
    for _ in 0..5 {
        assert_eq!(wrong(&app, "203.0.113.1", None).await.status, 401);
    }
    assert_eq!(wrong(&app, "203.0.113.1", None).await.status, 429, "that client is throttled");
    assert_eq!(wrong(&app, "203.0.113.2", None).await.status, 401, "the owner behind the same proxy is not");
    let r = wrong(&app, "203.0.113.3", Some("https")).await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("Secure"), "HTTPS as the trusted proxy says");

    // Without TRUSTED_PROXIES the headers are anyone's: ignored.
    let app = spawn_app().await;
    for i in 0..5 {
        assert_eq!(wrong(&app, &format!("198.51.100.{i}"), None).await.status, 401);
    }
    assert_eq!(wrong(&app, "198.51.100.99", None).await.status, 429, "one peer address, one throttle");
    let app = spawn_app().await;
    let r = wrong(&app, "1.2.3.4", Some("https")).await;
    assert!(!r.header("set-cookie").unwrap().contains("Secure"), "an untrusted X-Forwarded-Proto is ignored");
}
