//! Secrets at rest and the operator's commands, through the real binary:
//! pool keys sealed in the database (SQLite file, PostgreSQL dump), the
//! key that seals them (wrong, missing, rotated), sessions that end with
//! the password, `admin set-password`, `--help`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use diesel::prelude::*;
use serde_json::json;

use crate::fake::{Fake, Mode};
use crate::helpers::{base_env, Resp, ADMIN_USER, TEST_ENCRYPTION_KEY};
use crate::processes::{count_in, Instance};
use crate::{KA, KB};

const BIN: &str = env!("CARGO_BIN_EXE_siliconflow-proxy");
const OTHER_KEY: &str = "YW5vdGhlciBrZXksIGFsc28gMzIgYnl0ZXMgbG9uZyE=";

/// Runs the binary to its end (at most 60 s): exit code and everything it printed.
fn run(env: &HashMap<String, String>, dir: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .env("PORT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the proxy's binary");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("the binary's output");
    drop(watchdog);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Stops an instance as an operator would (SIGTERM) and waits for its end.
fn stop(mut instance: Instance) {
    unsafe { libc::kill(instance.pid(), libc::SIGTERM) };
    let _ = instance.child.wait();
}

/// Every stored byte: the SQLite files in the folder (database, WAL, key
/// file, logs), or a `pg_dump` of the database.
fn stored_bytes(url: &str, dir: &Path) -> Vec<u8> {
    match url.strip_prefix("postgres") {
        Some(_) => {
            let out = Command::new("pg_dump").arg("-d").arg(url).output().expect("pg_dump");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stdout.len() > 1000, "a dump of the database");
            out.stdout
        }
        None => {
            let mut all = Vec::new();
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    all.extend(std::fs::read(&path).unwrap());
                }
            }
            all
        }
    }
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `api_keys.key` as stored, by id.
fn stored_keys(url: &str) -> Vec<(i64, String)> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        key: String,
    }
    let q = diesel::sql_query("SELECT id, sealed_key AS key FROM api_keys ORDER BY id");
    let rows: Vec<Row> = match url.strip_prefix("sqlite://") {
        Some(path) => q.load(&mut SqliteConnection::establish(path).unwrap()).unwrap(),
        None => q.load(&mut PgConnection::establish(url).unwrap()).unwrap(),
    };
    rows.into_iter().map(|r| (r.id, r.key)).collect()
}

fn execute(url: &str, sql: &str) {
    let q = diesel::sql_query(sql);
    match url.strip_prefix("sqlite://") {
        Some(path) => q.execute(&mut SqliteConnection::establish(path).unwrap()).unwrap(),
        None => q.execute(&mut PgConnection::establish(url).unwrap()).unwrap(),
    };
}

async fn export(a: &Instance) -> String {
    let r = a.admin_get("/export_keys").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    String::from_utf8_lossy(&r.body).to_string()
}

/// KA and KB imported by an instance that then stops.
async fn store_two_keys(env: &HashMap<String, String>, dir: &Path) {
    let a = Instance::start(env, dir, "a").await;
    a.import(&[KA, KB]).await;
    stop(a);
}

fn setup() -> (Fake, tempfile::TempDir, HashMap<String, String>) {
    let fake = Fake::start();
    fake.add_key(KA, "acct-a", "20", Mode::Ok);
    fake.add_key(KB, "acct-b", "20", Mode::Ok);
    let dir = tempfile::tempdir().unwrap();
    let env = base_env(&fake, &dir);
    (fake, dir, env)
}

