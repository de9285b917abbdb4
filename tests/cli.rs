//! The command line as a user meets it, without a broker.

use std::process::Command;

fn nnmon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(args)
        .env_remove("AMQP_URL")
        .env("NO_COLOR", "1")
        .output()
        .expect("run nnmon")
}

/// Runs `nnmon <args>` and asserts that it succeeded.
fn nnmon_succeeds(args: &[&std::ffi::OsStr]) {
    let output = Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(args)
        .output()
        .expect("run nnmon");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn bad_flags_exit_with_code_2_and_say_why() {
    for (args, says) in [
        (&["features", "--delay=-1"][..], "--delay"),
        (&["features", "--count", "lots"], "--count"),
        (
            &["model", "--amqp-url", "http://user:hunter2@host/"],
            "--amqp-url",
        ),
        (&["plot", "--interval", "soon"], "--interval"),
        (&["serve"], "serve"),
    ] {
        let output = nnmon(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    }
}

#[test]
fn env_vars_are_flag_twins() {
    let output = Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["features"])
        .env("NNMON_DELAY", "-5")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn metric_refuses_a_log_with_another_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("metric_log.csv");
    std::fs::write(&log, "id,y_true,y_pred,absolute_error\n1,2,3,1\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["metric", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2f"])
        .env("NNMON_LOG_DIR", dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("metric_log.csv")
            && stderr.contains("id,y_true,y_pred,absolute_error,latency_us")
            && stderr.contains("`id,y_true,y_pred,absolute_error`"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).expect("read"),
        "id,y_true,y_pred,absolute_error\n1,2,3,1\n",
        "the file must be left alone"
    );
}

#[test]
fn train_writes_the_shipped_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output_path = dir.path().join("ols.json");
    nnmon_succeeds(&[
        "train".as_ref(),
        "--output".as_ref(),
        output_path.as_os_str(),
    ]);
    let written = nnmon_model::LinearModel::load(&output_path).expect("valid artifact");
    let shipped = nnmon_model::LinearModel::default_ols().expect("shipped artifact");
    // Bit-identical results are not promised across optimisation levels; 1e-9 relative is.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    assert!(
        close(written.intercept, shipped.intercept),
        "models/ols.json is out of date: run `nnmon train`"
    );
    for (a, b) in written.coefficients.iter().zip(shipped.coefficients) {
        assert!(close(*a, b), "models/ols.json is out of date: {a} vs {b}");
    }
}

#[test]
fn plot_once_draws_a_chart_even_before_any_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    nnmon_succeeds(&[
        "plot".as_ref(),
        "--once".as_ref(),
        "--log-dir".as_ref(),
        dir.path().as_os_str(),
    ]);
    let png = std::fs::read(dir.path().join("error_distribution.png")).expect("chart");
    assert!(png.starts_with(b"\x89PNG"));
}

/// Starts `nnmon metric` against a port where no broker listens, stderr to `metric.stderr`.
fn spawn_metric_without_broker(log_dir: &std::path::Path) -> std::process::Child {
    let stderr = std::fs::File::create(log_dir.join("metric.stderr")).expect("stderr file");
    Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args([
            "metric",
            "--amqp-url",
            "amqp://guest:secret@127.0.0.1:1/%2f",
        ])
        .env("NNMON_LOG_DIR", log_dir)
        .env("NO_COLOR", "1")
        .stderr(stderr)
        .spawn()
        .expect("spawn")
}

/// Waits until `metric.stderr` in `log_dir` shows `needle`; returns the whole text.
fn wait_for_stderr(
    child: &mut std::process::Child,
    log_dir: &std::path::Path,
    needle: &str,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log_dir.join("metric.stderr")).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("never logged `{needle}`:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_missing_broker_is_retried_and_said_so_without_leaking_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_metric_without_broker(dir.path());
    let text = wait_for_stderr(&mut child, dir.path(), "broker not reachable yet; retrying");
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "metric must keep retrying:\n{text}"
    );
    assert!(!text.contains("secret"), "password leaked:\n{text}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(
        child.wait().expect("exit").code(),
        Some(0),
        "SIGTERM while connecting exits 0"
    );
}

#[test]
fn a_torn_last_line_is_cut_off_on_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("metric_log.csv");
    let header = "id,y_true,y_pred,absolute_error,latency_us\n";
    std::fs::write(&log, format!("{header}a,1,2,1,\nb,3,4")).expect("write");
    let mut child = spawn_metric_without_broker(dir.path());
    wait_for_stderr(&mut child, dir.path(), "cut off a torn last line");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        std::fs::read_to_string(&log).expect("read"),
        format!("{header}a,1,2,1,\n")
    );
}
