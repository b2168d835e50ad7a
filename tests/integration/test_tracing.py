"""Tracing (contract section 6.3): W3C traceparent continued or started, a new
span id per upstream try, optional Datadog propagation, spans exported as
OTLP/HTTP JSON off the request path; a dead or slow collector never fails a
request (drops and export failures are counted)."""

import json
import re

import pytest

from harness import (
    OtlpReceiver,
    config,
    dead_endpoint,
    echo_header,
    http_request,
    metric_value,
    otlp_proto_check,
    parse_metrics,
    route,
    scaled,
    validate_otlp_json,
    wait_until,
)

TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")


@pytest.fixture
def receiver():
    r = OtlpReceiver()
    r.start()
    yield r
    r.stop()


def traced(groups, routes, endpoint, **tracing):
    return config(groups, routes, server={"workers": 1},
                  tracing={"otlp_endpoint": endpoint, **tracing})


def upstream_tp(resp):
    got = echo_header(resp.json(), "traceparent")
    assert len(got) == 1, resp.json()["headers"]
    m = TP.match(got[0])
    assert m, got
    return m.groups()


def by_kind(spans, kind):
    return [s for s in spans if s["kind"] == kind]


def test_a_trace_is_started_and_exported(ficus, echo_backend, receiver):
    e = echo_backend("e")
    f = ficus(traced({"e": e.addr}, [route("api", "/", "e")], receiver.endpoint))
    r = http_request(f.port, "GET", "/items?x=1", headers={"User-Agent": "t"})
    assert r.status == 200
    trace_id, span_id, flags = upstream_tp(r)
    assert flags == "01"
    spans = receiver.wait_for_spans(2, scaled(5))
    assert len(spans) == 2, receiver.requests
    receiver.validate_all()
    for body in receiver.requests:
        validate_otlp_json(body)
        otlp_proto_check(body)
    server, = by_kind(spans, 2)
    client, = by_kind(spans, 3)
    assert server["traceId"] == client["traceId"] == trace_id
    assert "parentSpanId" not in server  # a root span: nobody called with a trace
    assert client["parentSpanId"] == server["spanId"]
    assert client["spanId"] == span_id  # the id the upstream saw
    assert server["resource"]["service.name"] == "ficus"
    assert server["attrs"]["http.request.method"] == "GET"
    assert server["attrs"]["http.response.status_code"] == 200
    assert server["attrs"]["url.path"] == "/items"
    assert server["attrs"]["ficus.route"] == "api"
    assert client["attrs"]["ficus.target_group"] == "e"
    assert client["attrs"]["ficus.target"] == e.addr
    assert client["attrs"]["ficus.attempt"] == 1
    for s in spans:
        assert int(s["startTimeUnixNano"]) <= int(s["endTimeUnixNano"])
    # The client span lies inside the server span.
    assert int(server["startTimeUnixNano"]) <= int(client["startTimeUnixNano"])
    assert int(client["endTimeUnixNano"]) <= int(server["endTimeUnixNano"])
    # The access log carries the trace id.
    log = f.wait_access_log(1)
    assert log[0]["trace_id"] == trace_id


def test_an_incoming_traceparent_is_continued(ficus, echo_backend, receiver):
    e = echo_backend("e")
    f = ficus(traced({"e": e.addr}, [route("api", "/", "e")], receiver.endpoint,
                     sample_ratio=0.0))
    caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = http_request(f.port, "GET", "/", headers={
        "traceparent": f"00-{caller[0]}-{caller[1]}-01", "tracestate": "vendor=x"})
    trace_id, span_id, flags = upstream_tp(r)
    assert (trace_id, flags) == (caller[0], "01")
    assert span_id != caller[1]
    assert echo_header(r.json(), "tracestate") == ["vendor=x"]
    spans = receiver.wait_for_spans(2, scaled(5))
    server, = by_kind(spans, 2)
    assert server["traceId"] == caller[0]
    assert server["parentSpanId"] == caller[1]


@pytest.mark.parametrize("bad", ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                                 "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                                 "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                                 "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"])
def test_an_invalid_traceparent_starts_a_new_trace(ficus, echo_backend, receiver, bad):
    e = echo_backend("e")
    f = ficus(traced({"e": e.addr}, [route("api", "/", "e")], receiver.endpoint))
    r = http_request(f.port, "GET", "/", headers={"traceparent": bad})
    trace_id, _, _ = upstream_tp(r)
    assert trace_id not in bad.lower()