/// Imports and calls, then reads every stored byte: no pool key's text is
/// there (only the masked form is ever logged). After a restart the keys
/// serve calls, export whole, and an import of one again is a duplicate.
#[actix_web::test]
async fn pool_keys_are_sealed_in_the_stored_files_and_still_serve_and_export_after_a_restart() {
    let (fake, dir, env) = setup();
    let url = env["DATABASE_URL"].clone();
    let a = Instance::start(&env, dir.path(), "a").await;
    a.import(&[KA, KB]).await;
    assert_eq!(a.chat("m").await.status, 200);
    let log = a.log_text();
    stop(a);
    let stored = stored_bytes(&url, dir.path());
    for key in [KA, KB] {
        // The whole key, and its secret part alone.
        assert!(!holds(&stored, key), "{key} is stored in plain text");
        assert!(!holds(&stored, &key[8..]), "the secret part of {key} is stored in plain text");
    }
    // An older instance on the same database (a rolling upgrade) asks for
    // the column it knew: it fails, rather than reading sealed text as keys.
    let old_query = diesel::sql_query("SELECT key FROM api_keys");
    let failed = match url.strip_prefix("sqlite://") {
        Some(path) => old_query.execute(&mut SqliteConnection::establish(path).unwrap()).is_err(),
        None => old_query.execute(&mut PgConnection::establish(&url).unwrap()).is_err(),
    };
    assert!(failed, "an older version's read of api_keys.key must fail");
    let rows = stored_keys(&url);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|(_, k)| k.starts_with("enc1:")), "{rows:?}");
    if url.starts_with("sqlite") {
        let key_file = dir.path().join("test.db.key");
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(&key_file).expect("the key file beside the database").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(log.matches("generated the key that encrypts the pool keys").count(), 1, "{log}");
        assert!(log.contains(&key_file.display().to_string()), "the key file's path is said: {log}");
    }

    let b = Instance::start(&env, dir.path(), "b").await;
    assert!(!b.log_text().contains("generated the key"), "said once: {}", b.log_text());
    let served_before = fake.keys_for("/v1/chat/completions").len();
    for _ in 0..4 {
        assert_eq!(b.chat("m").await.status, 200);
    }
    let used = &fake.keys_for("/v1/chat/completions")[served_before..];
    assert!(used.iter().all(|k| k == KA || k == KB), "the upstream got the keys themselves: {used:?}");
    let exported = export(&b).await;
    assert_eq!(exported.lines().collect::<Vec<_>>(), vec![KA, KB]);
    let again = b.admin_post("/import_keys", json!({ "keys": [KA] })).await.json();
    assert_eq!(again["duplicates"], 1, "{again}");
    let listed = b.admin_get("/api/keys").await.json();
    assert_eq!(listed["keys"][0]["key"], "sk-aaaa...0001", "{listed}");
}

/// A key that is not the one the stored keys were sealed with, or none at
/// all, stops the start with a message that says what to do; the stored
/// keys are as they were.
#[actix_web::test]
async fn a_wrong_or_missing_encryption_key_stops_the_start_and_changes_nothing() {
    let (_fake, dir, env) = setup();
    let url = env["DATABASE_URL"].clone();
    store_two_keys(&env, dir.path()).await;
    let before = stored_keys(&url);

    let mut wrong = env.clone();
    wrong.insert("KEY_ENCRYPTION_KEY".into(), OTHER_KEY.into());
    let (code, said) = run(&wrong, dir.path(), &[], "");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("not the key the stored pool keys were encrypted with"), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(!said.contains(OTHER_KEY), "the key is never printed: {said}");
    // Without the check value, the first sealed key tells the wrong key.
    execute(&url, "DELETE FROM settings WHERE name = 'key_encryption_check'");
    let (code, said) = run(&wrong, dir.path(), &[], "");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("not the key the stored pool keys were encrypted with"), "{said}");

    let mut short = env.clone();
    short.insert("KEY_ENCRYPTION_KEY".into(), "c2hvcnQ=".into());
    let (code, said) = run(&short, dir.path(), &[], "");
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("KEY_ENCRYPTION_KEY") && said.contains("5 bytes, expected 32"), "{said}");

    let mut none = env.clone();
    none.remove("KEY_ENCRYPTION_KEY");
    if url.starts_with("sqlite") {
        let key_file = dir.path().join("test.db.key");
        let kept = std::fs::read(&key_file).unwrap();
        std::fs::remove_file(&key_file).unwrap();
        let (code, said) = run(&none, dir.path(), &[], "");
        assert_eq!(code, 1, "{said}");
        assert!(said.contains("is missing") && said.contains("Nothing was changed"), "{said}");
        assert!(!key_file.exists(), "no new key file over the lost one");
        std::fs::write(&key_file, kept).unwrap();
    } else {
        let (code, said) = run(&none, dir.path(), &[], "");
        assert_eq!(code, 1, "{said}");
        assert!(
            said.contains("KEY_ENCRYPTION_KEY is not set") && said.contains("new-encryption-key"),
            "{said}"
        );
    }
    assert_eq!(stored_keys(&url), before, "the stored keys are as they were");
    // And the right key still opens them, from KEY_ENCRYPTION_KEY_FILE too.
    let right = match env.get("KEY_ENCRYPTION_KEY") {
        Some(k) => k.clone(),
        None => std::fs::read_to_string(dir.path().join("test.db.key")).unwrap(),
    };
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("kek");
    std::fs::write(&secret, format!("{}\n", right.trim())).unwrap();
    let mut from_file = none.clone();
    from_file.insert("KEY_ENCRYPTION_KEY_FILE".into(), secret.display().to_string());
    let b = Instance::start(&from_file, dir.path(), "b").await;
    assert_eq!(export(&b).await.lines().count(), 2);
}

