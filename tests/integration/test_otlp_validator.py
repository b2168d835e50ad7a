"""The trace tests' own tools, checked on hand-written documents: the strict
OTLP JSON validator (good bodies pass, each kind of mistake is caught and
named), the protobuf mapping check under node, and the OTLP receiver's
answers (status, delay, hang, drop, refusals) and span flattening."""

import copy
import gzip
import http.client
import json
import socket
import subprocess
import threading
import time

import pytest

from harness import (
    OtlpReceiver,
    dead_endpoint,
    flatten_spans,
    otlp_proto_check,
    otlp_proto_check_available,
    validate_otlp_json,
)
from harness.otlp import otlp_proto_dir

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT = "00f067aa0ba902b7"
CHILD = "b7ad6b7169203331"


def good_doc():
    """A server span and its client span, as ficus is meant to export them."""
    return {
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "ficus"}},
                {"key": "service.version", "value": {"stringValue": "0.1.0"}},
            ]},
            "scopeSpans": [{
                "scope": {"name": "ficus", "version": "0.1.0"},
                "spans": [
                    {
                        "traceId": TRACE, "spanId": ROOT, "name": "GET /api", "kind": 2,
                        "startTimeUnixNano": "1700000000123456789",
                        "endTimeUnixNano": "1700000000223456789",
                        "attributes": [
                            {"key": "http.request.method", "value": {"stringValue": "GET"}},
                            {"key": "http.response.status_code", "value": {"intValue": "200"}},
                            {"key": "ficus.route", "value": {"stringValue": "api"}},
                            {"key": "ficus.fallback", "value": {"boolValue": False}},
                            {"key": "ficus.weight", "value": {"doubleValue": 0.5}},
                            {"key": "ficus.tags", "value": {"arrayValue": {"values": [
                                {"stringValue": "a"}, {"intValue": "-3"}]}}},
                            {"key": "ficus.map", "value": {"kvlistValue": {"values": [
                                {"key": "k", "value": {"stringValue": "v"}}]}}},
                            {"key": "ficus.raw", "value": {"bytesValue": "AAEC"}},
                        ],
                        "status": {"code": 0},
                    },
                    {
                        "traceId": TRACE, "spanId": CHILD, "parentSpanId": ROOT,
                        "name": "upstream", "kind": 3, "flags": 1, "traceState": "k=v",
                        "startTimeUnixNano": "1700000000133456789",
                        "endTimeUnixNano": "1700000000133456789",
                        "attributes": [
                            {"key": "ficus.target", "value": {"stringValue": "127.0.0.1:1"}},
                            {"key": "ficus.attempt", "value": {"intValue": "1"}},
                        ],
                        "droppedAttributesCount": 0,
                        "events": [{"timeUnixNano": "1700000000133456790", "name": "retry",
                                    "attributes": [{"key": "n", "value": {"intValue": "1"}}]}],
                        "links": [{"traceId": "5bf92f3577b34da6a3ce929d0e0e4736",
                                   "spanId": "10f067aa0ba902b7", "flags": 1}],
                        "status": {"code": 2, "message": "upstream timeout"},
                    },
                ],
            }],
        }]
    }


def span(doc, i=0):
    return doc["resourceSpans"][0]["scopeSpans"][0]["spans"][i]


def attr(doc, i=0, k=0):
    return span(doc, i)["attributes"][k]


def _rename(obj, old, new):
    obj[new] = obj.pop(old)