def test_each_try_gets_its_own_span(ficus, mock, receiver):
    bad, good = mock("bad", status=503), mock("good")
    cfg = traced({"g": {"targets": [bad.addr, good.addr], "balance": "round_robin"}},
                 [route("api", "/", "g", retries={"attempts": 2, "retry_on": ["5xx"],
                                                   "backoff": "1ms"})],
                 receiver.endpoint)
    f = ficus(cfg)
    for _ in range(4):
        assert http_request(f.port, "GET", "/").status == 200
    spans = receiver.wait_for_spans(4 + 6, scaled(5))
    receiver.validate_all()
    servers = by_kind(spans, 2)
    retried = [s for s in servers if s["attrs"]["ficus.attempt"] == 2]
    assert retried, servers
    s = retried[0]
    tries = sorted((c for c in by_kind(spans, 3) if c["parentSpanId"] == s["spanId"]),
                   key=lambda c: c["attrs"]["ficus.attempt"])
    assert [c["attrs"]["ficus.attempt"] for c in tries] == [1, 2]
    assert tries[0]["spanId"] != tries[1]["spanId"]
    assert tries[0]["attrs"]["http.response.status_code"] == 503
    assert tries[0]["status"]["code"] == 2  # ERROR
    assert tries[1]["attrs"]["ficus.retry"] is True
    assert tries[1]["attrs"]["http.response.status_code"] == 200


def test_unsampled_requests_propagate_but_are_not_exported(ficus, echo_backend, receiver):
    e = echo_backend("e")
    f = ficus(traced({"e": e.addr}, [route("api", "/", "e")], receiver.endpoint,
                     sample_ratio=0.0))
    for _ in range(5):
        r = http_request(f.port, "GET", "/")
        _, _, flags = upstream_tp(r)
        assert flags == "00"
    assert receiver.wait_for_spans(1, 1.0) == []


def test_datadog_propagation(ficus, echo_backend, receiver):
    e = echo_backend("e")
    f = ficus(traced({"e": e.addr}, [route("api", "/", "e")], receiver.endpoint,
                     propagation=["w3c", "datadog"]))
    r = http_request(f.port, "GET", "/", headers={"x-datadog-trace-id": "1234567890123",
                                                  "x-datadog-parent-id": "987654321",
                                                  "x-datadog-sampling-priority": "1"})
    seen = r.json()
    assert echo_header(seen, "x-datadog-trace-id") == ["1234567890123"]
    parent = echo_header(seen, "x-datadog-parent-id")
    assert len(parent) == 1 and parent[0] != "987654321" and parent[0].isdigit()
    assert echo_header(seen, "x-datadog-sampling-priority") == ["1"]
    trace_id, span_id, _ = upstream_tp(r)
    assert trace_id == f"{1234567890123:032x}"
    assert int(span_id, 16) == int(parent[0])  # one try span, in both encodings
    spans = receiver.wait_for_spans(2, scaled(5))
    server, = by_kind(spans, 2)
    assert server["parentSpanId"] == f"{987654321:016x}"


def test_a_dead_collector_never_fails_requests(ficus, mock):
    m = mock("m")
    f = ficus(traced({"m": m.addr}, [route("api", "/", "m")], dead_endpoint()))
    for _ in range(50):
        assert http_request(f.port, "GET", "/").status == 200

    def counted():
        s = parse_metrics(f.metrics_text())
        return (metric_value(s, "ficus_trace_export_failures_total") or 0) >= 1 and \
            (metric_value(s, "ficus_trace_spans_dropped_total") or 0) >= 1

    assert wait_until(counted, scaled(5))


def test_a_hanging_collector_never_holds_requests(ficus, mock):
    m = mock("m")
    with OtlpReceiver(hang=True) as hung:
        f = ficus(traced({"m": m.addr}, [route("api", "/", "m")], hung.endpoint))
        for _ in range(200):
            assert http_request(f.port, "GET", "/", timeout=scaled(2)).status == 200

        def counted():
            s = parse_metrics(f.metrics_text())
            return (metric_value(s, "ficus_trace_export_failures_total") or 0) >= 1

        assert wait_until(counted, scaled(8))
        hung.release()


