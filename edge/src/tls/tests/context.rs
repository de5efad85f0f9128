//! The context: certificate loading, SNI choice, reload, the self-signed fallback.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;

use crate::clock::wall;

use super::*;

/// Handshakes as `sni` (or with SNI off, verifying as `verify_as`) and returns the certificate
/// the server presented.
fn presented(
    ctx: &TlsContext,
    roots: &[&CertificateDer<'static>],
    sni: Option<&str>,
    verify_as: &str,
) -> CertificateDer<'static> {
    let mut config = (*client_config(roots)).clone();
    config.enable_sni = sni.is_some();
    let config = Arc::new(config);
    let mut p = Pair::new(
        client(&config, sni.unwrap_or(verify_as)),
        ctx.pump().unwrap(),
        Split::Whole,
    );
    p.handshake().unwrap();
    // rustls lower-cases the SNI it reports.
    let want = sni.map(str::to_ascii_lowercase);
    assert_eq!(p.server.info().unwrap().sni, want);
    p.client.peer_certificates().unwrap()[0].clone()
}

#[test]
fn sni_picks_the_matching_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let default = gen_cert(&["default.test", "other.test"]);
    let a = gen_cert(&["a.test"]);
    let b = gen_cert(&["*.b.test"]);
    let mut cfg = files_config(write_cert(dir.path(), "default", "tls", &default));
    cfg.certificates = vec![
        write_cert(dir.path(), "a", "tls.certificate[0]", &a),
        write_cert(dir.path(), "b", "tls.certificate[1]", &b),
    ];
    let ctx = TlsContext::new(&cfg, wall()).unwrap();
    let roots = [&default.der, &a.der, &b.der];
    assert_eq!(presented(&ctx, &roots, Some("a.test"), ""), a.der);
    assert_eq!(presented(&ctx, &roots, Some("A.Test"), ""), a.der);
    assert_eq!(presented(&ctx, &roots, Some("mx.b.test"), ""), b.der);
    assert_eq!(presented(&ctx, &roots, Some("other.test"), ""), default.der);
    assert_eq!(presented(&ctx, &roots, None, "default.test"), default.der);
}

#[test]
fn reload_swaps_for_new_handshakes_and_a_failed_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let old = gen_cert(&["mx.example.test"]);
    let new = gen_cert(&["mx.example.test"]);
    let ctx = TlsContext::new(
        &files_config(write_cert(dir.path(), "old", "tls", &old)),
        wall(),
    )
    .unwrap();
    let roots = [&old.der, &new.der];
    let name = Some("mx.example.test");
    assert_eq!(presented(&ctx, &roots, name, ""), old.der);

    // A session whose ClientHello arrived before the reload keeps its certificate.
    let config = client_config(&roots);
    let mut early = Pair::new(
        client(&config, "mx.example.test"),
        ctx.pump().unwrap(),
        Split::Whole,
    );
    early.client_to_server().unwrap();

    ctx.reload(
        &files_config(write_cert(dir.path(), "new", "tls", &new)),
        wall(),
    )
    .unwrap();
    assert_eq!(presented(&ctx, &roots, name, ""), new.der);
    early.handshake().unwrap();
    assert_eq!(early.client.peer_certificates().unwrap()[0], old.der);

    // A reload that fails anywhere changes nothing.
    let mut broken = files_config(write_cert(
        dir.path(),
        "newer",
        "tls",
        &gen_cert(&["x.test"]),
    ));
    broken.certificates = vec![CertEntry::new(
        "tls.certificate[0]",
        dir.path().join("absent.crt"),
        dir.path().join("absent.key"),
    )];
    let err = ctx.reload(&broken, wall()).unwrap_err();
    assert!(
        err.to_string().starts_with("tls.certificate[0].cert: "),
        "{err}"
    );
    assert_eq!(presented(&ctx, &roots, name, ""), new.der);
}

#[test]
fn errors_name_the_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let x = gen_cert(&["x.test"]);
    let y = gen_cert(&["y.test"]);
    let good = write_cert(dir.path(), "x", "tls", &x);
    let y_entry = write_cert(dir.path(), "y", "tls", &y);

    let mismatched = CertEntry::new("tls.certificate[2]", &good.cert, &y_entry.key);
    let mut cfg = files_config(good.clone());
    cfg.certificates = vec![mismatched];
    let err = TlsContext::new(&cfg, wall()).unwrap_err();
    let TlsError::Cert { key, problem, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(key, "tls.certificate[2].key");
    assert!(problem.contains("does not match"), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not pem at all\n").unwrap();
    let cases = [
        (
            CertEntry::new("tls", &garbage, &good.key),
            "tls.cert",
            "no CERTIFICATE",
        ),
        (
            CertEntry::new("tls", &good.cert, &garbage),
            "tls.key",
            "no PRIVATE KEY",
        ),
        (
            CertEntry::new("tls", &good.key, &good.key),
            "tls.cert",
            "no CERTIFICATE",
        ),
        (
            CertEntry::new("tls", &good.cert, &good.cert),
            "tls.key",
            "no PRIVATE KEY",
        ),
        (
            CertEntry::new("tls", dir.path().join("nope"), &good.key),
            "tls.cert",
            "cannot read",
        ),
    ];
    for (entry, want_key, want_problem) in cases {
        let err = TlsContext::new(&files_config(entry), wall()).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with(&format!("{want_key}: ")), "{shown}");
        assert!(shown.contains(want_problem), "{shown}");
    }
}

