//! End-to-end tests of cluster security: mutual TLS on every cluster connection, certificates
//! from the cluster's own CA, roles in certificates, tokens that pin the CA.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use essaim_api::pb::RaftMessage;
use essaim_api::tls::{self, Credentials};
use essaim_api::transport::{self, ClientTls};
use essaim_tests::{row, wait_for, Cluster, Daemon};

const SETTLE: Duration = Duration::from_secs(20);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until a daemon's log says `text`.
fn wait_for_log(daemon: &Daemon, text: &str) -> Result<()> {
    wait_for(&format!("{} to log {text:?}", daemon.name), SETTLE, || {
        Ok(daemon.logs().contains(text).then_some(()))
    })
}

/// Copies a node's own credentials into a client bundle directory, as an attacker holding that
/// node's files could.
fn bundle_from_node(node: &Daemon, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let certs = node.certificates();
    std::fs::copy(certs.join("node.crt"), dir.join("client.crt"))?;
    std::fs::copy(certs.join("node.key"), dir.join("client.key"))?;
    std::fs::copy(certs.join("roots.crt"), dir.join("ca.crt"))?;
    Ok(())
}

fn issue_client_bundle(manager: &Daemon, dir: &Path) -> Result<()> {
    manager.ok(&[
        "swarm",
        "ca",
        "issue-client",
        "--out",
        dir.to_str().context("utf-8 path")?,
    ])?;
    Ok(())
}

#[test]
fn a_plaintext_client_gets_no_answer_and_is_logged() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let mut stream = std::net::TcpStream::connect(m1.addr())?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // What a plaintext gRPC client sends first: the HTTP/2 preface.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    // No HTTP/2 SETTINGS frame comes back: at most a TLS alert (content type 21).
    assert!(
        answer.is_empty() || answer[0] == 21,
        "plaintext got an answer: {answer:?}"
    );
    wait_for_log(m1, "plaintext or non-TLS client")?;
    Ok(())
}

