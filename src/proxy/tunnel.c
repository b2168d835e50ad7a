/* Tunnels after a 101; see tunnel.h. */
#include "proxy/tunnel.h"

#include <sys/socket.h>

#include "proxy/exchange.h"

static void touch(request_t *req) { req->tun_last_ms = uv_now(req->pw->loop); }

/* Passes a half-close on once what was queued for that side is written. */
static void shut_write(stream_t *s, uint8_t *pending)
{
    if (stream_write_pending(s)) {
        *pending = 1;
        return;
    }
    *pending = 0;
    shutdown(stream_fd(s), SHUT_WR);
}

static int settled(request_t *req)
{
    return req->tun_client_eof && req->tun_upstream_eof && !stream_write_pending(&req->cc->s) &&
           !upstream_conn_write_pending(req->ex->uc);
}

void tunnel_start(request_t *req)
{
    client_conn_t *cc = req->cc;
    proxy_worker_t *pw = req->pw;
    req->phase = REQ_TUNNEL;
    metrics_tunnel(pw->metrics, req->gen->metrics_route[req->route->index], +1);
    touch(req);
    client_conn_arm_deadline(cc, req->gen->cfg->server.tunnel_idle_timeout_ms);
    client_conn_tunnel(cc); /* what the client sent after its head goes first */
    if (req->phase == REQ_TUNNEL && !upstream_conn_write_pending(req->ex->uc))
        client_conn_resume(cc);
}

void tunnel_client_data(request_t *req, const char *data, size_t len)
{
    touch(req);
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int rc = upstream_conn_write(req->ex->uc, &b, 1);
    if (rc < 0)
        tunnel_end(req, END_UPSTREAM_RESET);
    else if (rc == 1)
        client_conn_pause(req->cc); /* until the upstream drains */
}

void tunnel_client_eof(request_t *req, ssize_t status)
{
    if (status != UV_EOF) {
        tunnel_end(req, END_CLIENT_CLOSED);
        return;
    }
    touch(req);
    req->tun_client_eof = 1;
    client_conn_pause(req->cc);
    shut_write(upstream_conn_socket(req->ex->uc), &req->tun_shut_upstream);
    if (settled(req))
        tunnel_end(req, END_OK);
}

void tunnel_client_drained(request_t *req)
{
    if (req->tun_shut_client)
        shut_write(&req->cc->s, &req->tun_shut_client);
    if (!req->tun_upstream_eof)
        upstream_conn_resume(req->ex->uc);
    if (settled(req))
        tunnel_end(req, END_OK);
}

void tunnel_upstream_data(request_t *req, const char *data, size_t len)
{
    touch(req);
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int rc = client_conn_write(req->cc, &b, 1);
    if (rc < 0)
        tunnel_end(req, END_CLIENT_CLOSED);
    else if (rc == 1)
        upstream_conn_pause(req->ex->uc); /* until the client drains */
}

void tunnel_upstream_eof(request_t *req, int status)
{
    if (status != UV_EOF) {
        tunnel_end(req, END_UPSTREAM_RESET);
        return;
    }
    touch(req);
    req->tun_upstream_eof = 1;
    upstream_conn_pause(req->ex->uc);
    shut_write(&req->cc->s, &req->tun_shut_client);
    if (settled(req))
        tunnel_end(req, END_OK);
}

void tunnel_upstream_drained(request_t *req, int status)
{
    if (status < 0) {
        tunnel_end(req, END_UPSTREAM_RESET);
        return;
    }
    if (req->tun_shut_upstream)
        shut_write(upstream_conn_socket(req->ex->uc), &req->tun_shut_upstream);
    if (!req->tun_client_eof)
        client_conn_resume(req->cc);
    if (settled(req))
        tunnel_end(req, END_OK);
}

void tunnel_timeout(request_t *req)
{
    uint64_t idle = req->gen->cfg->server.tunnel_idle_timeout_ms;
    uint64_t quiet = uv_now(req->pw->loop) - req->tun_last_ms;
    if (quiet >= idle) {
        tunnel_end(req, END_TUNNEL_IDLE);
        return;
    }
    client_conn_arm_deadline(req->cc, idle - quiet);
}

void tunnel_end(request_t *req, end_reason_t why)
{
    proxy_worker_t *pw = req->pw;
    metrics_tunnel(pw->metrics, req->gen->metrics_route[req->route->index], -1);
    req->phase = REQ_DONE;
    req->end = why;
    exchange_end(pw, req->ex, 0, false, false);
    request_log(req);
    request_release(req);
    client_conn_abort(req->cc);
}