# (id, mutation of good_doc(), text the validator's message must contain)
BAD = [
    ("snake_case_key", lambda d: _rename(span(d), "traceId", "trace_id"),
     "lowerCamelCase 'traceId'"),
    ("snake_case_nested", lambda d: _rename(d["resourceSpans"][0], "scopeSpans", "scope_spans"),
     "lowerCamelCase 'scopeSpans'"),
    ("unknown_span_key", lambda d: span(d).update(foo=1), "spans[0].foo: unknown key"),
    ("unknown_top_key", lambda d: d.update(extra=[]), "extra: unknown key"),
    ("old_instrumentation_library", lambda d: d["resourceSpans"][0].update(
        instrumentationLibrarySpans=[]), "instrumentationLibrarySpans: unknown key"),
    ("trace_id_upper", lambda d: span(d).update(traceId=TRACE.upper()), "32 lowercase hex"),
    ("trace_id_short", lambda d: span(d).update(traceId=TRACE[:-1]), "32 lowercase hex"),
    ("trace_id_base64", lambda d: span(d).update(traceId="S/kvNXezTaajzpKdDg5HNg=="),
     "32 lowercase hex"),
    ("trace_id_zero", lambda d: span(d).update(traceId="0" * 32), "traceId: all zeros"),
    ("trace_id_missing", lambda d: span(d).pop("traceId"), "missing required key 'traceId'"),
    ("span_id_zero", lambda d: span(d).update(spanId="0" * 16), "spanId: all zeros"),
    ("span_id_long", lambda d: span(d).update(spanId=TRACE), "16 lowercase hex"),
    ("parent_empty", lambda d: span(d, 1).update(parentSpanId=""), "parentSpanId: expected 16"),
    ("parent_is_self", lambda d: span(d, 1).update(parentSpanId=CHILD), "equals the span's own"),
    ("kind_too_big", lambda d: span(d).update(kind=6), "span kind 6 is outside 0..5"),
    ("kind_negative", lambda d: span(d).update(kind=-1), "span kind -1 is outside"),
    ("kind_name", lambda d: span(d).update(kind="SPAN_KIND_SERVER"), "must be an integer"),
    ("kind_bool", lambda d: span(d).update(kind=True), "must be an integer"),
    ("kind_float", lambda d: span(d).update(kind=2.0), "must be an integer"),
    ("start_number", lambda d: span(d).update(startTimeUnixNano=1700000000123456789),
     "startTimeUnixNano: expected a decimal string"),
    ("start_exponent", lambda d: span(d).update(startTimeUnixNano="1.7e18"),
     "not an unsigned decimal"),
    ("start_negative", lambda d: span(d).update(startTimeUnixNano="-1"), "not an unsigned decimal"),
    ("start_zero", lambda d: span(d).update(startTimeUnixNano="0"), "is zero"),
    ("start_overflow", lambda d: span(d).update(startTimeUnixNano=str(2**64)), "outside uint64"),
    ("end_before_start", lambda d: span(d).update(endTimeUnixNano="1700000000123456788"),
     "is before startTimeUnixNano"),
    ("end_missing", lambda d: span(d).pop("endTimeUnixNano"),
     "missing required key 'endTimeUnixNano'"),
    ("name_empty", lambda d: span(d).update(name=""), "name: must not be empty"),
    ("name_number", lambda d: span(d).update(name=5), "name: expected a string"),
    ("name_lone_surrogate", lambda d: span(d).update(name="GET /\udc80"), "not valid Unicode"),
    ("int_value_number", lambda d: attr(d, 0, 1)["value"].update(intValue=200),
     "intValue: expected a decimal string"),
    ("int_value_text", lambda d: attr(d, 0, 1)["value"].update(intValue="2xx"),
     "not an int64 decimal string"),
    ("int_value_overflow", lambda d: attr(d, 0, 1)["value"].update(intValue=str(2**63)),
     "not an int64 decimal string"),
    ("two_values", lambda d: attr(d)["value"].update(intValue="1"), "exactly one"),
    ("empty_value", lambda d: attr(d)["value"].clear(), "got none"),
    ("value_missing", lambda d: attr(d).pop("value"), "missing required key 'value'"),
    ("value_plain_string", lambda d: attr(d).update(value="GET"), "expected a JSON object"),
    ("key_empty", lambda d: attr(d).update(key=""), "key: must not be empty"),
    ("duplicate_key", lambda d: span(d)["attributes"].append(copy.deepcopy(attr(d))),
     "duplicate key 'http.request.method'"),
    ("attributes_as_map", lambda d: span(d).update(attributes={"a": "b"}), "expected a JSON array"),
    ("bool_value_string", lambda d: attr(d, 0, 3)["value"].update(boolValue="false"),
     "expected true or false"),
    ("double_value_string", lambda d: attr(d, 0, 4)["value"].update(doubleValue="0.5"),
     "doubleValue: expected a JSON number"),
    ("bytes_not_base64", lambda d: attr(d, 0, 7)["value"].update(bytesValue="AAE"),
     "expected base64"),
    ("array_value_bare_list", lambda d: attr(d, 0, 5)["value"].update(arrayValue=[]),
     "arrayValue: expected a JSON object"),
    ("kvlist_bad_inner", lambda d: attr(d, 0, 6)["value"]["kvlistValue"]["values"][0].update(
        value={"stringValue": 1}), "kvlistValue.values[0].value.stringValue: expected a string"),
    ("status_code_3", lambda d: span(d).update(status={"code": 3}), "status code 3 is outside"),
    ("status_code_name", lambda d: span(d).update(status={"code": "STATUS_CODE_ERROR"}),
     "must be an integer"),
    ("status_message_number", lambda d: span(d, 1)["status"].update(message=504),
     "status.message: expected a string"),
    ("status_unknown_key", lambda d: span(d)["status"].update(deprecatedCode=1),
     "deprecatedCode: unknown key"),
    ("dropped_negative", lambda d: span(d, 1).update(droppedAttributesCount=-1), "outside uint32"),
    ("dropped_string", lambda d: span(d, 1).update(droppedAttributesCount="0"),
     "expected an integer"),
    ("flags_too_big", lambda d: span(d, 1).update(flags=2**32), "outside uint32"),
    ("event_time_number", lambda d: span(d, 1)["events"][0].update(timeUnixNano=1),
     "events[0].timeUnixNano: expected a decimal string"),
    ("event_unknown_key", lambda d: span(d, 1)["events"][0].update(time_unix_nano="1"),
     "lowerCamelCase 'timeUnixNano'"),
    ("link_bad_span_id", lambda d: span(d, 1)["links"][0].update(spanId="xyz"),
     "links[0].spanId: expected 16"),
    ("no_service_name", lambda d: d["resourceSpans"][0]["resource"]["attributes"].pop(0),
     "no service.name attribute"),
    ("service_name_int", lambda d: d["resourceSpans"][0]["resource"]["attributes"][0].update(
        value={"intValue": "1"}), "service.name must be a non-empty stringValue"),
    ("service_name_empty", lambda d: d["resourceSpans"][0]["resource"]["attributes"][0].update(
        value={"stringValue": ""}), "service.name must be a non-empty stringValue"),
    ("resource_missing", lambda d: d["resourceSpans"][0].pop("resource"),
     "missing required key 'resource'"),
    ("resource_list", lambda d: d["resourceSpans"][0].update(resource=[]),
     "resource: expected a JSON object"),
    ("scope_name_number", lambda d: d["resourceSpans"][0]["scopeSpans"][0]["scope"].update(name=1),
     "scope.name: expected a string"),
    ("no_resource_spans", lambda d: d.pop("resourceSpans"), "missing required key 'resourceSpans'"),
    ("empty_resource_spans", lambda d: d.update(resourceSpans=[]),
     "resourceSpans: must not be empty"),
    ("empty_spans", lambda d: d["resourceSpans"][0]["scopeSpans"][0].update(spans=[]),
     "spans: must not be empty"),
]


