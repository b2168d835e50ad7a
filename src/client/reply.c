/* Answers read from bytes; see reply.h. A head is collected until its blank
 * line and then parsed whole (as http/parser wants), so the header spans
 * point into raw and stay valid until the next reset. */
#include "client/reply.h"

#include <string.h>

#include "core/errors.h"

/* Chunked input decoded per step: the output of a step fits in a sink this
 * much larger than its input. */
#define CHUNKED_STEP_BYTES 4096

void reply_init(reply_t *r, size_t max_head_bytes, size_t max_body_bytes, reply_body_t mode)
{
    memset(r, 0, sizeof *r);
    http_parser_init_response(&r->parser);
    buf_init(&r->raw, max_head_bytes);
    buf_init(&r->body, max_body_bytes);
    r->max_head_bytes = max_head_bytes;
    r->body_mode = mode;
}

void reply_deinit(reply_t *r)
{
    buf_deinit(&r->raw);
    buf_deinit(&r->body);
}

void reply_reset(reply_t *r)
{
    http_parser_reset(&r->parser);
    buf_reset(&r->raw);
    buf_reset(&r->body);
    r->head.status = 0;
    r->head.n_headers = 0;
    r->bytes_in = 0;
    r->state = REPLY_HEAD;
    r->keep_alive = false;
    r->error = NULL;
}

static void done(reply_t *r, bool keep_alive)
{
    r->state = REPLY_DONE;
    r->keep_alive = keep_alive;
}

static bool wants_body(const reply_t *r)
{
    if (r->body_mode == REPLY_BODY_NONE)
        return false;
    return r->body_mode == REPLY_BODY_ALL || (r->head.status >= 200 && r->head.status <= 299);
}

static long feed_body(reply_t *r, const char *data, size_t len);

/* Collects the head; once its blank line is in, parses it. Returns the
 * bytes of data used. */
static long feed_head(reply_t *r, const char *data, size_t len)
{
    size_t old = r->raw.len, room = r->max_head_bytes - old;
    size_t take = len < room ? len : room;
    if (buf_append(&r->raw, data, take) != 0) {
        r->error = "out of memory";
        return FE_NOMEM;
    }
    size_t end = http_head_end(r->raw.data, r->raw.len, old);
    if (end == 0) {
        if (r->raw.len < r->max_head_bytes)
            return (long)take;
        r->error = "response head too large";
        return FE_TOOBIG;
    }
    r->raw.len = end; /* what follows the head is fed again as the body */
    int ev = 0;
    if (http_parser_feed(&r->parser, &r->head, r->raw.data, end, &ev) < 0) {
        r->error = http_parser_error_reason(&r->parser);
        return FE_PARSE;
    }
    if (r->head.status < 200 && r->head.status != 101) {
        /* An interim answer (100 Continue, 103 Early Hints): the real one follows. */
        http_parser_reset(&r->parser);
        buf_reset(&r->raw);
        r->head.status = 0;
    } else if (ev & HTTP_EV_END) {
        done(r, r->head.keep_alive);
    } else if (!wants_body(r)) {
        done(r, false);
    } else {
        r->state = REPLY_BODY;
        /* A body of Content-Length 0 ends without a byte of its own. */
        if (feed_body(r, r->raw.data + end, 0) < 0)
            return FE_PARSE;
    }
    return (long)(end - old);
}

/* Appends body bytes; past the bound, what fits is kept. */
static int keep(reply_t *r, const char *p, size_t n)
{
    size_t room = r->body.limit > r->body.len ? r->body.limit - r->body.len : 0;
    int rc = buf_append(&r->body, p, n < room ? n : room);
    if (rc == 0 && n > room)
        rc = FE_TOOBIG;
    if (rc != 0)
        r->error = rc == FE_TOOBIG ? "response body too large" : "out of memory";
    return rc;
}

static long feed_body(reply_t *r, const char *data, size_t len)
{
    char out[CHUNKED_STEP_BYTES + CHUNKED_OUT_SLACK];
    bool chunked = http_parser_chunked_body(&r->parser);
    if (chunked) {
        len = len < CHUNKED_STEP_BYTES ? len : CHUNKED_STEP_BYTES;
        http_parser_set_sink(&r->parser, out, sizeof out);
    }
    int ev = 0;
    long k = http_parser_feed(&r->parser, NULL, data, len, &ev);
    if (k < 0) {
        r->error = http_parser_error_reason(&r->parser);
        return FE_PARSE;
    }
    int rc = chunked ? keep(r, out, r->parser.sink_len) : keep(r, data, (size_t)k);
    if (rc != 0)
        return rc;
    if (ev & HTTP_EV_END)
        done(r, r->head.keep_alive);
    else if (k == 0 && len > 0) {
        r->error = "the body reader made no progress";
        return FE_PARSE;
    }
    return k;
}

long reply_feed(reply_t *r, const char *data, size_t len)
{
    size_t used = 0;
    r->bytes_in += len;
    while (r->state != REPLY_DONE && used < len) {
        long k = r->state == REPLY_HEAD ? feed_head(r, data + used, len - used)
                                        : feed_body(r, data + used, len - used);
        if (k < 0)
            return k;
        used += (size_t)k;
    }
    return (long)used;
}

int reply_finish(reply_t *r)
{
    if (r->state == REPLY_DONE)
        return 0;
    if (r->state == REPLY_BODY && http_parser_body_until_eof(&r->parser) &&
        http_parser_finish(&r->parser) == 0) {
        done(r, false);
        return 0;
    }
    r->error = "connection closed before the response was complete";
    return FE_PARSE;
}

const http_header_t *reply_header(const reply_t *r, const char *lname)
{
    if (r->state == REPLY_HEAD)
        return NULL;
    return http_header_find(r->head.headers, r->head.n_headers, lname, strlen(lname));
}