/// A database from before encryption (keys in plain text, no check value,
/// no key file): the first start seals every key in one transaction, and
/// everything works as before.
#[actix_web::test]
async fn a_database_with_plaintext_keys_is_sealed_at_the_first_start() {
    let (fake, dir, env) = setup();
    let url = env["DATABASE_URL"].clone();
    store_two_keys(&env, dir.path()).await;
    // Back to how an older version stored them.
    for (id, key) in [(1, KA), (2, KB)] {
        execute(&url, &format!("UPDATE api_keys SET sealed_key = '{key}', key_hash = NULL WHERE id = {id}"));
    }
    execute(&url, "DELETE FROM settings WHERE name = 'key_encryption_check'");
    let _ = std::fs::remove_file(dir.path().join("test.db.key"));
    assert!(holds(&stored_bytes(&url, dir.path()), KA), "the old form, in plain text");

    let b = Instance::start(&env, dir.path(), "b").await;
    assert!(
        b.log_text().contains("encrypted 2 pool keys that were stored in plain text (of 2)"),
        "{}",
        b.log_text()
    );
    assert_eq!(
        count_in(
            &url,
            "SELECT count(*) AS n FROM api_keys WHERE sealed_key LIKE 'enc1:%' AND key_hash IS NOT NULL"
        ),
        2
    );
    assert_eq!(export(&b).await.lines().collect::<Vec<_>>(), vec![KA, KB]);
    let again = b.admin_post("/import_keys", json!({ "keys": [KB] })).await.json();
    assert_eq!(again["duplicates"], 1, "{again}");
    let served_before = fake.keys_for("/v1/chat/completions").len();
    assert_eq!(b.chat("m").await.status, 200);
    assert!(fake.keys_for("/v1/chat/completions")[served_before..].iter().all(|k| k == KA || k == KB));
    stop(b);
    // The old rows' bytes are gone from the files too (SQLite: zeroed and
    // the WAL emptied; PostgreSQL: the table rewritten, and not in a dump).
    let stored = stored_bytes(&url, dir.path());
    for key in [KA, KB] {
        assert!(!holds(&stored, &key[8..]), "{key} is still stored in plain text");
    }
}

