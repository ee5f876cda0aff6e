//! The proxy's resource limits (issue #10), each triggered over real TCP against a live proxy:
//! the offender is cut within the bound, the metric counts it, and honest miners connected at
//! the same time keep mining. The bodies are shared with the pool's (cloud_limits.rs) in
//! common/limits.rs.

mod common;

use common::limits::{self, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_a_new_connection_is_closed_at_once() {
    limits::over_max_connections_a_new_connection_is_closed_at_once::<Proxy>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_per_ip_cap_a_connection_is_closed_and_other_ips_are_untouched() {
    limits::over_the_per_ip_cap_a_connection_is_closed_and_other_ips_are_untouched::<Proxy>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_finish_its_handshake_is_closed() {
    limits::a_connection_that_does_not_finish_its_handshake_is_closed::<Proxy>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_line_that_stalls_is_closed() {
    limits::a_partial_line_that_stalls_is_closed::<Proxy>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_longer_than_max_line_length_is_refused_and_closed() {
    limits::a_line_longer_than_max_line_length_is_refused_and_closed::<Proxy>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_over_the_message_rate_is_closed() {
    limits::a_flooder_over_the_message_rate_is_closed::<Proxy>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_cut_when_its_queue_is_over_the_cap() {
    limits::a_reader_that_stops_reading_is_cut_when_its_queue_is_over_the_cap::<Proxy>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_cut_when_writes_stall() {
    limits::a_reader_that_stops_reading_is_cut_when_writes_stall::<Proxy>().await;
}
