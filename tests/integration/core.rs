//! Core proxy behaviour: pooling, auth, session state, errors.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_through_the_pooler() {
    let p = pooler(config()).await;
    let c = p.connect().await;
    assert_eq!(scalar(&c, "select 1 + 1").await, "2");
    let md5 = p.connect_md5().await;
    assert_eq!(scalar(&md5, "select current_user").await, "app_md5");
}