def test_good_document_passes():
    validate_otlp_json(good_doc())


def test_good_document_as_text_and_bytes():
    text = json.dumps(good_doc())
    validate_otlp_json(text)
    validate_otlp_json(text.encode())


def test_empty_lists_allowed_on_request():
    validate_otlp_json({"resourceSpans": []}, allow_empty=True)
    with pytest.raises(AssertionError, match="must not be empty"):
        validate_otlp_json({"resourceSpans": []})


@pytest.mark.parametrize("text", ["", "[", "[]", "null", '"x"'])
def test_not_an_object(text):
    with pytest.raises(AssertionError, match="body: "):
        validate_otlp_json(text)


@pytest.mark.parametrize("mutate,message", [(m, s) for _, m, s in BAD], ids=[i for i, _, _ in BAD])
def test_bad_document_is_rejected_with_its_path(mutate, message):
    doc = good_doc()
    mutate(doc)
    with pytest.raises(AssertionError) as e:
        validate_otlp_json(doc)
    assert message in str(e.value), str(e.value)


def test_message_names_the_path():
    doc = good_doc()
    span(doc, 1)["links"][0]["traceId"] = "nope"
    with pytest.raises(AssertionError) as e:
        validate_otlp_json(doc)
    assert str(e.value).startswith("resourceSpans[0].scopeSpans[0].spans[1].links[0].traceId: ")


