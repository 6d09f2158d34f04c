//! Proves the fault fixtures (tests/support/cut_proxy.rs and
//! tests/support/faults.rs) with ferry's own `FtpsSession` as the client:
//! each cut and each storage fault does what its docs promise, so engine
//! tests can rely on them.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ferry::config::{Secret, Server, TlsMode};
use ferry::transport::{ErrorKind, FtpsSession, Remote, TransportError};
use support::cut_proxy::{CutPlan, CutProxy};
use support::faults::{Faults, Rule};
use support::ftps_server::{self, ServerOptions, TestServer};

const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(5);

fn config(srv: &TestServer, port: u16) -> Server {
    Server {
        tls: TlsMode::Explicit,
        user: srv.user.clone(),
        password: Some(Secret::new(srv.password.clone())),
        ca_file: Some(srv.ca_file().to_path_buf()),
        timeout: Duration::from_secs(10),
        max_connections: 2,
        ..Server::new("selftest", "127.0.0.1", port)
    }
}

/// A session straight to the server.
async fn direct(srv: &TestServer) -> FtpsSession {
    FtpsSession::connect(Arc::new(config(srv, srv.port())))
        .await
        .expect("connect to the server")
}

/// A session through the proxy.
async fn via(srv: &TestServer, proxy: &CutProxy) -> FtpsSession {
    FtpsSession::connect(Arc::new(config(srv, proxy.port())))
        .await
        .expect("connect through the proxy")
}

async fn with_faults(faults: Faults) -> TestServer {
    ftps_server::start(ServerOptions {
        faults,
        ..ServerOptions::default()
    })
    .await
}