#[test]
fn self_signed_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("var/tls");
    let (cert, key) = ensure_self_signed(&tls_dir, "mx.example.test", wall()).unwrap();
    assert_eq!(cert, tls_dir.join("cert.pem"));
    assert_eq!(key, tls_dir.join("key.pem"));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    ensure_self_signed(&tls_dir, "mx.example.test", wall()).unwrap();
    let second = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    assert_eq!(first, second, "existing files are reused");
    assert!(!tls_dir.join("key.pem.tmp").exists());

    // The context uses them, valid for the hostname, localhost and 127.0.0.1.
    let ctx =
        TlsContext::new(&TlsConfig::self_signed(&tls_dir, "mx.example.test"), wall()).unwrap();
    let der = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read(&cert).unwrap(), first.0, "not regenerated");
    for name in ["mx.example.test", "localhost"] {
        assert_eq!(presented(&ctx, &[&der], Some(name), ""), der);
    }
    assert_eq!(presented(&ctx, &[&der], None, "127.0.0.1"), der);
}

#[test]
fn self_signed_regenerates_a_lone_cert() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ensure_self_signed(dir.path(), "mx.example.test", wall()).unwrap();
    std::fs::remove_file(&key).unwrap();
    let old = std::fs::read(&cert).unwrap();
    ensure_self_signed(dir.path(), "mx.example.test", wall()).unwrap();
    assert!(key.exists());
    assert_ne!(std::fs::read(&cert).unwrap(), old);
}

#[test]
fn self_signed_dir_that_cannot_be_created_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = TlsContext::new(
        &TlsConfig::self_signed(file.join("tls"), "mx.example.test"),
        wall(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("tls.self_signed_dir: "),
        "{err}"
    );
}

#[test]
fn session_cache_zero_still_builds() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TlsConfig::self_signed(dir.path(), "mx.example.test");
    cfg.session_cache = 0;
    let ctx = TlsContext::new(&cfg, wall()).unwrap();
    assert!(!ctx.server_config().session_storage.can_cache());
}

/// A fixed instant for the renewal tests: 2026-12-01T00:00:00Z.
const T: u64 = 1_796_083_200;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const DAY: u64 = 24 * 3600;

#[test]
fn self_signed_is_valid_for_90_days() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ensure_self_signed(dir.path(), "mx.example.test", at(T)).unwrap();
    let (from, to) = validity(&cert).unwrap();
    // An hour's grace for clients whose clock is behind, then 90 days.
    assert_eq!(from, T as i64 - 3600);
    assert_eq!(to - from, SELF_SIGNED_LIFETIME.as_secs() as i64);
    assert_eq!(SELF_SIGNED_LIFETIME, Duration::from_secs(90 * DAY));
}

#[test]
fn self_signed_is_renewed_when_30_days_are_left() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ensure_self_signed(dir.path(), "mx.example.test", at(T)).unwrap();
    let first = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    // 59 days on, more than 30 are left: kept.
    ensure_self_signed(dir.path(), "mx.example.test", at(T + 59 * DAY)).unwrap();
    assert_eq!(std::fs::read(&cert).unwrap(), first.0);
    // 61 days on, fewer than 30: a new certificate and a new key, valid from then.
    ensure_self_signed(dir.path(), "mx.example.test", at(T + 61 * DAY)).unwrap();
    assert_ne!(std::fs::read(&cert).unwrap(), first.0);
    assert_ne!(std::fs::read(&key).unwrap(), first.1);
    let (from, _) = validity(&cert).unwrap();
    assert_eq!(from, (T + 61 * DAY) as i64 - 3600);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The renewed pair loads and matches.
    TlsContext::new(
        &TlsConfig::self_signed(dir.path(), "mx.example.test"),
        at(T + 61 * DAY),
    )
    .unwrap();
}

#[test]
fn self_signed_is_renewed_when_not_yet_valid_or_too_long_lived() {
    // The clock went back past its start: renewed.
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ensure_self_signed(dir.path(), "mx.example.test", at(T)).unwrap();
    ensure_self_signed(dir.path(), "mx.example.test", at(T - 2 * DAY)).unwrap();
    assert_eq!(validity(&cert).unwrap().0, (T - 2 * DAY) as i64 - 3600);

    // One made with the old defaults (1975 to 4096) is replaced by a 90-day one.
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let old = rcgen::CertificateParams::new(vec!["mx.example.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join(SELF_SIGNED_CERT), old.pem()).unwrap();
    std::fs::write(dir.path().join(SELF_SIGNED_KEY), key.serialize_pem()).unwrap();
    let (cert, _) = ensure_self_signed(dir.path(), "mx.example.test", at(T)).unwrap();
    let (from, to) = validity(&cert).unwrap();
    assert_eq!(to - from, SELF_SIGNED_LIFETIME.as_secs() as i64);

    // Unreadable dates count as a reason too.
    std::fs::write(&cert, "not a certificate").unwrap();
    ensure_self_signed(dir.path(), "mx.example.test", at(T)).unwrap();
    assert!(validity(&cert).is_some());
}
