//! Hardening against partners' servers, on the pyftpdlib quirk server: a
//! PASV reply pointing at another host, a refused PROT P.

mod support;

use ferry::config::Server;
use ferry::transport::{self};
use std::sync::Arc;
use support::real_servers::{RealServer, available};

fn with(srv: &RealServer, f: impl FnOnce(&mut Server)) -> Arc<Server> {
    let mut s = (*srv.server("quirky", None)).clone();
    f(&mut s);
    Arc::new(s)
}

/// Hardening 9: a PASV reply naming 127.0.0.2 while the control connection
/// is to 127.0.0.1 is not followed (the data connection goes to the control
/// peer), unless the operator says `trust_pasv_address: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasv_reply_pointing_elsewhere_is_not_followed_unless_trusted() {
    if !available() {
        return;
    }
    let srv = RealServer::quirky("pasv-elsewhere");
    let mut session = transport::connect(with(&srv, |_| {})).await.unwrap();
    session
        .upload("/p.837", 0, &mut &b"ISA*00*p~"[..])
        .await
        .expect("data went to the control connection's address");
    let listed = session.list("/").await.unwrap();
    assert!(listed.iter().any(|e| e.name == "p.837"), "{listed:?}");
    session.close().await;
    assert_eq!(
        std::fs::read(srv.root().join("p.837")).unwrap(),
        b"ISA*00*p~"
    );

    let mut trusting = transport::connect(with(&srv, |s| s.trust_pasv_address = true))
        .await
        .unwrap();
    let err = trusting
        .upload("/q.837", 0, &mut &b"ISA*00*q~"[..])
        .await
        .expect_err("127.0.0.2 has no data listener");
    assert!(
        err.to_string().contains("127.0.0.2") || err.is_session_fatal(),
        "{err}"
    );
}

/// Hardening 8: a refused `PROT P` names the step that failed and its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_prot_p_names_the_step_and_its_real_code() {
    if !available() {
        return;
    }
    let srv = RealServer::quirky("prot-534");
    let err = match transport::connect(with(&srv, |_| {})).await {
        Ok(_) => panic!("PROT P was refused, the session cannot be used"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("PBSZ 0, PROT P"), "{err}");
    assert!(err.contains("534"), "{err}");
    assert!(!err.contains("AUTH TLS"), "{err}");
}
