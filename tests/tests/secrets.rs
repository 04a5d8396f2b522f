//! Secrets never reach a log: an end-to-end run over the real binaries
//! (bootstrap, login, a failed login, tokens from the API and the command
//! line, accounts with generated and chosen passwords, API use with each)
//! with debug logging, then every log is searched for every secret.
//!
//! The bootstrap password is printed once, on standard output, on its own
//! line; tokens and generated passwords only on the standard output of the
//! command that made them.

use meshtable_tests::{Backend, Controller, unique};
use serde_json::Value;

#[test]
fn embedded_sqlite() {
    secrets(&Backend::embedded());
}

#[test]
fn service_mosquitto_postgres() {
    let Some(backend) = Backend::service() else {
        return;
    };
    secrets(&backend);
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

/// `POST path` with a JSON body and extra headers: status, `Set-Cookie`
/// values and body.
fn post(
    ctl: &Controller,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<String>, String) {
    let url = format!("{}{path}", ctl.base_url());
    let mut req = agent()
        .post(&url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", ctl.log_tail()));
    let status = resp.status().as_u16();
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let body = resp
        .into_body()
        .read_to_string()
        .unwrap_or_else(|e| panic!("POST {url}: body: {e}"));
    (status, cookies, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn secrets(backend: &Backend) {
    let ctl = Controller::start_with(backend, &["--log", "debug"]);
    let net = unique("e2e-secrets");
    ctl.add_network(&net, true);

    // The bootstrap password: on standard output, once, on its own line.
    let stdout = ctl.stdout();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("meshtable bootstrap "))
        .unwrap_or_else(|| panic!("no bootstrap line in:\n{stdout}"));
    let password = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("password="))
        .unwrap_or_else(|| panic!("no password in {line:?}"))
        .to_owned();
    assert!(password.len() >= 20, "{line}");
    assert_eq!(stdout.matches(password.as_str()).count(), 1, "{stdout}");

    // A failed login with a password that must not be logged either.
    let wrong = format!("wrong-{}", unique("pw"));
    let (status, _, _) = post(
        &ctl,
        "/api/v1/login",
        &[],
        &format!(r#"{{"user":"admin","password":"{wrong}"}}"#),
    );
    assert_eq!(status, 401);

    // Log in, create an API token with the session.
    let (status, cookies, body) = post(
        &ctl,
        "/api/v1/login",
        &[],
        &format!(r#"{{"user":"admin","password":"{password}"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let session = cookies
        .iter()
        .find_map(|c| c.strip_prefix("meshtable_session="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"))
        .to_owned();
    let csrf = json(&body)["csrf"].as_str().unwrap().to_owned();
    let cookie = format!("meshtable_session={session}");
    let (status, _, body) = post(
        &ctl,
        "/api/v1/tokens",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        &format!(r#"{{"label":"script","network":"{net}","role":"viewer"}}"#),
    );
    assert_eq!(status, 201, "{body}");
    let api_token = json(&body)["token"].as_str().unwrap().to_owned();

    // Accounts and tokens from the command line.
    let out = ctl.cli(&["user", "add", "maria"]);
    let maria_password = out
        .split_whitespace()
        .skip_while(|w| *w != "password")
        .nth(1)
        .unwrap_or_else(|| panic!("no password in {out:?}"))
        .to_owned();
    let chosen = format!("chosen-{}", unique("pw"));
    ctl.cli_with_stdin(
        &["user", "add", "jonas", "--password-stdin"],
        Some(&format!("{chosen}\n")),
    );
    ctl.cli(&["user", "grant", "maria", &net, "operator"]);
    let cli_token = ctl
        .cli(&["token", "create", "--user", "maria", "--network", &net])
        .trim()
        .to_owned();
    assert!(cli_token.starts_with("mt_"), "{cli_token}");

    // Each credential works.
    for (who, token) in [("api token", &api_token), ("cli token", &cli_token)] {
        let (status, body) = ctl
            .try_get_as(
                &format!("/api/v1/networks/{net}/summary"),
                Some(&format!("Bearer {token}")),
            )
            .unwrap();
        assert_eq!(status, 200, "{who}: {body}");
    }
    for (user, pw) in [("maria", &maria_password), ("jonas", &chosen)] {
        let (status, _, body) = post(
            &ctl,
            "/api/v1/login",
            &[],
            &format!(r#"{{"user":"{user}","password":"{pw}"}}"#),
        );
        assert_eq!(status, 200, "{user}: {body}");
    }
    let (status, _) = ctl.try_get_as("/api/v1/networks", None).unwrap();
    assert_eq!(status, 401);

    // Revoke one token from the command line; it stops working.
    ctl.cli(&["token", "revoke", &cli_token[..11]]);
    let (status, _) = ctl
        .try_get_as(
            &format!("/api/v1/networks/{net}/summary"),
            Some(&format!("Bearer {cli_token}")),
        )
        .unwrap();
    assert_eq!(status, 401);

    // Every log: the controller's standard error and the commands' standard error.
    let mut logs = vec![("controller stderr", ctl.stderr())];
    let cli_log = ctl.data_dir().join("cli.stderr.log");
    logs.push((
        "commands' stderr",
        std::fs::read_to_string(&cli_log).unwrap_or_default(),
    ));
    assert!(
        logs[0].1.contains("audit") && logs[0].1.contains("login"),
        "the log records logins (by name): {}",
        logs[0].1
    );
    let secrets = [
        ("bootstrap password", password.as_str()),
        ("failed password", wrong.as_str()),
        ("generated password", maria_password.as_str()),
        ("chosen password", chosen.as_str()),
        ("api token", api_token.as_str()),
        ("cli token", cli_token.as_str()),
        ("session cookie", session.as_str()),
        ("csrf token", csrf.as_str()),
    ];
    for (log_name, text) in &logs {
        for (what, secret) in secrets {
            assert!(
                !text.contains(secret),
                "the {what} is in the {log_name}:\n{text}"
            );
        }
    }
    // Standard output has the bootstrap password once and no token.
    let stdout = ctl.stdout();
    for (what, secret) in &secrets[1..] {
        assert!(!stdout.contains(secret), "the {what} is on standard output");
    }
    println!(
        "secrets: {} secrets searched in {} logs ({} bytes)",
        secrets.len(),
        logs.len(),
        logs.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
}
