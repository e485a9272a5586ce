//! `GET /metrics` over HTTP/1 (axum routes, served by the hardened
//! endpoint of `vigil-observability`: header deadline, bounded connection
//! lifetime, connection cap), on the listener `--metrics-listen` names.
//! Anything else is a 404; hyper answers malformed requests and oversized
//! headers with an error status and closes that connection.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use vigil_observability::EndpointLimits;

use super::registry::{ExpositionFormat, MetricsRegistry};

/// Serves the metrics on `listener` until the task is dropped.
pub async fn serve_metrics(listener: TcpListener, registry: Arc<MetricsRegistry>) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry);
    vigil_observability::serve_metrics_router(listener, app, EndpointLimits::default()).await
}

async fn scrape(State(registry): State<Arc<MetricsRegistry>>, headers: HeaderMap) -> Response {
    let format = ExpositionFormat::from_accept(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    // Reading the agent records is blocking sled I/O.
    match tokio::task::spawn_blocking(move || registry.render(format)).await {
        Ok(Ok(body)) => ([(CONTENT_TYPE, format.content_type())], body).into_response(),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("metrics: encoding the exposition failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
                .into_response()
        }
    }
}
