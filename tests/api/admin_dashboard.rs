//! The admin dashboard's figures.

use crate::admin_ui::text;
use crate::fake::Mode;
use crate::helpers::{spawn_app, ADMIN_PASS};
use crate::{KA, KB};

#[actix_web::test]
async fn the_dashboard_shows_the_outcomes_of_the_last_24_hours() {
    let app = spawn_app().await;
    app.fake.add_key(KA, "a", "9", Mode::RateLimited("TPM"));
    app.fake.add_key(KB, "b", "5", Mode::Ok);
    app.import(&[KA, KB]).await;
    assert_eq!(app.chat("m").await.status, 200, "KA (richest) answers 429: KB serves");
    assert_eq!(app.chat("m").await.status, 200);
    assert_eq!(app.chat("m").await.status, 200);
    assert_eq!(app.chat("bad-model").await.status, 400);
    app.flush_logs().await;
    let cookie = app.login("admin", ADMIN_PASS).await.unwrap();
    let html = text(&app.page("/admin", &cookie).await);
    assert!(html.contains("Outcomes by hour, last 24 hours"), "{html}");
    // The current hour's column: its tooltip counts each outcome.
    assert!(
        html.contains("4 calls\nsuccess: 2\nafter failover: 1\nclient errors: 1\nupstream errors: 0"),
        "{html}"
    );
    assert!(html.contains("bar-failover h"), "a bar for the failover");
}
