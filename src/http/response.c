/* JSON error responses and reason phrases; see response.h. */
#include "http/response.h"

#include <stdio.h>
#include <string.h>

#include "core/json.h"

const char *http_status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        break;
    }
    if (status >= 100 && status < 200)
        return "Informational";
    if (status < 300)
        return "Success";
    if (status < 400)
        return "Redirection";
    if (status < 500)
        return "Client Error";
    return "Server Error";
}

const char *http_status_code_name(int status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "no_route";
    case 408:
        return "request_timeout";
    case 413:
        return "body_too_large";
    case 429:
        return "too_many_requests";
    case 431:
        return "header_too_large";
    case 500:
        return "internal_error";
    case 501:
        return "not_implemented";
    case 502:
        return "bad_gateway";
    case 503:
        return "unavailable";
    case 504:
        return "gateway_timeout";
    case 505:
        return "http_version_not_supported";
    default:
        return "error";
    }
}

int http_grpc_status(int status)
{
    switch (status) {
    case 400:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
    case 405:
    case 501:
        return 12; /* UNIMPLEMENTED */
    case 408:
    case 504:
        return 4; /* DEADLINE_EXCEEDED */
    case 413:
    case 429:
    case 431:
        return 8; /* RESOURCE_EXHAUSTED */
    case 500:
        return 13;
    case 502:
    case 503:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

/* A trailers-only gRPC answer: 200 with the status and the message
 * percent-encoded as gRPC wants (bytes outside 0x20-0x7E, and '%'). */
static size_t grpc_error_format(const http_error_t *e, char *out, size_t cap)
{
    const char *m = e->message ? e->message : http_status_reason(e->status);
    char msg[3 * 256 + 1];
    size_t k = 0;
    for (size_t i = 0; i < 256 && m[i]; i++) {
        unsigned char c = (unsigned char)m[i];
        if (c < 0x20 || c > 0x7e || c == '%') {
            k += (size_t)snprintf(msg + k, sizeof msg - k, "%%%02X", c);
        } else {
            msg[k++] = (char)c;
        }
    }
    msg[k] = 0;
    int n = snprintf(out, cap,
                     "HTTP/1.1 200 OK\r\n"
                     "Content-Type: application/grpc\r\n"
                     "grpc-status: %d\r\n"
                     "grpc-message: %s\r\n"
                     "Content-Length: 0\r\n"
                     "X-Request-Id: %.*s\r\n"
                     "%s"
                     "\r\n",
                     http_grpc_status(e->status), msg, (int)(e->request_id ? e->request_id_len : 0),
                     e->request_id ? e->request_id : "", e->close ? "Connection: close\r\n" : "");
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t http_error_format(const http_error_t *e, char *out, size_t cap)
{
    if (e->grpc)
        return grpc_error_format(e, out, cap);
    char body[2048];
    char msg[1536];
    char rid[800];
    const char *m = e->message ? e->message : http_status_reason(e->status);
    size_t mn = strlen(m);
    if (mn > 255)
        mn = 255; /* every byte escaped still fits msg */
    size_t used;
    size_t mlen = json_escape(msg, sizeof msg, m, mn, &used);
    size_t rlen =
        e->request_id ? json_escape(rid, sizeof rid, e->request_id, e->request_id_len, &used) : 0;
    int blen = snprintf(
        body, sizeof body, "{\"error\":\"%s\",\"message\":\"%.*s\",\"request_id\":\"%.*s\"}\n",
        e->code ? e->code : http_status_code_name(e->status), (int)mlen, msg, (int)rlen, rid);
    if (blen < 0 || (size_t)blen >= sizeof body)
        return 0;
    char retry[48] = "";
    if (e->retry_after_s)
        snprintf(retry, sizeof retry, "Retry-After: %u\r\n", e->retry_after_s);
    char head[1024];
    int n =
        snprintf(head, sizeof head,
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %d\r\n"
                 "X-Request-Id: %.*s\r\n"
                 "%s%s"
                 "\r\n",
                 e->status, http_status_reason(e->status), blen,
                 (int)(e->request_id ? e->request_id_len : 0), e->request_id ? e->request_id : "",
                 retry, e->close ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof head)
        return 0;
    size_t total = (size_t)n + (e->head_only ? 0 : (size_t)blen);
    if (total > cap)
        return 0;
    memcpy(out, head, (size_t)n);
    if (!e->head_only)
        memcpy(out + n, body, (size_t)blen);
    return total;
}