fn content(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn assert_lost_connection(e: &TransportError) {
    assert!(
        matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout),
        "expected a lost connection, got {:?}: {e}",
        e.kind()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_cut_mid_stream_leaves_a_partial_file_and_a_fresh_session_completes_it() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let cut_at = 256 * 1024;
    let proxy = CutProxy::start(&srv, CutPlan::upload_after(cut_at).once()).await;
    let data = content(16 * MIB);

    let mut s = via(&srv, &proxy).await;
    let e = s.upload("/big.bin", 0, &mut &data[..]).await.unwrap_err();
    assert_lost_connection(&e);
    assert_eq!(proxy.cuts(), 1);
    // The server saw the cut too: its STOR failed and the partial file stays.
    srv.wait_for_storage(|s| s.stor_failed == 1, WAIT).await;
    let partial = std::fs::read(srv.root().join("big.bin")).unwrap();
    assert!(
        !partial.is_empty() && (partial.len() as u64) < cut_at,
        "partial file of {} bytes",
        partial.len()
    );
    assert_eq!(partial[..], data[..partial.len()], "a prefix of the upload");

    // The plan was `once`: a fresh session through the same proxy succeeds.
    let mut s = via(&srv, &proxy).await;
    assert_eq!(
        s.upload("/big.bin", 0, &mut &data[..]).await.unwrap(),
        data.len() as u64
    );
    s.close().await;
    assert!(std::fs::read(srv.root().join("big.bin")).unwrap() == data);
    assert_eq!(proxy.cuts(), 1);
    assert_eq!(srv.storage_stats().stor_ok, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn download_cut_mid_stream_gives_a_connection_error_and_the_server_sees_it() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let data = content(16 * MIB);
    std::fs::write(srv.root().join("big.bin"), &data).unwrap();
    let cut_at = 256 * 1024;
    let proxy = CutProxy::start(&srv, CutPlan::download_after(cut_at).once()).await;

    let mut s = via(&srv, &proxy).await;
    let mut got = Vec::new();
    let e = s.download("/big.bin", 0, &mut got).await.unwrap_err();
    assert_lost_connection(&e);
    assert!((got.len() as u64) < cut_at, "got {} bytes", got.len());
    assert_eq!(got[..], data[..got.len()]);
    assert_eq!(proxy.cuts(), 1);
    srv.wait_for_storage(|s| s.retr_failed == 1, WAIT).await;

    let mut s = via(&srv, &proxy).await;
    let mut got = Vec::new();
    assert_eq!(
        s.download("/big.bin", 0, &mut got).await.unwrap(),
        data.len() as u64
    );
    s.close().await;
    assert!(got == data);
    assert_eq!(proxy.cuts(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_that_cuts_every_time_cuts_every_retry_and_with_control_kills_the_session() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let proxy = CutProxy::start(&srv, CutPlan::upload_after(64 * 1024).with_control()).await;
    // Small enough that a data-only cut could race the client (see the
    // proxy docs); with the control connection cut too, it cannot.
    let data = content(512 * 1024);
    for attempt in 1..=3 {
        let mut s = via(&srv, &proxy).await;
        let e = s.upload("/f.bin", 0, &mut &data[..]).await.unwrap_err();
        assert_lost_connection(&e);
        assert_eq!(proxy.cuts(), attempt);
    }
    srv.wait_for_storage(|s| s.stor_failed == 3, WAIT).await;
    let st = proxy.stats();
    assert_eq!((st.control_connections, st.data_connections), (3, 3));

    proxy.set_plan(CutPlan::none());
    let mut s = via(&srv, &proxy).await;
    s.upload("/f.bin", 0, &mut &data[..]).await.unwrap();
    s.close().await;
    assert!(std::fs::read(srv.root().join("f.bin")).unwrap() == data);
    assert_eq!(proxy.cuts(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_reply_lost_stores_the_whole_file_but_the_client_sees_a_connection_error() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let proxy = CutProxy::start(&srv, CutPlan::upload_reply_lost(64 * 1024).once()).await;
    let data = content(MIB);

    let mut s = via(&srv, &proxy).await;
    s.mkdir("/inbound").await.unwrap();
    // A listing goes through the proxy without arming the plan.
    assert!(s.list("/inbound").await.unwrap().is_empty());
    let e = s
        .upload("/inbound/a.837.part", 0, &mut &data[..])
        .await
        .unwrap_err();
    assert_lost_connection(&e);
    assert_eq!(proxy.cuts(), 1);
    srv.wait_for_storage(|s| s.stor_ok == 1, WAIT).await;
    assert!(std::fs::read(srv.root().join("inbound/a.837.part")).unwrap() == data);

    let mut s = via(&srv, &proxy).await;
    assert_eq!(
        s.size("/inbound/a.837.part").await.unwrap(),
        Some(data.len() as u64)
    );
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn download_reply_lost_delivers_every_byte_but_no_confirmation() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let data = content(MIB);
    std::fs::write(srv.root().join("r.835"), &data).unwrap();
    let proxy = CutProxy::start(&srv, CutPlan::download_reply_lost(64 * 1024).once()).await;

    let mut s = via(&srv, &proxy).await;
    let mut got = Vec::new();
    let e = s.download("/r.835", 0, &mut got).await.unwrap_err();
    assert_lost_connection(&e);
    assert!(got == data, "all {} bytes arrived", data.len());
    assert_eq!(proxy.cuts(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn control_cut_fails_the_next_command_with_a_connection_error() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let proxy = CutProxy::start(&srv, CutPlan::none()).await;
    let mut s = via(&srv, &proxy).await;
    let st = proxy.stats();
    assert_eq!(st.control_connections, 1);
    // Control bytes so far, both ways: the next byte in either direction cuts.
    let so_far = st.bytes_up + st.bytes_down - st.data_bytes_up - st.data_bytes_down;
    proxy.set_plan(CutPlan::control_after(so_far).once());
    let e = s.size("/nothing").await.unwrap_err();
    assert_lost_connection(&e);
    assert_eq!(proxy.cuts(), 1);
    // And a new session is fine.
    let mut s = via(&srv, &proxy).await;
    assert_eq!(s.size("/nothing").await.unwrap(), None);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_that_bypass_the_proxy_are_never_cut() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let proxy = CutProxy::start(&srv, CutPlan::upload_after(0)).await;
    let data = content(256 * 1024);
    let mut s = direct(&srv).await;
    s.upload("/d.bin", 0, &mut &data[..]).await.unwrap();
    s.close().await;
    assert_eq!(proxy.stats(), Default::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_uploads_store_the_same_size_with_the_first_byte_flipped() {
    let srv = with_faults(Faults {
        corrupt_uploads: Rule::always(),
        ..Faults::default()
    })
    .await;
    let data = content(100_000);
    let mut s = direct(&srv).await;
    assert_eq!(
        s.upload("/c.837", 0, &mut &data[..]).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(s.size("/c.837").await.unwrap(), Some(data.len() as u64));
    s.close().await;
    let disk = std::fs::read(srv.root().join("c.837")).unwrap();
    assert_eq!(disk.len(), data.len());
    assert_eq!(disk[0], data[0] ^ 0xFF);
    assert_eq!(disk[1..], data[1..]);
    assert_eq!(srv.fault_counts().corrupt_uploads, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_and_truncated_downloads_arrive_wrong_while_the_disk_stays_intact() {
    let srv = with_faults(Faults {
        corrupt_downloads: Rule::matching(["*.corrupt"]).once(),
        truncate_downloads: Rule::matching(["*.short"]),
        ..Faults::default()
    })
    .await;
    let data = content(100_000);
    std::fs::write(srv.root().join("a.corrupt"), &data).unwrap();
    std::fs::write(srv.root().join("a.short"), &data).unwrap();
    let mut s = direct(&srv).await;

    let mut got = Vec::new();
    s.download("/a.corrupt", 0, &mut got).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(got[0], data[0] ^ 0xFF);
    assert_eq!(got[1..], data[1..]);
    // `once`: the second download is right.
    let mut got = Vec::new();
    s.download("/a.corrupt", 0, &mut got).await.unwrap();
    assert!(got == data);

    let mut got = Vec::new();
    assert_eq!(
        s.download("/a.short", 0, &mut got).await.unwrap(),
        data.len() as u64 - 1
    );
    assert_eq!(got[..], data[..data.len() - 1]);
    assert_eq!(s.size("/a.short").await.unwrap(), Some(data.len() as u64));
    s.close().await;
    assert!(std::fs::read(srv.root().join("a.corrupt")).unwrap() == data);
    let counts = srv.fault_counts();
    assert_eq!(
        (counts.corrupt_downloads, counts.truncate_downloads),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_uploads_store_one_byte_less_and_still_answer_226() {
    let srv = with_faults(Faults {
        truncate_uploads: Rule::always(),
        ..Faults::default()
    })
    .await;
    let mut s = direct(&srv).await;
    for len in [1usize, 2, 100_000, 300_000] {
        let data = content(len);
        let path = format!("/t{len}.bin");
        assert_eq!(
            s.upload(&path, 0, &mut &data[..]).await.unwrap(),
            len as u64
        );
        assert_eq!(s.size(&path).await.unwrap(), Some(len as u64 - 1));
        let disk = std::fs::read(srv.root().join(&path[1..])).unwrap();
        assert_eq!(disk[..], data[..len - 1]);
    }
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_write_is_permission_denied_and_creates_nothing() {
    let srv = with_faults(Faults {
        deny_writes_to: Rule::matching(["/inbound/*.part"]).once(),
        ..Faults::default()
    })
    .await;
    let data = content(300_000);
    let mut s = direct(&srv).await;
    s.mkdir("/inbound").await.unwrap();
    let e = s
        .upload("/inbound/a.837.part", 0, &mut &data[..])
        .await
        .unwrap_err();
    // 550 is "file unavailable" by its code (RFC 959), whatever the text says.
    assert_eq!(e.kind(), ErrorKind::FileUnavailable, "{e}");
    assert!(e.to_string().contains("Permission denied"), "{e}");
    assert!(!srv.root().join("inbound/a.837.part").exists());
    // The session is still usable, and the `once` rule is spent.
    s.upload("/inbound/a.837.part", 0, &mut &data[..])
        .await
        .unwrap();
    s.close().await;
    assert_eq!(srv.fault_counts().deny_writes_to, 1);
    let st = srv.storage_stats();
    assert_eq!((st.stor_failed, st.stor_ok), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_rename_is_server_error_553_and_denied_delete_is_permission_denied() {
    let srv = with_faults(Faults {
        refuse_rename: Rule::matching(["*.837"]),
        deny_deletes: Rule::always(),
        ..Faults::default()
    })
    .await;
    let mut s = direct(&srv).await;
    s.upload("/a.837.part", 0, &mut &b"ISA*00~"[..])
        .await
        .unwrap();
    let e = s.rename("/a.837.part", "/a.837").await.unwrap_err();
    // The reply is `553 File name not allowed`: PermissionDenied by its code.
    assert!(
        matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::Server),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("553 File name not allowed"), "{msg}");
    let e = s.delete("/a.837.part").await.unwrap_err();
    // 550 is "file unavailable" by its code (RFC 959), whatever the text says.
    assert_eq!(e.kind(), ErrorKind::FileUnavailable, "{e}");
    assert!(e.to_string().contains("Permission denied"), "{e}");
    s.close().await;
    assert!(srv.root().join("a.837.part").exists());
    assert!(!srv.root().join("a.837").exists());
    let c = srv.fault_counts();
    assert_eq!((c.refuse_rename, c.deny_deletes), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_vanishes_after_listing_is_not_found_on_download() {
    let srv = with_faults(Faults {
        vanish_after_list: Rule::matching(["/outbound/*.835"]),
        ..Faults::default()
    })
    .await;
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    std::fs::write(srv.root().join("outbound/r.835"), b"ST*835~").unwrap();
    std::fs::write(srv.root().join("outbound/keep.txt"), b"stays").unwrap();
    let mut s = direct(&srv).await;
    let mut names: Vec<String> = s
        .list("/outbound")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["keep.txt", "r.835"]);
    assert!(!srv.root().join("outbound/r.835").exists());
    assert!(srv.root().join("outbound/keep.txt").exists());

    let mut got = Vec::new();
    let e = s
        .download("/outbound/r.835", 0, &mut got)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FileUnavailable, "{e}");
    assert!(e.to_string().contains("File not found"), "{e}");
    assert!(got.is_empty());
    // The session survives a 550.
    assert_eq!(s.size("/outbound/r.835").await.unwrap(), None);
    s.close().await;
    assert_eq!(srv.fault_counts().vanish_after_list, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_can_be_changed_while_the_server_runs() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let mut s = direct(&srv).await;
    s.upload("/x.837", 0, &mut &b"one"[..]).await.unwrap();
    srv.set_faults(Faults {
        deny_deletes: Rule::always(),
        ..Faults::default()
    });
    assert_eq!(
        s.delete("/x.837").await.unwrap_err().kind(),
        ErrorKind::FileUnavailable
    );
    srv.set_faults(Faults::default());
    s.delete("/x.837").await.unwrap();
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_only_cut_of_a_small_upload_fails_the_upload_one_way_or_another() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    let proxy = CutProxy::start(&srv, CutPlan::upload_after(32 * 1024)).await;
    let data = content(200 * 1024);
    let mut s = via(&srv, &proxy).await;
    let e = s.upload("/s.bin", 0, &mut &data[..]).await.unwrap_err();
    // Either the client saw the reset ("Broken pipe"), or it had handed the
    // whole file to its kernel already and reads the server's verdict on the
    // cut STOR: libunftp answers `451 Local error` (the TLS reader's
    // unexpected end maps to a local error), or 426 for a plain reset.
    assert!(
        matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout)
            || matches!(
                e,
                TransportError::Server {
                    code: 426 | 451,
                    ..
                }
            ),
        "{e:?}"
    );
    srv.wait_for_storage(|s| s.stor_failed == 1, WAIT).await;
}