/// `keys reencrypt`: with KEY_ENCRYPTION_KEY_NEW every key moves to the new
/// key; the old one then refuses to start; without it, nothing happens. On
/// SQLite with the key file, the file takes the new key.
#[actix_web::test]
async fn reencrypt_moves_every_key_to_the_new_key() {
    let (_fake, dir, mut env) = setup();
    let url = env["DATABASE_URL"].clone();
    env.insert("KEY_ENCRYPTION_KEY".into(), TEST_ENCRYPTION_KEY.into());
    store_two_keys(&env, dir.path()).await;
    let before = stored_keys(&url);

    let (code, said) = run(&env, dir.path(), &["keys", "reencrypt"], "");
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("KEY_ENCRYPTION_KEY_NEW is not set"), "{said}");
    assert_eq!(stored_keys(&url), before);

    let mut rotate = env.clone();
    rotate.insert("KEY_ENCRYPTION_KEY_NEW".into(), OTHER_KEY.into());
    let (code, said) = run(&rotate, dir.path(), &["keys", "reencrypt"], "");
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("2 pool keys re-encrypted"), "{said}");
    let after = stored_keys(&url);
    assert!(after.iter().zip(&before).all(|(a, b)| a.0 == b.0 && a.1 != b.1 && a.1.starts_with("enc1:")));

    let (code, said) = run(&env, dir.path(), &[], "");
    assert_eq!(code, 1, "the old key no longer opens them: {said}");
    let mut moved = env.clone();
    moved.insert("KEY_ENCRYPTION_KEY".into(), OTHER_KEY.into());
    let b = Instance::start(&moved, dir.path(), "b").await;
    assert_eq!(export(&b).await.lines().collect::<Vec<_>>(), vec![KA, KB]);
    stop(b);

    if url.starts_with("sqlite") {
        // The key file beside the database: it is replaced.
        let mut beside = env.clone();
        beside.remove("KEY_ENCRYPTION_KEY");
        let key_file = dir.path().join("test.db.key");
        let _ = std::fs::remove_file(&key_file);
        std::fs::write(&key_file, format!("{OTHER_KEY}\n")).unwrap();
        beside.insert("KEY_ENCRYPTION_KEY_NEW".into(), TEST_ENCRYPTION_KEY.into());
        let (code, said) = run(&beside, dir.path(), &["keys", "reencrypt"], "");
        assert_eq!(code, 0, "{said}");
        assert!(said.contains("now holds the new key"), "{said}");
        assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), TEST_ENCRYPTION_KEY);
        assert!(!dir.path().join("test.db.key.new").exists());
        beside.remove("KEY_ENCRYPTION_KEY_NEW");
        let c = Instance::start(&beside, dir.path(), "c").await;
        assert_eq!(export(&c).await.lines().count(), 2);
    }
}

/// Logs in through the form with these credentials: the status and the cookie.
async fn login(a: &Instance, user: &str, password: &str) -> (u16, Option<String>) {
    let form = serde_urlencoded::to_string([("username", user), ("password", password)]).unwrap();
    let req =
        a.client.post(a.url("/login")).insert_header(("Content-Type", "application/x-www-form-urlencoded"));
    let r = a.send(req, Some(Bytes::from(form))).await;
    let cookie = r.header("set-cookie").and_then(|c| c.split(';').next().map(str::to_string));
    (r.status, cookie.filter(|c| !c.ends_with('=')))
}

async fn get_with(a: &Instance, cookie: &str, path: &str) -> Resp {
    a.send(a.client.get(a.url(path)).insert_header(("Cookie", cookie)), None).await
}

/// The session's CSRF token, from a page's form.
async fn csrf_of(a: &Instance, cookie: &str) -> String {
    let page = get_with(a, cookie, "/logout").await;
    let text = String::from_utf8_lossy(&page.body).to_string();
    let at = text.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    text[at..].split('"').next().unwrap().to_string()
}

/// The generated password, from the first start's log.
fn generated_password(log: &str) -> String {
    let at =
        log.find("with password: ").expect("the generated password in the log") + "with password: ".len();
    log[at..].split_whitespace().next().unwrap().to_string()
}

/// `admin set-password`, run while the proxy serves, with a live session:
/// the session ends at once, the old password no longer logs in, the new
/// one does (on the running instance), and the generated-password warning
/// goes. Refused while ADMIN_PASSWORD is set, and for a short password.
#[actix_web::test]
async fn set_password_ends_live_sessions_and_is_refused_while_admin_password_is_set() {
    let (_fake, dir, mut env) = setup();
    env.remove("ADMIN_PASSWORD");
    let a = Instance::start(&env, dir.path(), "a").await;
    let old = generated_password(&a.log_text());
    let (status, cookie) = login(&a, ADMIN_USER, &old).await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session");
    let page = get_with(&a, &cookie, "/admin").await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("generated at first start"));

    let mut with_env = env.clone();
    with_env.insert("ADMIN_PASSWORD".into(), "from-the-environment".into());
    let (code, said) = run(&with_env, dir.path(), &["admin", "set-password"], "a-new-password\n");
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("ADMIN_PASSWORD is set"), "{said}");
    let (code, said) = run(&env, dir.path(), &["admin", "set-password"], "short\n");
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("at least 8 characters"), "{said}");
    assert_eq!(get_with(&a, &cookie, "/admin").await.status, 200, "refusals change nothing");

    let (code, said) = run(&env, dir.path(), &["admin", "set-password"], "a-new-password\n");
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("1 admin session(s) ended"), "{said}");
    assert!(!said.contains("a-new-password"), "{said}");
    let after = get_with(&a, &cookie, "/admin").await;
    assert_eq!(
        (after.status, after.header("location").as_deref()),
        (303, Some("/")),
        "the live session ended"
    );
    assert_eq!(login(&a, ADMIN_USER, &old).await.0, 401, "the old password");
    let (status, cookie) = login(&a, ADMIN_USER, "a-new-password").await;
    assert_eq!(status, 303, "the new password, on the running instance");
    let page = get_with(&a, &cookie.unwrap(), "/admin").await;
    assert!(!String::from_utf8_lossy(&page.body).contains("generated at first start"));
    // And after a restart.
    stop(a);
    let b = Instance::start(&env, dir.path(), "b").await;
    assert!(!b.log_text().contains("with password:"), "no new password generated");
    assert_eq!(login(&b, ADMIN_USER, "a-new-password").await.0, 303);
}

