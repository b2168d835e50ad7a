"""For the trace tests: an in-process OTLP/HTTP JSON collector that keeps every
export and can answer with an error, slowly or never; a strict validator of the
OTLP JSON trace encoding; and an independent check that maps a body onto the OTLP
protobuf schema with OpenTelemetry's generated code (tests/otlp/check.js)."""

import base64
import gzip
import http.server
import json
import re
import shutil
import socket
import subprocess
import threading
import time

from .procs import free_port, repo_root

# --- the receiver -----------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Many exports in a row: a short backlog would turn a burst into refusals.
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # a client that hangs up mid-answer is no news; keep stderr quiet


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real collector offers
    timeout = 60  # an idle client connection is dropped after this (seconds)

    def setup(self):
        super().setup()
        self.server.owner._opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._closed(self.connection)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # the tests look at .requests, not at a log on stderr

    def _answer(self, status, body=b"", content_type="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):  # noqa: N802 - http.server's naming
        owner = self.server.owner
        raw = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path.split("?", 1)[0] != owner.path:
            owner._reject(f"POST to {self.path!r}, not {owner.path}", headers, raw)
            self._answer(404, b'{"code":5,"message":"no such path"}')
            return
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            owner._reject(f"Content-Type {headers.get('content-type')!r}, not application/json",
                          headers, raw)
            self._answer(415, b'{"code":3,"message":"only application/json"}')
            return
        try:
            if headers.get("content-encoding", "identity").lower() == "gzip":
                raw = gzip.decompress(raw)
            body = json.loads(raw)
        except (OSError, EOFError, ValueError) as e:
            owner._reject(f"undecodable body ({e}): {raw[:200]!r}", headers, raw)
            self._answer(400, b'{"code":3,"message":"bad JSON"}')
            return
        status, delay, mode, gate = owner._behaviour()
        owner._record(body, headers, status if mode == "answer" else None)
        if mode != "answer":
            if mode == "hang":
                # A collector that reads the export and never answers: hold
                # the connection until release() or stop() lets go of it.
                gate.wait()
            self.close_connection = True
            return
        if delay:
            owner._stopping.wait(delay)
        if 200 <= status < 300:
            self._answer(status, b"{}")
        else:
            # The OTLP failure body: a google.rpc.Status, 14 = UNAVAILABLE.
            msg = json.dumps({"code": 14, "message": f"configured answer {status}"}).encode()
            self._answer(status, msg)

    def do_GET(self):  # noqa: N802
        self._method_not_allowed()

    def do_PUT(self):  # noqa: N802
        self._method_not_allowed()

    def _method_not_allowed(self):
        owner = self.server.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        owner._reject(f"{self.command} {self.path}", headers, b"")
        self._answer(405, b'{"code":12,"message":"POST only"}', extra=[("Allow", "POST")])


class OtlpReceiver:
    """An OTLP/HTTP JSON trace collector on 127.0.0.1:<free port>.

    Accepts POST /v1/traces with Content-Type application/json (gzip or
    identity, Content-Length or chunked), keeps each decoded body and answers
    200 `{}`; respond() makes it answer another status, answer after a delay,
    hang (read the export, never answer) or drop (read it, close at once) - a
    slow or broken collector; dead_endpoint() is one where nobody listens. Use
    as a context manager or start()/stop(). All accessors are thread-safe.

      .endpoint     "http://127.0.0.1:PORT/v1/traces", for tracing.otlp_endpoint
      .requests     every decoded body received, whatever was answered
      .statuses     the status answered to each of them (None: hung or dropped)
      .headers      each request's headers, names lower-cased
      .rejected     (reason, headers, raw bytes) of requests refused before decoding
      .spans()      the spans of the bodies answered 2xx, flattened (see spans)
    """

    def __init__(self, status=200, delay=0.0, hang=False, drop=False, path="/v1/traces"):
        self.path = path
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._gate = threading.Event()
        self._bodies = []
        self._statuses = []
        self._headers = []
        self._rejected = []
        self._conns = set()
        self._server = None
        self._thread = None
        self.respond(status=status, delay=delay, hang=hang, drop=drop)

    # --- lifecycle ---

    def start(self):
        """Binds a free loopback port and serves in a background thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.endpoint = f"http://{self.addr}{self.path}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"otlp-receiver-{self.port}")
        self._thread.start()
        return self

    def stop(self):
        """Stops serving, lets hung answers go and closes every connection."""
        if self._server is None:
            return
        self._stopping.set()
        with self._cond:
            self._gate.set()
        self._server.shutdown()
        self._server.server_close()
        with self._cond:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- behaviour ---

    def respond(self, status=200, delay=0.0, hang=False, drop=False):
        """How later exports are answered: with status after delay seconds;
        never (hang: the connection is held until release() or stop()); or
        not at all (drop: the connection is closed once the body is read)."""
        if hang and drop:
            raise ValueError("hang and drop exclude each other")
        with self._cond:
            self._status, self._delay = int(status), float(delay)
            self._mode = "hang" if hang else "drop" if drop else "answer"

    def release(self):
        """Lets every hung export go (its connection is closed unanswered);
        later exports are answered as respond() says (hang stays on)."""
        with self._cond:
            self._gate.set()
            self._gate = threading.Event()

    def _behaviour(self):
        with self._cond:
            return self._status, self._delay, self._mode, self._gate

    # --- records (called from handler threads) ---

    def _opened(self, conn):
        with self._cond:
            self._conns.add(conn)

    def _closed(self, conn):
        with self._cond:
            self._conns.discard(conn)

    def _record(self, body, headers, status):
        with self._cond:
            self._bodies.append(body)
            self._headers.append(headers)
            self._statuses.append(status)
            self._cond.notify_all()

    def _reject(self, reason, headers, raw):
        with self._cond:
            self._rejected.append((reason, headers, raw))
            self._cond.notify_all()

    # --- accessors ---

    @property
    def requests(self):
        with self._cond:
            return list(self._bodies)

    @property
    def statuses(self):
        with self._cond:
            return list(self._statuses)

    @property
    def headers(self):
        with self._cond:
            return list(self._headers)

    @property
    def rejected(self):
        with self._cond:
            return list(self._rejected)

    def spans(self, accepted_only=True):
        """Every span of the exports answered 2xx (of all exports received
        when not accepted_only: a retrying exporter may send one twice), as
        dicts: the span's own OTLP JSON keys plus "resource" (its resource's
        attributes as {key: python value}), "scope" (the scope object) and
        "attrs" (the span's attributes as {key: python value}). Validate the
        bodies (validate_all) for precise messages about malformed ones."""
        with self._cond:
            bodies = [b for b, s in zip(self._bodies, self._statuses)
                      if not accepted_only or (s is not None and 200 <= s < 300)]
        return [s for b in bodies for s in flatten_spans(b)]

    def wait_for_requests(self, n, timeout):
        """At least n bodies received, or what there is once timeout passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._bodies) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self._bodies)

    def wait_for_spans(self, n, timeout):
        """At least n accepted spans (see spans()), or what there is once
        timeout (seconds, not scaled here) passes."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.spans()
            left = deadline - time.monotonic()
            if len(got) >= n or left <= 0:
                return got
            with self._cond:
                self._cond.wait(min(left, 0.2))

    def validate_all(self):
        """validate_otlp_json on every body received; raises on the first bad one."""
        for i, body in enumerate(self.requests):
            try:
                validate_otlp_json(body)
            except AssertionError as e:
                raise AssertionError(f"export #{i}: {e}") from None


def dead_endpoint(path="/v1/traces"):
    """An OTLP endpoint on a loopback port nobody listens on (a dead collector:
    connections are refused)."""
    return f"http://127.0.0.1:{free_port()}{path}"


def anyvalue_to_python(v):
    """An OTLP JSON AnyValue as a Python value (intValue as int, bytesValue
    as bytes, arrays as lists, kvlists as dicts); None for an empty one."""
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return v["boolValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"])
    if "arrayValue" in v:
        return [anyvalue_to_python(x) for x in v["arrayValue"].get("values", [])]
    if "kvlistValue" in v:
        return attributes_to_dict(v["kvlistValue"].get("values", []))
    return None


def attributes_to_dict(attrs):
    """[{key, value}] as {key: python value}; malformed entries are skipped."""
    return {kv["key"]: anyvalue_to_python(kv.get("value") or {})
            for kv in attrs or [] if isinstance(kv, dict) and "key" in kv}


def flatten_spans(body):
    """The spans of one ExportTraceServiceRequest body (see OtlpReceiver.spans)."""
    def dicts(v):
        return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []

    out = []
    if not isinstance(body, dict):
        return out
    for rs in dicts(body.get("resourceSpans")):
        resource = attributes_to_dict((rs.get("resource") or {}).get("attributes"))
        for ss in dicts(rs.get("scopeSpans")):
            scope = ss.get("scope") or {}
            for span in dicts(ss.get("spans")):
                out.append({**span, "resource": resource, "scope": scope,
                            "attrs": attributes_to_dict(span.get("attributes"))})
    return out


# --- the validator ----------------------------------------------------------------
# Field tables follow opentelemetry/proto/trace/v1/trace.proto, common/v1/common.proto
# and resource/v1/resource.proto; the JSON rules are the OTLP spec's "JSON Protobuf
# Encoding": lowerCamelCase keys only, trace and span ids as hex (not base64), enums
# as integers, 64-bit integers as decimal strings.

_U32 = 2**32 - 1
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_UINT = re.compile(r"^(0|[1-9][0-9]*)$")
_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
_B64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")


def _fail(path, msg):
    raise AssertionError(f"{path or 'body'}: {msg}")


def _camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _fields(obj, path, allowed, required=()):
    """Checks obj is a JSON object whose keys are all among allowed."""
    if not isinstance(obj, dict):
        _fail(path, f"expected a JSON object, got {type(obj).__name__}: {_short(obj)}")
    for k in obj:
        if k in allowed:
            continue
        if "_" in k and _camel(k) in allowed:
            _fail(f"{path}.{k}", f"snake_case key: OTLP JSON uses lowerCamelCase {_camel(k)!r}")
        _fail(f"{path}.{k}", f"unknown key (allowed here: {', '.join(sorted(allowed))})")
    for k in required:
        if k not in obj:
            _fail(path, f"missing required key {k!r}")


def _short(v):
    text = json.dumps(v) if not isinstance(v, bytes) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _string(v, path, nonempty=False):
    if not isinstance(v, str):
        _fail(path, f"expected a string, got {type(v).__name__}: {_short(v)}")
    if nonempty and not v:
        _fail(path, "must not be empty")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        # json.loads lets "\udc80" through, but a protobuf string is UTF-8.
        _fail(path, f"not valid Unicode (a lone surrogate escape?): {v!r}")


def _u32(v, path):
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(path, f"expected an integer (JSON number), got {_short(v)}")
    if not 0 <= v <= _U32:
        _fail(path, f"{v} is outside uint32")


def _enum(v, path, lo, hi, name):
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(path, f"{name} must be an integer {lo}..{hi} (OTLP JSON encodes enums as "
                    f"integers), got {_short(v)}")
    if not lo <= v <= hi:
        _fail(path, f"{name} {v} is outside {lo}..{hi}")


def _uint64_string(v, path):
    if not isinstance(v, str):
        _fail(path, f"expected a decimal string (64-bit integers are strings in OTLP JSON), "
                    f"got {type(v).__name__}: {_short(v)}")
    if not _UINT.match(v):
        _fail(path, f"not an unsigned decimal integer: {v!r}")
    if int(v) >= 2**64:
        _fail(path, f"{v} is outside uint64")
    return int(v)


def _id(v, path, pattern, digits):
    if not isinstance(v, str) or not pattern.match(v):
        _fail(path, f"expected {digits} lowercase hex digits, got {_short(v)}")
    if set(v) == {"0"}:
        _fail(path, "all zeros is an invalid id")


def _list(v, path, each, nonempty=False):
    if not isinstance(v, list):
        _fail(path, f"expected a JSON array, got {type(v).__name__}: {_short(v)}")
    if nonempty and not v:
        _fail(path, "must not be empty")
    for i, item in enumerate(v):
        each(item, f"{path}[{i}]")


_ANY_KEYS = {"stringValue", "boolValue", "intValue", "doubleValue", "arrayValue",
             "kvlistValue", "bytesValue"}


def _any_value(v, path):
    _fields(v, path, _ANY_KEYS)
    if len(v) != 1:
        what = "none" if not v else ", ".join(sorted(v))
        _fail(path, f"an AnyValue holds exactly one of {', '.join(sorted(_ANY_KEYS))}; got {what}")
    (k, x), = v.items()
    p = f"{path}.{k}"
    if k == "stringValue":
        _string(x, p)
    elif k == "boolValue":
        if not isinstance(x, bool):
            _fail(p, f"expected true or false, got {_short(x)}")
    elif k == "intValue":
        if not isinstance(x, str):
            _fail(p, f"expected a decimal string (int64 is a string in OTLP JSON), got {_short(x)}")
        if not _INT.match(x) or not -(2**63) <= int(x) < 2**63:
            _fail(p, f"not an int64 decimal string: {x!r}")
    elif k == "doubleValue":
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            _fail(p, f"expected a JSON number, got {_short(x)}")
    elif k == "bytesValue":
        if not isinstance(x, str) or not _B64.match(x):
            _fail(p, f"expected base64, got {_short(x)}")
    elif k == "arrayValue":
        _fields(x, p, {"values"})
        _list(x.get("values", []), f"{p}.values", _any_value)
    else:
        _fields(x, p, {"values"})
        _attributes(x.get("values", []), f"{p}.values")


def _key_value(kv, path):
    _fields(kv, path, {"key", "value"}, required=("key", "value"))
    _string(kv["key"], f"{path}.key", nonempty=True)
    _any_value(kv["value"], f"{path}.value")


def _attributes(attrs, path):
    _list(attrs, path, _key_value)
    seen = {}
    for i, kv in enumerate(attrs):
        if kv["key"] in seen:
            _fail(f"{path}[{i}].key", f"duplicate key {kv['key']!r} (also at [{seen[kv['key']]}])")
        seen[kv["key"]] = i


def _entity_ref(e, path):
    _fields(e, path, {"schemaUrl", "type", "idKeys", "descriptionKeys"})
    for k in ("schemaUrl", "type"):
        if k in e:
            _string(e[k], f"{path}.{k}")
    for k in ("idKeys", "descriptionKeys"):
        if k in e:
            _list(e[k], f"{path}.{k}", _string)


def _resource(r, path):
    _fields(r, path, {"attributes", "droppedAttributesCount", "entityRefs"},
            required=("attributes",))
    _attributes(r["attributes"], f"{path}.attributes")
    if "droppedAttributesCount" in r:
        _u32(r["droppedAttributesCount"], f"{path}.droppedAttributesCount")
    if "entityRefs" in r:
        _list(r["entityRefs"], f"{path}.entityRefs", _entity_ref)
    names = [kv["value"] for kv in r["attributes"] if kv["key"] == "service.name"]
    if not names:
        _fail(f"{path}.attributes", "no service.name attribute")
    if not isinstance(names[0].get("stringValue"), str) or not names[0]["stringValue"]:
        _fail(f"{path}.attributes",
              f"service.name must be a non-empty stringValue, got {_short(names[0])}")


def _scope(s, path):
    _fields(s, path, {"name", "version", "attributes", "droppedAttributesCount"})
    for k in ("name", "version"):
        if k in s:
            _string(s[k], f"{path}.{k}")
    if "attributes" in s:
        _attributes(s["attributes"], f"{path}.attributes")
    if "droppedAttributesCount" in s:
        _u32(s["droppedAttributesCount"], f"{path}.droppedAttributesCount")


def _event(e, path):
    _fields(e, path, {"timeUnixNano", "name", "attributes", "droppedAttributesCount"},
            required=("timeUnixNano", "name"))
    _uint64_string(e["timeUnixNano"], f"{path}.timeUnixNano")
    _string(e["name"], f"{path}.name", nonempty=True)
    if "attributes" in e:
        _attributes(e["attributes"], f"{path}.attributes")
    if "droppedAttributesCount" in e:
        _u32(e["droppedAttributesCount"], f"{path}.droppedAttributesCount")


def _link(link, path):
    _fields(link, path, {"traceId", "spanId", "traceState", "attributes",
                         "droppedAttributesCount", "flags"}, required=("traceId", "spanId"))
    _id(link["traceId"], f"{path}.traceId", _HEX32, 32)
    _id(link["spanId"], f"{path}.spanId", _HEX16, 16)
    if "traceState" in link:
        _string(link["traceState"], f"{path}.traceState")
    if "attributes" in link:
        _attributes(link["attributes"], f"{path}.attributes")
    for k in ("droppedAttributesCount", "flags"):
        if k in link:
            _u32(link[k], f"{path}.{k}")


def _status(s, path):
    _fields(s, path, {"code", "message"})
    if "code" in s:
        _enum(s["code"], f"{path}.code", 0, 2, "status code")
    if "message" in s:
        _string(s["message"], f"{path}.message")


_SPAN_KEYS = {"traceId", "spanId", "traceState", "parentSpanId", "flags", "name", "kind",
              "startTimeUnixNano", "endTimeUnixNano", "attributes", "droppedAttributesCount",
              "events", "droppedEventsCount", "links", "droppedLinksCount", "status"}


def _span(s, path):
    _fields(s, path, _SPAN_KEYS,
            required=("traceId", "spanId", "name", "startTimeUnixNano", "endTimeUnixNano"))
    _id(s["traceId"], f"{path}.traceId", _HEX32, 32)
    _id(s["spanId"], f"{path}.spanId", _HEX16, 16)
    if "parentSpanId" in s:
        # proto3 leaves an empty bytes field out: a root span has no key at all.
        _id(s["parentSpanId"], f"{path}.parentSpanId", _HEX16, 16)
        if s["parentSpanId"] == s["spanId"]:
            _fail(f"{path}.parentSpanId", "equals the span's own spanId")
    if "traceState" in s:
        _string(s["traceState"], f"{path}.traceState")
    if "flags" in s:
        _u32(s["flags"], f"{path}.flags")
    _string(s["name"], f"{path}.name", nonempty=True)
    if "kind" in s:
        _enum(s["kind"], f"{path}.kind", 0, 5, "span kind")
    start = _uint64_string(s["startTimeUnixNano"], f"{path}.startTimeUnixNano")
    end = _uint64_string(s["endTimeUnixNano"], f"{path}.endTimeUnixNano")
    if start == 0:
        _fail(f"{path}.startTimeUnixNano", "is zero (unset)")
    if end < start:
        _fail(f"{path}.endTimeUnixNano", f"{end} is before startTimeUnixNano {start}")
    if "attributes" in s:
        _attributes(s["attributes"], f"{path}.attributes")
    if "events" in s:
        _list(s["events"], f"{path}.events", _event)
    if "links" in s:
        _list(s["links"], f"{path}.links", _link)
    for k in ("droppedAttributesCount", "droppedEventsCount", "droppedLinksCount"):
        if k in s:
            _u32(s[k], f"{path}.{k}")
    if "status" in s:
        _status(s["status"], f"{path}.status")


def validate_otlp_json(body, allow_empty=False):
    """Checks an OTLP/HTTP JSON ExportTraceServiceRequest (a dict, or its JSON
    text or bytes) field by field; raises AssertionError naming the first bad
    field's path. Empty resourceSpans / spans lists are errors unless
    allow_empty (an exporter has no reason to send them)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError as e:
            raise AssertionError(f"body: not JSON: {e}") from None
    _fields(body, "", {"resourceSpans"}, required=("resourceSpans",))

    def scope_spans(ss, path):
        _fields(ss, path, {"scope", "spans", "schemaUrl"}, required=("spans",))
        if "scope" in ss:
            _scope(ss["scope"], f"{path}.scope")
        if "schemaUrl" in ss:
            _string(ss["schemaUrl"], f"{path}.schemaUrl")
        _list(ss["spans"], f"{path}.spans", _span, nonempty=not allow_empty)

    def resource_spans(rs, path):
        _fields(rs, path, {"resource", "scopeSpans", "schemaUrl"},
                required=("resource", "scopeSpans"))
        _resource(rs["resource"], f"{path}.resource")
        if "schemaUrl" in rs:
            _string(rs["schemaUrl"], f"{path}.schemaUrl")
        _list(rs["scopeSpans"], f"{path}.scopeSpans", scope_spans, nonempty=not allow_empty)

    _list(body["resourceSpans"], "resourceSpans", resource_spans, nonempty=not allow_empty)


# --- the protobuf check -----------------------------------------------------------


def otlp_proto_dir():
    return repo_root() / "tests" / "otlp"


def otlp_proto_check_available():
    """Why otlp_proto_check cannot run (a string), or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (otlp_proto_dir() / "node_modules" / "@opentelemetry" / "otlp-transformer").is_dir():
        return f"no node_modules in {otlp_proto_dir()} (run: npm ci --ignore-scripts there)"
    return None


def otlp_proto_check(body, timeout=30.0):
    """Maps body (dict, JSON text or bytes) onto the OTLP protobuf
    ExportTraceServiceRequest with OpenTelemetry's generated code and back
    (tests/otlp/check.js); raises AssertionError with node's message when a
    field does not map. Skips the calling test when node_modules is missing."""
    why = otlp_proto_check_available()
    if why:
        import pytest

        pytest.skip(f"OTLP protobuf check unavailable: {why}")
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    p = subprocess.run(["node", str(otlp_proto_dir() / "check.js")], input=body,
                       capture_output=True, timeout=timeout, cwd=otlp_proto_dir())
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).decode("utf-8", "replace").strip()
        raise AssertionError(msg or f"check.js exited {p.returncode}")