def test_flatten_spans():
    spans = flatten_spans(good_doc())
    assert [s["name"] for s in spans] == ["GET /api", "upstream"]
    root, child = spans
    assert root["resource"] == {"service.name": "ficus", "service.version": "0.1.0"}
    assert root["scope"] == {"name": "ficus", "version": "0.1.0"}
    assert root["attrs"]["http.response.status_code"] == 200
    assert root["attrs"]["ficus.fallback"] is False
    assert root["attrs"]["ficus.tags"] == ["a", -3]
    assert root["attrs"]["ficus.map"] == {"k": "v"}
    assert root["attrs"]["ficus.raw"] == b"\x00\x01\x02"
    assert child["parentSpanId"] == root["spanId"] and child["traceId"] == root["traceId"]
    assert "parentSpanId" not in root


# --- the protobuf mapping (node + OpenTelemetry's generated code) ---

# Mistakes that change or lose a field on the way through protobuf.
PROTO_BAD = [
    ("snake_case_key", lambda d: _rename(span(d), "traceId", "trace_id"), "trace_id: lost"),
    ("unknown_key", lambda d: span(d).update(foo=1), "foo: lost"),
    ("old_instrumentation_library", lambda d: d["resourceSpans"][0].update(
        instrumentationLibrarySpans=[{"spans": []}]), "instrumentationLibrarySpans: lost"),
    ("kind_name", lambda d: span(d).update(kind="SPAN_KIND_SERVER"), "kind: \"SPAN_KIND_SERVER\""),
    ("int_value_number", lambda d: attr(d, 0, 1)["value"].update(intValue=200), "intValue: 200"),
    ("time_number", lambda d: span(d).update(startTimeUnixNano=1700000000123456789),
     "startTimeUnixNano"),
    ("two_values", lambda d: attr(d)["value"].update(intValue="1"), "multiple values"),
    ("trace_id_base64", lambda d: span(d).update(traceId="S/kvNXezTaajzpKdDg5HNg=="),
     "not a hex string"),
    ("status_code_name", lambda d: span(d).update(status={"code": "STATUS_CODE_ERROR"}),
     "status.code"),
    ("resource_list", lambda d: d["resourceSpans"][0].update(resource=[]), "resource"),
    ("name_number", lambda d: span(d).update(name=5), "name: 5"),
    ("name_lone_surrogate", lambda d: span(d).update(name="GET /\udc80"), "name: "),
]


def test_proto_check_accepts_good_document():
    otlp_proto_check(good_doc())


@pytest.mark.parametrize("mutate,message", [(m, s) for _, m, s in PROTO_BAD],
                         ids=[i for i, _, _ in PROTO_BAD])
def test_proto_check_rejects(mutate, message):
    doc = good_doc()
    mutate(doc)
    with pytest.raises(AssertionError) as e:
        otlp_proto_check(doc)
    assert message in str(e.value), str(e.value)