/// The reproduction: a stolen session cookie outlived a changed
/// ADMIN_PASSWORD. Now a restart with the same password keeps sessions, one
/// with another password ends them; "log out everywhere" ends every one.
#[actix_web::test]
async fn a_changed_admin_password_ends_every_session_and_so_does_log_out_everywhere() {
    let (_fake, dir, env) = setup();
    let pass = env["ADMIN_PASSWORD"].clone();
    let a = Instance::start(&env, dir.path(), "a").await;
    let first = login(&a, ADMIN_USER, &pass).await.1.unwrap();
    let second = login(&a, ADMIN_USER, &pass).await.1.unwrap();
    stop(a);
    let b = Instance::start(&env, dir.path(), "b").await;
    assert_eq!(get_with(&b, &first, "/admin").await.status, 200, "same password: sessions live on");
    let csrf = csrf_of(&b, &first).await;
    let req = b
        .client
        .post(b.url("/logout_everywhere"))
        .insert_header(("Cookie", first.as_str()))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"));
    let r = b.send(req, Some(Bytes::from(format!("csrf={csrf}")))).await;
    assert_eq!(r.status, 303);
    for cookie in [&first, &second] {
        assert_eq!(get_with(&b, cookie, "/admin").await.status, 303, "every session ended");
    }
    let third = login(&b, ADMIN_USER, &pass).await.1.unwrap();
    assert_eq!(get_with(&b, &third, "/admin").await.status, 200);
    stop(b);

    let mut changed = env.clone();
    changed.insert("ADMIN_PASSWORD".into(), "another-password".into());
    let c = Instance::start(&changed, dir.path(), "c").await;
    assert_eq!(get_with(&c, &third, "/admin").await.status, 303, "a new password ends the old sessions");
    assert!(c.log_text().contains("admin sessions ended"), "{}", c.log_text());
    assert_eq!(login(&c, ADMIN_USER, &pass).await.0, 401);
    assert_eq!(login(&c, ADMIN_USER, "another-password").await.0, 303);
}

#[test]
fn help_lists_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let env = HashMap::new();
    let (code, said) = run(&env, dir.path(), &["--help"], "");
    assert_eq!(code, 0, "{said}");
    for command in ["serve", "admin", "keys"] {
        assert!(said.contains(command), "{said}");
    }
    let (code, said) = run(&env, dir.path(), &["admin", "--help"], "");
    assert_eq!(code, 0);
    assert!(said.contains("set-password"), "{said}");
    let (code, said) = run(&env, dir.path(), &["keys", "--help"], "");
    assert_eq!(code, 0);
    assert!(said.contains("reencrypt") && said.contains("new-encryption-key"), "{said}");
    let (code, said) = run(&env, dir.path(), &["keys", "new-encryption-key"], "");
    assert_eq!(code, 0);
    let key = said.lines().find(|l| !l.trim().is_empty()).unwrap().trim();
    use base64::Engine;
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(key).unwrap().len(), 32);
    let (code, said) = run(&env, dir.path(), &["nonsense"], "");
    assert_eq!(code, 2, "{said}");
}

