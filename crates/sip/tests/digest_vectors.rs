//! Digest authentication test vectors: RFC 2617 §3.5 and RFC 7616 §3.9.1.
#![allow(clippy::unwrap_used)]

use icebreaker_sip::digest::{answer, ha1, verify, verify_ha1, Algorithm, Challenge, Credentials};

/// RFC 2617 §3.5: "Mufasa" / "Circle Of Life", GET /dir/index.html, MD5, qop=auth.
#[test]
fn rfc2617_mufasa_md5() {
    let ch = Challenge::parse(
        r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
    )
    .unwrap();
    assert_eq!(ch.algorithm, Algorithm::Md5);
    let cr = answer(
        &ch,
        "Mufasa",
        "Circle Of Life",
        "GET",
        "/dir/index.html",
        "0a4f113b",
        1,
    )
    .unwrap();
    assert_eq!(cr.response, "6629fae49393a05397450978507c4ef1");
    assert_eq!(
        cr.opaque.as_deref(),
        Some("5ccc069c403ebaf9f0171e9517f40e41")
    );
    assert!(cr.to_string().contains("nc=00000001"));

    // The Authorization header of the RFC, checked server-side.
    let header = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#
        .replace('\n', "")
        .replace("  ", "");
    let got = Credentials::parse(&header).unwrap();
    assert_eq!(got, cr);
    assert_eq!(verify(&got, "GET", "Circle Of Life"), Ok(true));
    assert_eq!(verify(&got, "GET", "Circle of Life"), Ok(false));
    let h1 = ha1(
        &Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    )
    .unwrap();
    assert_eq!(verify_ha1(&got, "GET", &h1), Ok(true));
}

/// RFC 7616 §3.9.1: the same exchange with SHA-256 (and its MD5 counterpart).
#[test]
fn rfc7616_mufasa_sha256() {
    let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    let opaque = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    let challenge = |alg: &str| {
        Challenge::parse(&format!(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, nonce="{nonce}", opaque="{opaque}""#
        ))
        .unwrap()
    };
    let ch = challenge("SHA-256");
    assert_eq!(ch.algorithm, Algorithm::Sha256);
    let cr = answer(
        &ch,
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        cnonce,
        1,
    )
    .unwrap();
    assert_eq!(
        cr.response,
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    let back = Credentials::parse(&cr.to_string()).unwrap();
    assert_eq!(back.algorithm, Algorithm::Sha256);
    assert_eq!(verify(&back, "GET", "Circle of Life"), Ok(true));

    let ch = challenge("MD5");
    let cr = answer(
        &ch,
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        cnonce,
        1,
    )
    .unwrap();
    assert_eq!(cr.response, "8ca523f5e9506fed4657c9700eebdbec");
}

/// A SIP REGISTER challenge and answer (RFC 3261 §22.4: the digest-uri is the Request-URI).
#[test]
fn sip_register_round_trip() {
    let ch = Challenge::new("icebreaker.example", "6a3f0c2b91d4", Algorithm::Sha256);
    let header = ch.to_string();
    let ch = Challenge::parse(&header).unwrap();
    let cr = answer(
        &ch,
        "alice",
        "wonderland",
        "REGISTER",
        "sip:icebreaker.example",
        "x7Rq",
        3,
    )
    .unwrap();
    let got = Credentials::parse(&cr.to_string()).unwrap();
    assert_eq!(got.nc, Some(3));
    assert_eq!(got.uri, "sip:icebreaker.example");
    assert_eq!(verify(&got, "REGISTER", "wonderland"), Ok(true));
    assert_eq!(verify(&got, "INVITE", "wonderland"), Ok(false));
    for bad in [
        "Digest username=\"a\"",
        "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"zz\"",
        "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"00\", qop=auth",
        "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"00\", qop=auth, cnonce=\"c\", nc=1",
    ] {
        assert!(Credentials::parse(bad).is_err(), "{bad}");
    }
}
