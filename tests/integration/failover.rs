//! Following failovers with `role = "auto"`: a split brain seen at start-up.

use std::time::Duration;

use pgcluster::{Cluster, ClusterOptions, APP_DB};
use pglittle::config::{HostConfig, RoleMode};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_split_brain_writes_go_to_the_newest_timeline_from_the_first_one() {
    let cluster = Cluster::start(ClusterOptions {
        max_connections: 60,
        ..ClusterOptions::default()
    })
    .expect("private cluster");
    let replica = cluster.replica.as_ref().unwrap();
    // The replica is promoted while the old primary keeps running: both
    // accept writes, the promoted one on a new timeline.
    cluster.promote(replica).expect("promote the replica");
    let mut config = config();
    let db = config.databases.get_mut(APP_DB).unwrap();
    db.host = cluster.primary.host.clone();
    db.port = cluster.primary.port;
    db.replicas = vec![HostConfig {
        host: replica.host.clone(),
        port: replica.port,
        weight: 1,
    }];
    db.routing.role = RoleMode::Auto;
    config.pooler.health_check_period = Duration::from_millis(100);
    let p = pooler(config).await;
    let hosts = p.running.shared.topology.get(APP_DB).unwrap();
    let c = p.connect().await;
    let writer_port =
        || async { scalar(&c, "/* pglittle:primary */ SELECT inet_server_port()").await };
    // The first write already goes to the promoted host, not the configured
    // (former) primary, and it stays there round after round.
    assert_eq!(writer_port().await, replica.port.to_string());
    for _ in 0..5 {
        hosts.probed.notified().await;
        assert_eq!(writer_port().await, replica.port.to_string());
    }
    assert_eq!(
        hosts.writer().addr(),
        format!("{}:{}", replica.host, replica.port)
    );
}