#[test]
fn a_certificate_from_another_ca_is_refused() -> Result<()> {
    let ours = Cluster::start(1, 0)?;
    let theirs = Cluster::start(1, 0)?;
    let dir = tempfile::tempdir()?;
    let foreign = dir.path().join("foreign");
    issue_client_bundle(theirs.node("m1"), &foreign)?;
    let ours_bundle = dir.path().join("ours");
    issue_client_bundle(ours.node("m1"), &ours_bundle)?;
    // Trust our manager, but show a certificate of the other cluster.
    std::fs::copy(ours_bundle.join("ca.crt"), foreign.join("ca.crt"))?;
    let out = ours.node("m1").essaim_remote(&foreign, &["node", "ls"]);
    assert!(!out.status.success(), "a foreign certificate got in");
    assert!(
        stderr(&out).contains("not from this cluster's CA")
            && stderr(&out).contains("issue-client"),
        "{}",
        stderr(&out)
    );
    wait_for_log(ours.node("m1"), "certificate from another CA")?;

    // The other way round: a bundle of our cluster does not trust their manager.
    let out = theirs
        .node("m1")
        .essaim_remote(&ours_bundle, &["node", "ls"]);
    assert!(
        stderr(&out).contains("not signed by the CA this bundle trusts"),
        "{}",
        stderr(&out)
    );

    // The genuine bundle works from outside, as a remote operator's would.
    let out = ours.node("m1").essaim_remote(&ours_bundle, &["node", "ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("m1"));
    Ok(())
}

#[test]
fn a_worker_certificate_cannot_call_the_control_api_or_raft() -> Result<()> {
    let cluster = Cluster::start(1, 1)?;
    cluster.wait_for_nodes("m1", "w1 ready", SETTLE, |nodes| {
        row(nodes, "w1").is_some_and(|n| n["status"]["state"] == "ready")
    })?;
    let dir = tempfile::tempdir()?;
    bundle_from_node(cluster.node("w1"), dir.path())?;
    let out = cluster
        .node("m1")
        .essaim_remote(dir.path(), &["node", "ls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a worker certificate cannot make this call"),
        "{}",
        stderr(&out)
    );

    // Raft, with the worker's certificate: refused before the message is even read.
    let credentials = Credentials {
        cert_pem: std::fs::read_to_string(dir.path().join("client.crt"))?,
        key_pem: std::fs::read_to_string(dir.path().join("client.key"))?,
        roots_pem: std::fs::read_to_string(dir.path().join("ca.crt"))?,
    };
    let config = Arc::new(tls::client_config(&credentials)?);
    let addr = cluster.node("m1").addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(async {
        let channel = transport::cluster_channel(&addr, ClientTls::Fixed(config))?;
        let refused = transport::raft_client(channel)
            .vote(RaftMessage { body: vec![] })
            .await
            .expect_err("a worker spoke raft");
        anyhow::Ok(refused)
    })?;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    wait_for_log(cluster.node("m1"), "refused raft")?;
    Ok(())
}

#[test]
fn a_removed_node_is_refused_and_must_join_again() -> Result<()> {
    let mut cluster = Cluster::start(1, 1)?;
    let w1_id = cluster.node("w1").node_id()?;
    cluster.node_mut("w1").kill9();
    cluster.wait_for_nodes("m1", "w1 down", SETTLE, |nodes| {
        row(nodes, "w1").is_some_and(|n| n["status"]["state"] == "down")
    })?;
    cluster.node("m1").ok(&["node", "rm", "w1"])?;
    // It comes back with its old certificate: every call is refused.
    cluster.node_mut("w1").restart()?;
    wait_for_log(
        cluster.node("m1"),
        &format!("node {w1_id} was removed from the swarm"),
    )?;
    assert!(row(&cluster.node_list("m1")?, "w1").is_none());

    // Leaving and joining again with a token works, as a new node.
    let token = cluster
        .node("m1")
        .ok(&["swarm", "join-token", "-q", "worker"])?;
    let w1 = cluster.node("w1");
    w1.ok(&["swarm", "leave", "--force"])?;
    let manager = cluster.node("m1").addr();
    w1.ok(&[
        "swarm",
        "join",
        "--token",
        token.trim(),
        "--advertise-addr",
        &w1.addr(),
        &manager,
    ])?;
    let nodes = cluster.wait_for_nodes("m1", "w1 back, ready", SETTLE, |nodes| {
        row(nodes, "w1").is_some_and(|n| n["status"]["state"] == "ready")
    })?;
    assert_ne!(row(&nodes, "w1").expect("w1")["id"], w1_id.as_str());
    Ok(())
}

#[test]
fn a_joiner_detects_an_impostor_manager_by_the_token_fingerprint() -> Result<()> {
    let mut real = Cluster::start(1, 0)?;
    let impostor = Cluster::start(1, 0)?;
    let token = real
        .node("m1")
        .ok(&["swarm", "join-token", "-q", "worker"])?;
    let joiner = real.add("w1")?;
    let out = joiner.essaim(&[
        "swarm",
        "join",
        "--token",
        token.trim(),
        "--advertise-addr",
        &joiner.addr(),
        &impostor.node("m1").addr(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not belong to the cluster this token is for"),
        "{}",
        stderr(&out)
    );
    // Nothing was sent to the impostor: it saw no join, and the joiner is still free.
    assert!(!impostor.node("m1").logs().contains("node joined"));
    assert_eq!(joiner.json(&["info"])?["swarm"], "inactive");
    Ok(())
}

#[test]
fn certificates_renew_before_they_expire_and_nodes_stay_connected() -> Result<()> {
    let cluster = Cluster::start(1, 1)?;
    cluster
        .node("m1")
        .ok(&["swarm", "update", "--cert-expiry", "6s"])?;
    let expiry_of = |name: &str| -> Result<i64> {
        cluster.node(name).json(&["info"])?["cert_not_after"]
            .as_i64()
            .context("cert_not_after")
    };
    // The certificates issued at join last 90 days: half of 6 s has long passed, so both
    // renew at once, and then again every 3 s or so.
    for name in ["w1", "m1"] {
        let mut seen = vec![expiry_of(name)?];
        while seen.len() < 3 {
            let next = wait_for(&format!("{name}'s certificate to renew"), SETTLE, || {
                let now = expiry_of(name)?;
                Ok((now != *seen.last().expect("one")).then_some(now))
            })?;
            seen.push(next);
        }
    }
    let nodes = cluster.node_list("m1")?;
    assert!(
        nodes.iter().all(|n| n["status"]["state"] == "ready"),
        "{nodes:?}"
    );
    Ok(())
}

#[test]
fn keys_and_certificates_on_disk_are_owner_only_and_never_logged() -> Result<()> {
    let cluster = Cluster::start(1, 1)?;
    for node in &cluster.nodes {
        for file in ["node.key", "node.crt", "roots.crt"] {
            let mode = std::fs::metadata(node.certificates().join(file))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{} {file}: {mode:o}", node.name);
        }
        assert!(
            !node.logs().contains("PRIVATE KEY"),
            "{} logged a key",
            node.name
        );
    }
    Ok(())
}

#[test]
fn rotating_the_ca_keeps_every_node_connected_and_changes_the_tokens() -> Result<()> {
    let cluster = Cluster::start(3, 1)?;
    cluster.wait_for_nodes("m1", "all ready", SETTLE, |nodes| {
        nodes.len() == 4 && nodes.iter().all(|n| n["status"]["state"] == "ready")
    })?;
    let before = cluster.node("m2").json(&["swarm", "inspect"])?;
    let old_token = cluster
        .node("m1")
        .ok(&["swarm", "join-token", "-q", "worker"])?;

    let out = cluster.node("m2").ok(&["swarm", "ca", "--rotate"])?;
    assert!(out.contains("CA rotated"), "{out}");
    let after = cluster.node("m3").json(&["swarm", "inspect"])?;
    assert_ne!(after["ca_fingerprint"], before["ca_fingerprint"]);
    assert!(after["ca_rotation"].is_null(), "{after}");

    // Every node trusts only the new CA and holds a certificate from it, and is still in.
    let new_ca = after["ca_cert_pem"].as_str().context("ca pem")?.to_string();
    wait_for("every node on the new CA alone", SETTLE, || {
        let all_moved = cluster.nodes.iter().all(|node| {
            std::fs::read_to_string(node.certificates().join("roots.crt"))
                .is_ok_and(|roots| roots == new_ca)
        });
        Ok(all_moved.then_some(()))
    })?;
    let nodes = cluster.node_list("m1")?;
    assert!(
        nodes.iter().all(|n| n["status"]["state"] == "ready"),
        "{nodes:?}"
    );
    cluster
        .node("m3")
        .ok(&["node", "update", "--label-add", "rotated=yes", "w1"])?;

    // Tokens pin the new CA: the old one no longer admits anybody.
    let new_token = cluster
        .node("m1")
        .ok(&["swarm", "join-token", "-q", "worker"])?;
    assert_ne!(new_token, old_token);
    Ok(())
}

#[test]
fn a_node_whose_certificate_expired_is_refused_and_told_to_join_again() -> Result<()> {
    let mut cluster = Cluster::start(1, 1)?;
    cluster
        .node("m1")
        .ok(&["swarm", "update", "--cert-expiry", "4s"])?;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    // Wait for w1 to hold a short certificate, then keep it away until that one expired.
    let not_after = wait_for("w1 on a short certificate", SETTLE, || {
        let info = cluster.node("w1").json(&["info"])?;
        let not_after = info["cert_not_after"].as_i64().context("cert_not_after")?;
        Ok((not_after - now() < 120).then_some(not_after))
    })?;
    cluster.node_mut("w1").kill9();
    wait_for("w1's certificate to expire", SETTLE, || {
        Ok((now() > not_after + 1).then_some(()))
    })?;
    cluster.node_mut("w1").restart()?;
    wait_for_log(cluster.node("m1"), "expired certificate")?;
    wait_for_log(cluster.node("w1"), "join again")?;
    cluster.wait_for_nodes("m1", "w1 down", SETTLE, |nodes| {
        row(nodes, "w1").is_some_and(|n| n["status"]["state"] == "down")
    })?;
    Ok(())
}

#[test]
fn regression_an_uncertified_caller_cannot_make_a_manager_buffer_a_huge_message() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let token = m1.ok(&["swarm", "join-token", "-q", "worker"])?;
    let digest = token
        .trim()
        .split('-')
        .nth(2)
        .context("token digest")?
        .to_string();
    // A TLS client that trusts the cluster but shows no certificate, as a joining node does.
    let config = Arc::new(tls::pinned_client_config(&digest)?);
    let addr = m1.addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (control, raft) = runtime.block_on(async {
        let channel = transport::cluster_channel(&addr, ClientTls::Fixed(config))?;
        let huge = vec![b' '; 20 * 1024 * 1024];
        let control = transport::control_client(channel.clone())
            .call(essaim_api::pb::ControlMessage { json: huge.clone() })
            .await
            .expect_err("an uncertified control call got through");
        let raft = transport::raft_client(channel)
            .append_entries(RaftMessage { body: huge })
            .await
            .expect_err("an uncertified raft call got through");
        anyhow::Ok((control, raft))
    })?;
    // Refused for the missing certificate, from the request head: not for the size, which
    // would mean the body had been read first.
    assert_eq!(control.code(), tonic::Code::Unauthenticated, "{control:?}");
    assert_eq!(raft.code(), tonic::Code::Unauthenticated, "{raft:?}");
    Ok(())
}

#[test]
fn regression_a_connection_opened_before_a_ca_rotation_is_refused_after_it() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let dir = tempfile::tempdir()?;
    issue_client_bundle(m1, dir.path())?;
    let credentials = Credentials {
        cert_pem: std::fs::read_to_string(dir.path().join("client.crt"))?,
        key_pem: std::fs::read_to_string(dir.path().join("client.key"))?,
        roots_pem: std::fs::read_to_string(dir.path().join("ca.crt"))?,
    };
    let config = Arc::new(tls::client_config(&credentials)?);
    let addr = m1.addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let channel = runtime.block_on(async {
        let channel = transport::cluster_channel(&addr, ClientTls::Fixed(config))?;
        let mut client = transport::control_client(channel.clone());
        transport::call(&mut client, &essaim_api::ControlRequest::NodeList).await?;
        anyhow::Ok(channel)
    })?;
    m1.ok(&["swarm", "ca", "--rotate"])?;
    // The same connection, still open: the old CA is no longer trusted, so neither is it.
    let refused = runtime.block_on(async {
        let mut client = transport::control_client(channel);
        transport::call(&mut client, &essaim_api::ControlRequest::NodeList).await
    });
    let err = refused.expect_err("an old-CA connection still works");
    assert!(err.to_string().contains("no longer trusts"), "{err}");
    Ok(())
}