# OpenTelemetry's own JS SDK ends two spans and serializes them as OTLP JSON:
# the validator must accept what the reference exporter sends.
_SDK_EXPORT = """
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } =
    require("@opentelemetry/sdk-trace-base");
const { resourceFromAttributes } = require("@opentelemetry/resources");
const { JsonTraceSerializer } = require("@opentelemetry/otlp-transformer");
const api = require("@opentelemetry/api");
const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": "ficus" }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
});
const tracer = provider.getTracer("ficus", "0.1.0");
const root = tracer.startSpan("GET /api", { kind: api.SpanKind.SERVER, attributes: {
    "http.response.status_code": 200, "ficus.route": "api", "ficus.fallback": false,
    "ficus.weight": 0.5, "ficus.tags": ["a", "b"] } });
const child = tracer.startSpan("upstream", { kind: api.SpanKind.CLIENT },
    api.trace.setSpan(api.context.active(), root));
child.addEvent("retry", { "ficus.attempt": 2 });
child.setStatus({ code: api.SpanStatusCode.ERROR, message: "upstream timeout" });
child.end();
root.end();
process.stdout.write(Buffer.from(
    JsonTraceSerializer.serializeRequest(exporter.getFinishedSpans())).toString());
"""


def _int_values_as_strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "intValue" and isinstance(v, int):
                obj[k] = str(v)
            else:
                _int_values_as_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            _int_values_as_strings(v)


def test_opentelemetry_sdk_export_passes_both_checks():
    why = otlp_proto_check_available()
    if why:
        pytest.skip(why)
    p = subprocess.run(["node", "-e", _SDK_EXPORT], capture_output=True, text=True, timeout=30,
                       cwd=otlp_proto_dir())
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [s["name"] for s in flatten_spans(doc)] == ["upstream", "GET /api"], doc
    # The JS SDK writes int64 attribute values as JSON numbers, which proto3
    # JSON parsers accept but the OTLP JSON encoding does not produce (they
    # lose precision past 2**53); both checks hold ficus to strings.
    with pytest.raises(AssertionError, match="intValue: expected a decimal string"):
        validate_otlp_json(doc)
    _int_values_as_strings(doc)
    validate_otlp_json(doc)
    otlp_proto_check(doc)


def test_proto_check_rejects_non_json():
    with pytest.raises(AssertionError, match="not JSON"):
        otlp_proto_check(b"{nope")


# --- the receiver ---


@pytest.fixture
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