/// A key is sealed with the id it is stored under, given before the insert:
/// ids are never given twice (a deleted key's id included), and the key
/// stored under the next id opens and serves.
#[actix_web::test]
async fn a_new_key_takes_an_id_never_given_before_and_opens_with_it() {
    let app = crate::helpers::spawn_app().await;
    app.fake.add_key(KA, "acct-a", "20", Mode::Ok);
    app.fake.add_key(KB, "acct-b", "20", Mode::Ok);
    assert_eq!(app.import(&[KA]).await["results"][0]["id"], 1);
    let req = app
        .client
        .delete(app.url("/api/keys/1"))
        .insert_header(("Authorization", crate::helpers::basic(ADMIN_USER, crate::helpers::ADMIN_PASS)));
    assert_eq!(app.send(req, None).await.status, 200);
    let added = app.import(&[KB, KA]).await;
    let ids: Vec<_> = added["results"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, vec![json!(2), json!(3)], "{added}");
    assert_eq!(app.chat("m").await.status, 200);
    let r = app.admin_get("/export_keys").await;
    let mut exported: Vec<String> = String::from_utf8_lossy(&r.body).lines().map(str::to_string).collect();
    exported.sort();
    assert_eq!(exported, vec![KA.to_string(), KB.to_string()]);
}

/// A login checked against the stored password's hash opens its session only
/// while that hash is still stored: a login that raced `set-password` (its
/// check passed with the old password just before the new one was stored)
/// gets no session, on either backend.
#[actix_web::test]
async fn a_session_is_opened_only_while_the_password_it_was_checked_against_is_stored() {
    use siliconflow_proxy::db::queries::{sessions, settings};
    let app = crate::helpers::spawn_app().await;
    let mut conn = app.state.db.get().unwrap();
    settings::set(&mut conn, "admin_password_hash", "$argon2id$new").unwrap();
    let session = |token| sessions::NewSession {
        token_hash: token,
        csrf: "c",
        generation: "g",
        now: 1,
        expires: i64::MAX,
    };
    let raced =
        sessions::insert_while_setting(&mut conn, &session("t1"), "admin_password_hash", "$argon2id$old");
    assert!(!raced.unwrap(), "checked against a hash no longer stored: no session");
    let current =
        sessions::insert_while_setting(&mut conn, &session("t2"), "admin_password_hash", "$argon2id$new");
    assert!(current.unwrap());
    assert_eq!(sessions::find(&mut conn, "t1", "g", 2).unwrap(), None);
    assert_eq!(sessions::find(&mut conn, "t2", "g", 2).unwrap().as_deref(), Some("c"));
    assert_eq!(sessions::find(&mut conn, "t2", "another password", 2).unwrap(), None);
}

/// The attack on `keys reencrypt`: an instance left running (against the
/// README's advice) keeps serving with the keys it holds, refuses imports
/// (it would seal with the old key) and says why on the admin; nothing it
/// does leaves a key the new key cannot open.
#[actix_web::test]
async fn an_instance_left_running_through_a_reencrypt_serves_refuses_imports_and_says_why() {
    let (fake, dir, mut env) = setup();
    fake.add_key(crate::KC, "acct-c", "20", Mode::Ok);
    env.insert("KEY_ENCRYPTION_KEY".into(), TEST_ENCRYPTION_KEY.into());
    let a = Instance::start(&env, dir.path(), "a").await;
    a.import(&[KA, KB]).await;
    let mut rotate = env.clone();
    rotate.insert("KEY_ENCRYPTION_KEY_NEW".into(), OTHER_KEY.into());
    let (code, said) = run(&rotate, dir.path(), &["keys", "reencrypt"], "");
    assert_eq!(code, 0, "{said}");

    assert_eq!(a.chat("m").await.status, 200, "the keys it holds still serve");
    let imported = a.admin_post("/import_keys", json!({ "keys": [crate::KC] })).await.json();
    assert_eq!(imported["added"], 0, "{imported}");
    assert!(imported.to_string().contains("changed since this instance started"), "{imported}");
    let listed = a.admin_get("/api/keys?q=sk").await;
    assert_eq!(listed.status, 503, "{}", String::from_utf8_lossy(&listed.body));
    assert!(String::from_utf8_lossy(&listed.body).contains("restart this instance with the new key"));
    stop(a);

    let mut moved = env.clone();
    moved.insert("KEY_ENCRYPTION_KEY".into(), OTHER_KEY.into());
    let b = Instance::start(&moved, dir.path(), "b").await;
    assert_eq!(export(&b).await.lines().collect::<Vec<_>>(), vec![KA, KB]);
}
