"""Black-box harness for ficus's integration tests: processes (ficus, its
mock, nginx) on free ports, in-process backends (an echo server, raw sockets
that hang or cut responses short) and HTTP clients down to raw bytes."""

from .backends import EchoBackend, RawBackend, echo_header, echo_headers, pattern_bytes
from .client import RawConn, Response, http_request, raw_request, wait_until
from .config import config, route, to_yaml
from .load import wrk
from .metrics import parse_metrics, metric_value
from .otlp import (
    OtlpReceiver,
    attributes_to_dict,
    dead_endpoint,
    flatten_spans,
    otlp_proto_check,
    otlp_proto_check_available,
    validate_otlp_json,
)
from .procs import (
    FICUS_MODE,
    Ficus,
    FicusStartError,
    Mock,
    Nginx,
    ficus_bin,
    free_port,
    repo_root,
    run_cli,
    scaled,
    stop_all,
)

__all__ = [
    "wrk",
    "EchoBackend",
    "echo_header",
    "echo_headers",
    "FICUS_MODE",
    "Ficus",
    "FicusStartError",
    "Mock",
    "Nginx",
    "OtlpReceiver",
    "RawBackend",
    "RawConn",
    "attributes_to_dict",
    "dead_endpoint",
    "flatten_spans",
    "otlp_proto_check",
    "otlp_proto_check_available",
    "validate_otlp_json",
    "Response",
    "ficus_bin",
    "free_port",
    "http_request",
    "raw_request",
    "metric_value",
    "parse_metrics",
    "pattern_bytes",
    "repo_root",
    "run_cli",
    "scaled",
    "stop_all",
    "to_yaml",
    "config",
    "route",
    "wait_until",
]