def test_without_an_exporter_trace_headers_pass_through(ficus, echo_backend):
    e = echo_backend("e")
    f = ficus(config({"e": e.addr}, [route("api", "/", "e")]))
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = http_request(f.port, "GET", "/", headers={"traceparent": tp})
    assert echo_header(r.json(), "traceparent") == [tp]
    log = f.wait_access_log(1)
    assert log[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    r = http_request(f.port, "GET", "/")
    assert echo_header(r.json(), "traceparent") == []
    log = f.wait_access_log(2)
    assert log[1]["trace_id"] is None


def test_tracing_spans_metric_and_config(ficus, mock, receiver):
    m = mock("m")
    f = ficus(traced({"m": m.addr}, [route("api", "/", "m")], receiver.endpoint))
    http_request(f.port, "GET", "/")
    receiver.wait_for_spans(2, scaled(5))
    s = parse_metrics(f.metrics_text())
    assert metric_value(s, "ficus_trace_spans_dropped_total") == 0
    assert metric_value(s, "ficus_trace_export_failures_total") == 0
    cfg = json.loads(f.admin_get("/config")[2])
    assert cfg["tracing"]["otlp_endpoint"] == receiver.endpoint


@pytest.mark.parametrize("canary_fails", ["503", "down"])
def test_a_fallen_back_canary_try_keeps_its_error_type(ficus, mock, receiver, canary_fails):
    """The client saw the fallback's 200; the canary's failed try still says
    why it failed (error.type), so a trace search finds masked failures."""
    primary = mock("primary")
    if canary_fails == "503":
        canary = mock("canary", status=503).addr
        want = "http_5xx"
    else:
        from harness import free_port
        canary = f"127.0.0.1:{free_port()}"  # nothing listens
        want = "connect_error"
    cfg = traced({"primary": primary.addr, "canary": canary},
                 [route("s", "/", [{"target_group": "primary", "weight": 0},
                                   {"target_group": "canary", "weight": 1,
                                    "fallback": "primary"}])],
                 receiver.endpoint)
    f = ficus(cfg)
    assert http_request(f.port, "GET", "/").status == 200
    spans = receiver.wait_for_spans(3, scaled(5))
    tries = sorted(by_kind(spans, 3), key=lambda c: c["attrs"]["ficus.attempt"])
    assert len(tries) == 2, tries
    assert tries[0]["attrs"].get("error.type") == want, tries[0]
    assert tries[0]["status"]["code"] == 2
    assert "error.type" not in tries[1]["attrs"], tries[1]


def test_spans_carry_the_api_client(ficus, echo_backend, receiver):
    """The seeds tag their traces with the calling client: so does ficus
    (ficus.client_id), and only when a key was checked."""
    import hashlib
    e = echo_backend("e")
    cfg = traced({"e": e.addr}, [route("api", "/", "e", auth={"client": "optional"})],
                 receiver.endpoint)
    cfg["clients"] = [{"id": "ios-app",
                       "api_keys_sha256": [hashlib.sha256(b"trace-key").hexdigest()]}]
    f = ficus(cfg)
    assert http_request(f.port, "GET", "/a", headers={"X-Api-Key": "trace-key"}).status == 200
    assert http_request(f.port, "GET", "/b", headers={"X-Client-Id": "ios-app"}).status == 200
    spans = receiver.wait_for_spans(4, scaled(5))
    servers = {s["attrs"]["url.path"]: s for s in by_kind(spans, 2)}
    assert servers["/a"]["attrs"]["ficus.client_id"] == "ios-app"
    assert "ficus.client_id" not in servers["/b"]["attrs"]
    clients = [s for s in by_kind(spans, 3) if s["attrs"].get("ficus.client_id")]
    assert len(clients) == 1


def test_a_shadow_copy_is_a_sibling_span_of_the_tries(ficus, echo_backend, receiver):
    old, new = echo_backend("old"), echo_backend("new")
    f = ficus(traced({"old": old.addr, "new": new.addr},
                     [route("api", "/", "old",
                            shadow={"target_group": "new", "percent": 100})],
                     receiver.endpoint))
    r = http_request(f.port, "GET", "/items")
    assert r.status == 200
    trace_id, span_id, _ = upstream_tp(r)
    spans = receiver.wait_for_spans(3, scaled(5))
    assert len(spans) == 3, receiver.requests
    receiver.validate_all()
    server, = by_kind(spans, 2)
    clients = by_kind(spans, 3)
    assert {c["attrs"]["ficus.target_group"] for c in clients} == {"old", "new"}
    for c in clients:
        assert c["traceId"] == trace_id and c["parentSpanId"] == server["spanId"]
    copy, = [c for c in clients if c["attrs"]["ficus.target_group"] == "new"]
    # Its own span id, the one the shadow group saw.
    assert wait_until(lambda: new.count() == 1, 5)
    seen = [v for k, v in new.requests[0]["headers"] if k.lower() == "traceparent"]
    assert seen and seen[0].split("-")[2] == copy["spanId"] != span_id