def post(r, body, ctype="application/json", path=None, timeout=5.0, headers=None, conn=None):
    """(status, content-type, body) of one POST to the receiver."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", r.port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        c.request("POST", path or r.path, body=data,
                  headers={"Content-Type": ctype, **(headers or {})})
        resp = c.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        if own:
            c.close()


def test_receiver_accepts_and_flattens(receiver):
    assert receiver.endpoint == f"http://127.0.0.1:{receiver.port}/v1/traces"
    assert post(receiver, good_doc()) == (200, "application/json", b"{}")
    assert receiver.requests == [good_doc()]
    assert receiver.statuses == [200]
    assert receiver.headers[0]["content-type"] == "application/json"
    spans = receiver.spans()
    assert [s["spanId"] for s in spans] == [ROOT, CHILD]
    assert spans[0]["resource"]["service.name"] == "ficus"
    receiver.validate_all()


def test_receiver_keep_alive_gzip_and_chunked(receiver):
    c = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        assert post(receiver, good_doc(), conn=c)[0] == 200
        zipped = gzip.compress(json.dumps(good_doc()).encode())
        assert post(receiver, zipped, headers={"Content-Encoding": "gzip"}, conn=c)[0] == 200
        c.putrequest("POST", "/v1/traces")
        c.putheader("Content-Type", "application/json; charset=utf-8")
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        data = json.dumps(good_doc()).encode()
        for part in (data[:10], data[10:]):
            c.send(b"%x\r\n%s\r\n" % (len(part), part))
        c.send(b"0\r\n\r\n")
        resp = c.getresponse()
        assert (resp.status, resp.read()) == (200, b"{}")
    finally:
        c.close()
    assert receiver.requests == [good_doc()] * 3
    assert len(receiver.spans()) == 6


def test_receiver_refuses_what_is_not_an_otlp_json_export(receiver):
    assert post(receiver, good_doc(), ctype="application/x-protobuf")[0] == 415
    assert post(receiver, good_doc(), path="/v1/metrics")[0] == 404
    assert post(receiver, b"{not json")[0] == 400
    c = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        c.request("GET", "/v1/traces")
        assert c.getresponse().status == 405
    finally:
        c.close()
    assert receiver.requests == []
    reasons = [r for r, _, _ in receiver.rejected]
    assert len(reasons) == 4, reasons
    assert "application/x-protobuf" in reasons[0] and "/v1/metrics" in reasons[1]


def test_receiver_error_status_keeps_body_but_not_spans(receiver):
    receiver.respond(status=503)
    status, ctype, body = post(receiver, good_doc())
    assert (status, ctype) == (503, "application/json")
    assert json.loads(body)["code"] == 14
    assert receiver.statuses == [503]
    assert receiver.spans() == []
    assert len(receiver.spans(accepted_only=False)) == 2
    receiver.respond(status=200)
    assert post(receiver, good_doc())[0] == 200
    assert receiver.statuses == [503, 200]
    assert len(receiver.spans()) == 2


def test_receiver_delay(receiver):
    receiver.respond(delay=0.3)
    t0 = time.monotonic()
    assert post(receiver, good_doc())[0] == 200
    assert time.monotonic() - t0 >= 0.29  # a timed wait may wake a hair early


def test_receiver_hang_and_release(receiver):
    receiver.respond(hang=True)
    c = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=0.5)
    try:
        with pytest.raises(socket.timeout):
            post(receiver, good_doc(), conn=c)
        assert receiver.wait_for_requests(1, 5) == [good_doc()]
        assert receiver.statuses == [None] and receiver.spans() == []
        c.sock.settimeout(5)
        receiver.release()
        assert c.sock.recv(1) == b""  # closed without an answer
    finally:
        c.close()


def test_receiver_drop(receiver):
    receiver.respond(drop=True)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        post(receiver, good_doc())
    assert receiver.statuses == [None]


def test_receiver_stop_lets_a_hung_export_go():
    r = OtlpReceiver(hang=True).start()
    c = socket.create_connection(("127.0.0.1", r.port), timeout=5)
    try:
        data = json.dumps(good_doc()).encode()
        c.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        assert len(r.wait_for_requests(1, 5)) == 1
        r.stop()
        assert c.recv(1) == b""
    finally:
        c.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", r.port), timeout=1).close()


def test_wait_for_spans_wakes_on_a_late_export(receiver):
    t = threading.Timer(0.2, lambda: post(receiver, good_doc()))
    t.start()
    try:
        assert len(receiver.wait_for_spans(2, timeout=10)) == 2
    finally:
        t.join()
    assert len(receiver.wait_for_spans(3, timeout=0.1)) == 2  # what there is


def test_dead_endpoint_refuses():
    url = dead_endpoint()
    host, port = url.split("//")[1].split("/")[0].split(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2).close()


def test_validate_all_names_the_bad_export(receiver):
    assert post(receiver, good_doc())[0] == 200
    bad = good_doc()
    span(bad)["kind"] = "SPAN_KIND_SERVER"
    assert post(receiver, bad)[0] == 200  # the receiver keeps it; the validator judges
    assert post(receiver, [])[0] == 200
    assert len(receiver.spans()) == 4  # malformed bodies flatten as far as they go
    with pytest.raises(AssertionError, match=r"^export #1: .*spans\[0\]\.kind"):
        receiver.validate_all()
